//! What the two services share: the wire types of the booking API (`wire`), JSON errors
//! with the right status (`error`), the Dapr gRPC client the backend talks to its sidecar
//! with (`dapr`), settings read the way `dapr run` passes them (`settings`), the deadline
//! and idempotency key a request carries from hop to hop (`request`), and the command
//! line, logging and runtime every service starts with (`service`).

pub mod dapr;
pub mod error;
pub mod request;
pub mod service;
pub mod settings;
pub mod wire;
