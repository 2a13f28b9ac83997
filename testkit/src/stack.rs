//! The whole system for end-to-end tests: backend and frontend, each started by its own
//! `sidecar run`, on free ports, with one kind of store, polled until healthy.

use std::path::PathBuf;
use std::time::Duration;

use crate::process::{TempDir, free_port, wait_until};
use crate::sidecar::{SidecarBuilder, SidecarProcess};
use crate::stores::{StoreFixture, StoreKind};

/// A workspace binary next to the running test (`target/<profile>/<name>`).
pub fn workspace_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe.parent().and_then(|d| d.parent()).expect("target dir");
    let bin = dir.join(name);
    assert!(
        bin.exists(),
        "{} is missing: build the workspace first (cargo build --workspace, or scripts/test)",
        bin.display()
    );
    bin
}

pub struct StackBuilder {
    store: StoreKind,
    backend_env: Vec<(String, String)>,
    frontend_env: Vec<(String, String)>,
    unix_sockets: bool,
}

pub struct Stack {
    pub frontend_url: String,
    pub backend_url: String,
    pub backend_sidecar: SidecarProcess,
    pub frontend_sidecar: SidecarProcess,
    pub store: StoreFixture,
    _registry: TempDir,
}

impl Stack {
    pub fn builder(store: StoreKind) -> StackBuilder {
        StackBuilder {
            store,
            backend_env: Vec::new(),
            frontend_env: Vec::new(),
            unix_sockets: false,
        }
    }
}

impl StackBuilder {
    /// Environment for the backend (e.g. CONSISTENCY, HOTEL_CATALOGUE).
    pub fn backend_env(mut self, k: &str, v: &str) -> Self {
        self.backend_env.push((k.into(), v.into()));
        self
    }

    /// Environment for the frontend (e.g. REQUEST_TIMEOUT_MS).
    pub fn frontend_env(mut self, k: &str, v: &str) -> Self {
        self.frontend_env.push((k.into(), v.into()));
        self
    }

    /// Each app reaches its sidecar's API on Unix domain sockets (`--unix-domain-socket`,
    /// in the stack's registry folder).
    pub fn unix_sockets(mut self) -> Self {
        self.unix_sockets = true;
        self
    }

    pub async fn spawn(self) -> anyhow::Result<Stack> {
        let store = StoreFixture::start(self.store).await?;
        let registry = TempDir::new("registry");
        // `sidecar run` of one service (app id = binary name) with its environment; and the
        // service's port.
        let launch = async |app: &str, env: &[(String, String)]| {
            let port = free_port();
            let mut sidecar = SidecarBuilder::new(workspace_bin("sidecar"), app, registry.path())
                .resources(store.components.path())
                .app_port(port);
            for (k, v) in env {
                sidecar = sidecar.env(k, v);
            }
            if self.unix_sockets {
                sidecar = sidecar.unix_sockets(registry.path());
            }
            let bin = workspace_bin(app).display().to_string();
            sidecar
                .command(&[&bin, "--workers", "1", "--log-level", "warning"])
                .spawn()
                .await
                .map(|s| (s, port))
        };
        let (backend_sidecar, backend_port) = launch("backend", &self.backend_env).await?;
        let (frontend_sidecar, frontend_port) = launch("frontend", &self.frontend_env).await?;
        for sidecar in [&backend_sidecar, &frontend_sidecar] {
            let client = sidecar.http_client();
            let url = format!("{}/v1.0/healthz", sidecar.http_url());
            wait_until(&url, Duration::from_secs(30), || {
                let req = client.get(&url).send();
                async move { req.await.ok().filter(|r| r.status() == 204).map(|_| ()) }
            })
            .await?;
        }
        Ok(Stack {
            frontend_url: format!("http://127.0.0.1:{frontend_port}"),
            backend_url: format!("http://127.0.0.1:{backend_port}"),
            backend_sidecar,
            frontend_sidecar,
            store,
            _registry: registry,
        })
    }
}
