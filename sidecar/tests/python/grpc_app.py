"""A gRPC app written against the official Dapr Python SDK (`dapr.ext.grpc`), started by
`sidecar run --app-protocol grpc` with APP_PORT set: method `echo` answers with what it
received, as JSON. Any other method is unknown to the SDK, which says UNIMPLEMENTED."""

import json
import os

from dapr.ext.grpc import App, InvokeMethodRequest, InvokeMethodResponse

app = App()


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
