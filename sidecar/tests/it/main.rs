//! The sidecar's black-box tests, in one binary (one link, shared fixtures in `common`):
//! the real `sidecar` binary on free loopback ports, or a sidecar built in-process
//! (`in_process`), against every store kind, over HTTP and gRPC, and with the official
//! Python SDK and the Rust `dapr` crate as clients.

mod api;
mod apphealth;
mod bounds;
mod common;
mod dapr_crate;
mod deploy;
mod grpc_app;
mod hosts;
mod in_process;
mod invoke;
mod launcher;
mod lock;
mod mint;
mod mtls;
mod pubsub;
mod python_sdk;
mod sqlite_busy;
mod state;
mod streaming;
mod traces;
