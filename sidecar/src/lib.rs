//! A Dapr-API-compatible sidecar: the HTTP and gRPC APIs of state, locks, service
//! invocation, health and metadata, over in-memory, SQLite and Redis components; peers
//! found through a local folder, mDNS or DNS; and `sidecar run`, a stand-in for `dapr run`.

pub mod api;
pub mod appcallback;
pub mod apphealth;
pub mod cache;
pub mod cli;
pub mod components;
pub mod config;
pub mod dump;
pub mod errors;
pub mod invoke;
pub mod launcher;
pub mod lock;
pub mod metrics;
pub mod mint;
pub mod mtls;
pub mod names;
pub mod pubsub;
pub mod registry;
pub mod reset;
pub mod resources;
pub mod server;
pub mod state;
pub mod trace;
pub mod transport;
