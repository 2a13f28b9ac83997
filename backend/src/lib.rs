//! The backend service: hotel catalogue, booking rules, and the HTTP API the frontend
//! reaches through Dapr service invocation. State and locks go through the Dapr sidecar.

pub mod booking;
pub mod catalogue;
pub mod ledger;
pub mod routes;
pub mod store;
