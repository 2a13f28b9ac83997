//! The two faces of the Dapr API: HTTP (`http`) and gRPC (`grpc`), plus the internal
//! listener (`internal`) that peer sidecars call to reach this sidecar's app.

pub mod grpc;
mod grpc_unimplemented;
pub mod http;
pub mod internal;
