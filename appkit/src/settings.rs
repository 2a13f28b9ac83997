//! Settings read from the environment the way `dapr run` (and Dapr on Kubernetes) passes
//! them, with Dapr's defaults, plus this project's store and app names.

use std::path::PathBuf;

/// Where the sidecar is and what to call things.
#[derive(Debug, Clone)]
pub struct DaprSettings {
    pub http_port: u16,
    /// The HTTP API's Unix domain socket (`DAPR_HTTP_ENDPOINT=unix:///path`), if any.
    pub http_socket: Option<PathBuf>,
    pub grpc_endpoint: String,
    /// The gRPC API's Unix domain socket (`DAPR_GRPC_ENDPOINT=unix:///path`), if any.
    pub grpc_socket: Option<PathBuf>,
    /// Sent to the sidecar on every call when set (`DAPR_API_TOKEN`).
    pub api_token: Option<String>,
    /// Expected from the sidecar on every call to the app when set (`APP_API_TOKEN`).
    pub app_token: Option<String>,
    pub statestore: String,
    pub lockstore: String,
    pub backend_app_id: String,
    /// The API the app's state and lock calls use; the app's own setting
    /// (`DAPR_API_PROTOCOL`), not read here.
    pub api_protocol: ApiProtocol,
}

/// Which of the sidecar's two APIs an app calls.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ApiProtocol {
    Grpc,
    #[default]
    Http,
}

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

impl DaprSettings {
    pub fn from_env() -> Self {
        let host = var("DAPR_RUNTIME_HOST").unwrap_or_else(|| "127.0.0.1".into());
        let grpc_port = var("DAPR_GRPC_PORT")
            .and_then(|p| p.parse::<u16>().ok())
            .unwrap_or(50001);
        let grpc_endpoint = var("DAPR_GRPC_ENDPOINT").map_or_else(
            || format!("http://{host}:{grpc_port}"),
            |e| {
                if e.contains("://") {
                    e
                } else {
                    format!("http://{e}")
                }
            },
        );
        DaprSettings {
            http_port: var("DAPR_HTTP_PORT")
                .and_then(|p| p.parse().ok())
                .unwrap_or(3500),
            http_socket: var("DAPR_HTTP_ENDPOINT").and_then(|e| unix_path(&e)),
            grpc_socket: var("DAPR_GRPC_ENDPOINT").and_then(|e| unix_path(&e)),
            grpc_endpoint,
            api_token: var("DAPR_API_TOKEN"),
            app_token: var("APP_API_TOKEN"),
            statestore: var("STATESTORE_NAME").unwrap_or_else(|| "statestore".into()),
            lockstore: var("LOCKSTORE_NAME").unwrap_or_else(|| "lockstore".into()),
            backend_app_id: var("BACKEND_APP_ID").unwrap_or_else(|| "backend".into()),
            api_protocol: ApiProtocol::default(),
        }
    }
}

/// The path of a `unix:///path` (or `unix:path`) endpoint.
fn unix_path(endpoint: &str) -> Option<PathBuf> {
    let path = endpoint
        .strip_prefix("unix://")
        .or_else(|| endpoint.strip_prefix("unix:"))?;
    (!path.is_empty()).then(|| PathBuf::from(path))
}

/// `APP_PORT`, or the service's default.
pub fn app_port(default: u16) -> u16 {
    var("APP_PORT")
        .and_then(|p| p.parse().ok())
        .unwrap_or(default)
}

#[cfg(test)]
mod tests {
    use super::unix_path;

    #[test]
    fn unix_endpoints_name_their_socket() {
        let path = |e| unix_path(e).map(|p| p.display().to_string());
        assert_eq!(path("unix:///run/d.sock").as_deref(), Some("/run/d.sock"));
        assert_eq!(path("unix:/run/d.sock").as_deref(), Some("/run/d.sock"));
        assert_eq!(path("unix:d.sock").as_deref(), Some("d.sock"));
        assert_eq!(path("http://127.0.0.1:50001"), None);
        assert_eq!(path("unix://"), None);
    }
}
