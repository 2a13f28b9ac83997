"""A gRPC app written against the official Dapr Python SDK (`dapr.ext.grpc`), started by
`sidecar run --app-protocol grpc` with APP_PORT set: method `echo` answers with what it
received, as JSON. Any other method is unknown to the SDK, which says UNIMPLEMENTED.
It subscribes to topic `orders` of pub/sub `pubsub` (dead letters to `dead`, which it
subscribes to as well) and appends each event it is given to the file SEEN_FILE, one JSON
line each; an event whose data is "drop me" it answers DROP."""

import json
import os

from dapr.clients.grpc._response import TopicEventResponse
from dapr.ext.grpc import App, InvokeMethodRequest, InvokeMethodResponse

app = App()


def keep(topic, event):
    line = {
        "topic": topic,
        "id": event.EventID(),
        "type": event.EventType(),
        "source": event.Source(),
        "content_type": event.ContentType(),
        "data": event.Data().decode(),
    }
    with open(os.environ["SEEN_FILE"], "a") as f:
        f.write(json.dumps(line) + "\n")


@app.subscribe(pubsub_name="pubsub", topic="orders", dead_letter_topic="dead")
def orders(event):
    keep("orders", event)
    if event.Data() == b"drop me":
        return TopicEventResponse("drop")
    return TopicEventResponse("success")


@app.subscribe(pubsub_name="pubsub", topic="dead")
def dead(event):
    keep("dead", event)


@app.method(name="echo")
def echo(request: InvokeMethodRequest) -> InvokeMethodResponse:
    # The SDK gives the call's metadata as a dict of lists.
    caller = request.metadata.get("dapr-caller-app-id", [""])
    seen = {
        "body": request.data.decode(),
        "content_type": request.content_type,
        "caller": caller[0],
    }
    return InvokeMethodResponse(json.dumps(seen), "application/json")


app.run(int(os.environ["APP_PORT"]), listen_address="127.0.0.1")
