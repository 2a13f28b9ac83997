//! The sidecar's gRPC API on state and locks, in process over in-memory stores: the first
//! byte picks the method, the rest is decoded as its protobuf request (as tonic would) and
//! handed to the service. Any request gets an answer or an error status, never a panic.
#![no_main]

use std::sync::OnceLock;

use dapr::dapr::proto::runtime::v1::dapr_server::Dapr as _;
use dapr::dapr::proto::runtime::v1::{
    DeleteBulkStateRequest, ExecuteStateTransactionRequest, GetBulkStateRequest, SaveStateRequest,
    TryLockRequest, UnlockRequest,
};
use libfuzzer_sys::fuzz_target;
use prost::Message as _;
use sidecar::transport::grpc::GrpcApi;
use tonic::Request;

mod harness;

fuzz_target!(|data: &[u8]| {
    static HARNESS: OnceLock<harness::Harness> = OnceLock::new();
    let h = HARNESS.get_or_init(harness::Harness::start);
    let Some((&pick, bytes)) = data.split_first() else {
        return;
    };
    let api = GrpcApi::new(h.api.clone());
    h.runtime.block_on(async {
        let _ = match pick % 6 {
            0 => match SaveStateRequest::decode(bytes) {
                Ok(r) => api.save_state(Request::new(r)).await.map(|_| ()),
                Err(_) => Ok(()),
            },
            1 => match ExecuteStateTransactionRequest::decode(bytes) {
                Ok(r) => api
                    .execute_state_transaction(Request::new(r))
                    .await
                    .map(|_| ()),
                Err(_) => Ok(()),
            },
            2 => match GetBulkStateRequest::decode(bytes) {
                Ok(r) => api.get_bulk_state(Request::new(r)).await.map(|_| ()),
                Err(_) => Ok(()),
            },
            3 => match DeleteBulkStateRequest::decode(bytes) {
                Ok(r) => api.delete_bulk_state(Request::new(r)).await.map(|_| ()),
                Err(_) => Ok(()),
            },
            4 => match TryLockRequest::decode(bytes) {
                Ok(r) => api.try_lock_alpha1(Request::new(r)).await.map(|_| ()),
                Err(_) => Ok(()),
            },
            _ => match UnlockRequest::decode(bytes) {
                Ok(r) => api.unlock_alpha1(Request::new(r)).await.map(|_| ()),
                Err(_) => Ok(()),
            },
        };
    });
});
