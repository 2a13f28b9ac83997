//! The transports of the Dapr API: HTTP (`http`) and gRPC (`grpc`) only decode a request
//! into the core's typed operation (`crate::api`) and encode its answer or error; the
//! internal listener (`internal`) is where peer sidecars deliver invocations for this
//! sidecar's app.

pub mod grpc;
mod grpc_unimplemented;
pub mod http;
pub mod internal;
pub mod trailers;

/// Whether a warning that can come in floods (refused peers, failed handshakes) is due:
/// at most one a second for each `last`, which holds the second of the last one.
pub(crate) fn once_a_second(last: &std::sync::atomic::AtomicU64) -> bool {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    last.swap(now, std::sync::atomic::Ordering::Relaxed) != now
}
