"""A client-only app that subscribes over streams with the official SDK's
`DaprClient.subscribe_with_handler` (gRPC SubscribeTopicEventsAlpha1): topic `orders` with dead letters
to `orders-dead`, and `orders-dead`. It answers by the event's data: "drop" DROP, "retry"
RETRY at its first offer and SUCCESS at the next, anything else SUCCESS; every offer is
written as a JSON line to $SEEN_FILE. It stops after $EXPECTED offers (or a minute) and
closes both streams."""

import json
import os
import sys
import threading

from dapr.clients import DaprClient
from dapr.clients.grpc._response import TopicEventResponse

SEEN_FILE = os.environ['SEEN_FILE']
EXPECTED = int(os.environ['EXPECTED'])


def main():
    lock = threading.Lock()
    enough = threading.Event()
    offers = [0]
    retried = set()
    seen = open(SEEN_FILE, 'a')

    def handle(message):
        data = message.data()
        if isinstance(data, bytes):
            data = data.decode()
        with lock:
            seen.write(
                json.dumps(
                    {
                        'topic': message.topic(),
                        'pubsub': message.pubsub_name(),
                        'id': message.id(),
                        'data': data,
                        'content_type': message.data_content_type(),
                    }
                )
                + '\n'
            )
            seen.flush()
            offers[0] += 1
            if offers[0] >= EXPECTED:
                enough.set()
            if data == 'drop':
                return TopicEventResponse('drop')
            if data == 'retry' and message.id() not in retried:
                retried.add(message.id())
                return TopicEventResponse('retry')
            return TopicEventResponse('success')

    with DaprClient() as client:
        # Each on its own thread, as the SDK runs a handler's stream.
        close_orders = client.subscribe_with_handler(
            pubsub_name='pubsub',
            topic='orders',
            handler_fn=handle,
            dead_letter_topic='orders-dead',
        )
        close_dead = client.subscribe_with_handler(
            pubsub_name='pubsub', topic='orders-dead', handler_fn=handle
        )
        print('subscribed', flush=True)
        finished = enough.wait(timeout=60)
        close_orders()
        close_dead()
    seen.close()
    print('done' if finished else 'too few offers', flush=True)
    return 0 if finished else 1


if __name__ == '__main__':
    sys.exit(main())
