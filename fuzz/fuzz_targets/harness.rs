//! One in-process sidecar for a fuzz run: in-memory state and lock stores, its own
//! registry folder, ports bound on loopback and never used; built once per process.

use std::sync::Arc;

use sidecar::api::Api;
use sidecar::config::Config;
use sidecar::server::{Listeners, Sidecar, load_configuration};

pub struct Harness {
    pub runtime: tokio::runtime::Runtime,
    pub api: Arc<Api>,
    _sidecar: Sidecar,
}

impl Harness {
    pub fn start() -> Harness {
        let dir = std::env::temp_dir().join(format!("hotel-fuzz-{}", std::process::id()));
        let components = dir.join("components");
        std::fs::create_dir_all(&components).unwrap();
        for (name, kind) in [
            ("statestore", "state.in-memory"),
            ("lockstore", "lock.in-memory"),
        ] {
            std::fs::write(
                components.join(format!("{name}.yaml")),
                format!(
                    "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: {name}\nspec:\n  type: {kind}\n  version: v1\n  metadata: []\n"
                ),
            )
            .unwrap();
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let mut config = Config::for_app("fuzz");
        config.resources_path = vec![components];
        config.registry_dir = Some(dir.join("registry"));
        let sidecar = runtime.block_on(async {
            let configuration = load_configuration(&config).unwrap();
            let listeners = Listeners::bind(&config, false).await.unwrap();
            Sidecar::build(config, configuration, listeners)
                .await
                .unwrap()
        });
        Harness {
            api: sidecar.api.clone(),
            runtime,
            _sidecar: sidecar,
        }
    }
}
