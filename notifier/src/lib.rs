//! The notifier: a third Dapr app that subscribes to the backend's booking events and keeps
//! each one it hears, so that after any load (with faults) what was announced can be
//! checked against what was committed (`ledger --events`). `inbox` is what it keeps, on
//! disk; `routes` is how Dapr reaches it.

pub mod inbox;
pub mod routes;
