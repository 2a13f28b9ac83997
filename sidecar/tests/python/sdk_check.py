"""Drives the official Dapr Python SDK against a running sidecar.

Run by tests/python_sdk.rs with DAPR_HTTP_PORT / DAPR_GRPC_PORT pointing at the sidecar and
TARGET_APP naming an app (behind another sidecar) that serves /hello.txt.
Exits non-zero, with the failing check printed, on any difference from Dapr's behaviour.
"""

import os
import sys

import grpc
from dapr.clients import DaprClient
from dapr.clients.exceptions import DaprGrpcError
from dapr.clients.grpc._request import TransactionalStateOperation, TransactionOperationType
from dapr.clients.grpc._response import UnlockResponseStatus
from dapr.clients.grpc._state import Concurrency, StateOptions

STORE = "statestore"
LOCKS = "lockstore"


def grpc_code(err):
    code = getattr(err, "code", None)
    return code() if callable(code) else code


def expect_error(code, fn, *args, **kwargs):
    try:
        fn(*args, **kwargs)
    except Exception as err:  # the SDK wraps grpc.RpcError in DaprGrpcError
        got = grpc_code(err)
        assert got == code, f"expected {code}, got {got}: {err}"
        return
    raise AssertionError(f"expected {code}, the call succeeded")


with DaprClient() as d:
    # State with ETags.
    d.save_state(STORE, "py-key", "v1")
    first = d.get_state(STORE, "py-key")
    assert first.data == b"v1", first.data
    assert first.etag, "GET returns an ETag"
    d.save_state(STORE, "py-key", "v2", etag=first.etag)
    second = d.get_state(STORE, "py-key")
    assert second.data == b"v2" and second.etag != first.etag
    expect_error(
        grpc.StatusCode.ABORTED,
        d.save_state,
        STORE,
        "py-key",
        "v3",
        etag=first.etag,
        options=StateOptions(concurrency=Concurrency.first_write),
    )

    # A transaction that fails writes nothing; one that succeeds writes everything.
    expect_error(
        grpc.StatusCode.INTERNAL,
        d.execute_state_transaction,
        store_name=STORE,
        operations=[
            TransactionalStateOperation(key="tx-a", data="a"),
            TransactionalStateOperation(key="py-key", data="x", etag=first.etag),
        ],
    )
    assert d.get_state(STORE, "tx-a").data == b"", "failed transaction wrote tx-a"
    d.execute_state_transaction(
        store_name=STORE,
        operations=[
            TransactionalStateOperation(key="tx-a", data="a"),
            TransactionalStateOperation(key="py-key", operation_type=TransactionOperationType.delete),
        ],
    )
    bulk = d.get_bulk_state(STORE, keys=["tx-a", "py-key"]).items
    assert [i.key for i in bulk] == ["tx-a", "py-key"]
    assert bulk[0].data == b"a" and bulk[1].data == b""

    # Locks.
    with d.try_lock(LOCKS, "hotel-7", "owner-a", expiry_in_seconds=30) as lock:
        assert lock.success, "first lock succeeds"
        other = d.try_lock(LOCKS, "hotel-7", "owner-b", expiry_in_seconds=30)
        assert not other.success, "held lock is refused to another owner"
        status = d.unlock(LOCKS, "hotel-7", "owner-b").status
        assert status == UnlockResponseStatus.lock_belongs_to_others, status
    # Leaving the with-block released it.
    assert d.unlock(LOCKS, "hotel-7", "owner-a").status == UnlockResponseStatus.lock_does_not_exist

    # Service invocation (HTTP, the SDK's default) through two sidecars.
    resp = d.invoke_method(os.environ["TARGET_APP"], "hello.txt", http_verb="GET")
    assert resp.text().strip() == "hello from the app", resp.text()

    # An illegal key: the SDK reads daprd's error details (ErrorInfo, BadRequest, ResourceInfo).
    try:
        d.get_state(STORE, "a||b")
        raise AssertionError("a key with || was accepted")
    except DaprGrpcError as err:
        details = err.status_details()
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, err.code()
        assert err.error_code() == "DAPR_STATE_ILLEGAL_KEY", err.json()
        violation = details.bad_request["field_violations"][0]
        assert violation["field"] == "a||b" and violation["description"] == err.details(), err.json()
        resource = details.resource_info
        assert (resource["resource_type"], resource["resource_name"]) == ("state", STORE), err.json()

    meta = d.get_metadata()
    names = {c.name for c in meta.registered_components}
    assert {STORE, LOCKS} <= names, names

print("python sdk: all checks passed")
sys.exit(0)
