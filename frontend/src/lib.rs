//! The frontend service: the public booking API, validated here and carried out by the
//! backend through Dapr service invocation.

pub mod invoke;
pub mod routes;
