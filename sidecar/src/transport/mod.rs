//! The transports of the Dapr API: HTTP (`http`) and gRPC (`grpc`) only decode a request
//! into the core's typed operation (`crate::api`) and encode its answer or error; the
//! internal listener (`internal`) is where peer sidecars deliver invocations for this
//! sidecar's app.

pub mod grpc;
mod grpc_unimplemented;
pub mod http;
pub mod internal;
