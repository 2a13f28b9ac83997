//! What the workspace's crates share. For the two services: the wire types of the booking
//! API (`wire`), JSON errors with the right status (`error`), the fallback and health routes
//! and JSON body parsing both routers share (`http`), the Dapr client the backend talks
//! to its sidecar with, over HTTP or gRPC (`dapr`), the pooled HTTP/1.1 line to one origin
//! both apps reach their sidecar on and the sidecar its app (`origin`), settings read the way `dapr run` passes them
//! (`settings`), the deadline and idempotency key a request carries from hop to hop
//! (`request`), and their command line (`service`). For every binary and harness, the
//! sidecar's too: logging set-up (`logging`) and process plumbing: runtime, shutdown,
//! signals, children (`process`); the API token check every hop makes (`token`); and the
//! services' OpenAPI documents with their `/docs` page (`openapi`).

pub mod dapr;
pub mod error;
pub mod http;
pub mod logging;
pub mod openapi;
pub mod origin;
pub mod process;
pub mod request;
pub mod server;
pub mod service;
pub mod settings;
pub mod token;
pub mod wire;
