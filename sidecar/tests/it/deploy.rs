//! The deployment files, checked offline (no cluster, no Docker engine here): every
//! Kubernetes object of `deploy/kubernetes` against the Kubernetes schemas in strict mode
//! (`kubernetes-validate`, which `scripts/test` installs in `.venv`); the Dapr objects of
//! both deployments read by this sidecar's own loader, as a sidecar would read them; the
//! compose file against the Compose Specification's schema (`check-jsonschema` with the
//! schema it carries, also in `.venv`) and its wiring (every sidecar in the namespace of
//! the service it serves, with the flags the Dapr files expect).

use std::path::{Path, PathBuf};

use sidecar::resources::{self, NameResolution};

fn deploy(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy")
        .join(path)
}

#[test]
fn kubernetes_objects_match_the_kubernetes_schemas() {
    let tool = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/kubernetes-validate");
    assert!(
        tool.exists(),
        "{} is missing: scripts/test installs it",
        tool.display()
    );
    let files: Vec<PathBuf> = [
        "redis.yaml",
        "backend.yaml",
        "frontend.yaml",
        "notifier.yaml",
    ]
    .iter()
    .map(|f| deploy(&format!("kubernetes/{f}")))
    .collect();
    let out = std::process::Command::new(&tool)
        .args(["--strict", "--kubernetes-version", "1.33"])
        .args(&files)
        .output()
        .unwrap();
    let report =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{report}");
    // Seven objects, each checked (an object of a kind without a schema is only a warning).
    assert_eq!(
        report.matches(" passed for resource ").count(),
        7,
        "{report}"
    );
}

/// `check-jsonschema` with its own copy of the Compose Specification's schema on `file`:
/// whether it passed, and its report.
fn check_compose(file: &Path) -> (bool, String) {
    let tool = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/check-jsonschema");
    assert!(
        tool.exists(),
        "{} is missing: scripts/test installs it",
        tool.display()
    );
    let out = std::process::Command::new(&tool)
        .args(["--builtin-schema", "vendor.compose-spec"])
        .arg(file)
        .output()
        .unwrap();
    let report =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), report)
}

#[test]
fn the_compose_file_matches_the_compose_specification() {
    let file = deploy("compose/compose.yaml");
    let (passed, report) = check_compose(&file);
    assert!(passed, "{report}");
    // The same file with one misspelt key fails: the schema is strict, not a formality.
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.contains("\n    image: "));
    let dir = testkit::TempDir::new("compose");
    let bad = dir.path().join("compose.yaml");
    std::fs::write(&bad, text.replacen("\n    image: ", "\n    imagee: ", 1)).unwrap();
    let (passed, report) = check_compose(&bad);
    assert!(
        !passed && report.contains("'imagee' was unexpected"),
        "{report}"
    );
}

#[test]
fn the_dapr_objects_read_as_a_sidecar_reads_them() {
    for dir in ["kubernetes", "compose/dapr/components"] {
        each_app_loads_its_components(dir);
    }
    let k8s = resources::load_configuration(&deploy("kubernetes/configuration.yaml")).unwrap();
    assert_eq!(k8s.sampling_rate, 0.0);
    assert!(!k8s.metrics_enabled);
    let compose = resources::load_configuration(&deploy("compose/dapr/config.yaml")).unwrap();
    assert!(!compose.metrics_enabled);
    assert_eq!(
        compose.name_resolution,
        NameResolution::Dns {
            cluster_domain: "cluster.local".into(),
            template: Some("{{.ID}}".into()),
        }
    );
}

/// In `dir`, what each app's sidecar loads: the backend its state store (with the outbox
/// that announces bookings on a pub/sub), lock and pub/sub; the notifier the pub/sub
/// alone; the frontend nothing. Everything on the one Redis.
fn each_app_loads_its_components(dir: &str) {
    let kinds = |app: &str| {
        let specs = resources::load_components(&[deploy(dir)], app).unwrap();
        let mut kinds: Vec<(String, String)> = specs
            .iter()
            .map(|s| (s.name.clone(), s.kind.clone()))
            .collect();
        kinds.sort_unstable();
        (specs, kinds)
    };
    let (backend, backend_kinds) = kinds("backend");
    assert_eq!(
        backend_kinds,
        [
            ("lockstore".to_string(), "lock.redis".to_string()),
            ("pubsub".into(), "pubsub.redis".into()),
            ("statestore".into(), "state.redis".into())
        ],
        "{dir}"
    );
    let state = backend.iter().find(|s| s.name == "statestore").unwrap();
    assert_eq!(
        (
            state.metadata["outboxpublishpubsub"].as_str(),
            state.metadata["outboxpublishtopic"].as_str()
        ),
        ("pubsub", "bookings"),
        "{dir}"
    );
    assert_eq!(
        kinds("notifier").1,
        [("pubsub".to_string(), "pubsub.redis".to_string())]
    );
    assert!(kinds("frontend").0.is_empty(), "the frontend uses none");
    assert!(
        backend
            .iter()
            .all(|s| s.metadata["redishost"] == "redis:6379")
    );
}

#[test]
fn each_compose_sidecar_serves_its_service_from_inside_its_namespace() {
    let text = std::fs::read_to_string(deploy("compose/compose.yaml")).unwrap();
    let compose: serde_json::Value = serde_saphyr::from_str(&text).unwrap();
    let services = compose["services"].as_object().unwrap();
    for app in ["backend", "frontend", "notifier"] {
        let sidecar = &services[&format!("{app}-dapr")];
        assert_eq!(sidecar["network_mode"], format!("service:{app}"));
        let flags: Vec<&str> = sidecar["command"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f.as_str().unwrap())
            .collect();
        for flag in [
            format!("--app-id={app}"),
            "--dapr-internal-grpc-port=50002".into(),
            "--config=/dapr/config.yaml".into(),
            "--registry-dir=/registry/peers".into(),
        ] {
            assert!(flags.contains(&flag.as_str()), "{app}-dapr lacks {flag}");
        }
        let env = &services[app]["environment"];
        assert_eq!(env["DAPR_HTTP_PORT"], "3500", "{app} reaches its sidecar");
    }
}
