//! Settings read from the environment the way `dapr run` (and Dapr on Kubernetes) passes
//! them, with Dapr's defaults, plus this project's store and app names.

/// Where the sidecar is and what to call things.
#[derive(Debug, Clone)]
pub struct DaprSettings {
    pub http_port: u16,
    pub grpc_endpoint: String,
    /// Sent to the sidecar on every call when set (`DAPR_API_TOKEN`).
    pub api_token: Option<String>,
    /// Expected from the sidecar on every call to the app when set (`APP_API_TOKEN`).
    pub app_token: Option<String>,
    pub statestore: String,
    pub lockstore: String,
    pub backend_app_id: String,
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
            grpc_endpoint,
            api_token: var("DAPR_API_TOKEN"),
            app_token: var("APP_API_TOKEN"),
            statestore: var("STATESTORE_NAME").unwrap_or_else(|| "statestore".into()),
            lockstore: var("LOCKSTORE_NAME").unwrap_or_else(|| "lockstore".into()),
            backend_app_id: var("BACKEND_APP_ID").unwrap_or_else(|| "backend".into()),
        }
    }
}

/// `APP_PORT`, or the service's default.
pub fn app_port(default: u16) -> u16 {
    var("APP_PORT")
        .and_then(|p| p.parse().ok())
        .unwrap_or(default)
}
