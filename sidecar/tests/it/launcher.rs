//! `sidecar run` as `dapr run`: the app's environment, its exit status, signal forwarding,
//! and clear errors for broken component files.

use std::process::Command;
use std::time::Duration;

use testkit::{ComponentsDir, SidecarBuilder, TempDir};

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_sidecar")
}

#[test]
fn exits_with_the_apps_status() {
    let registry = TempDir::new("registry");
    let (status, _) = SidecarBuilder::new(bin(), "quitter", registry.path())
        .command(&["sh", "-c", "exit 3"])
        .run_to_end()
        .unwrap();
    assert_eq!(status.code(), Some(3));
}

#[test]
fn app_gets_dapr_run_environment_and_a_live_sidecar() {
    let registry = TempDir::new("registry");
    let script = r#"
set -e
test "$APP_ID" = envcheck
test "$APP_PORT" = 4321
test "$APP_PROTOCOL" = http
test -n "$DAPR_HTTP_PORT"
test -n "$DAPR_GRPC_PORT"
python3 -c "import os, urllib.request; r = urllib.request.urlopen('http://127.0.0.1:%s/v1.0/healthz/outbound' % os.environ['DAPR_HTTP_PORT']); assert r.status == 204"
"#;
    let (status, stderr) = SidecarBuilder::new(bin(), "envcheck", registry.path())
        .app_port(4321)
        .command(&["sh", "-c", script])
        .run_to_end()
        .unwrap();
    assert!(status.success(), "{stderr}");
}

#[test]
fn sigterm_is_forwarded_to_the_app() {
    let registry = TempDir::new("registry");
    let flag = registry.path().join("app-started");
    let script = format!(
        "trap 'exit 7' TERM; touch {}; while true; do sleep 0.05; done",
        flag.display()
    );
    let mut child = Command::new(bin())
        .args([
            "run",
            "--app-id",
            "sleeper",
            "--log-level",
            "warn",
            "--registry-dir",
        ])
        .arg(registry.path())
        .args(["--", "sh", "-c", &script])
        .spawn()
        .unwrap();
    for _ in 0..500 {
        if flag.exists() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(flag.exists(), "the app never started");
    appkit::process::send_signal(child.id(), appkit::process::Signal::Term).unwrap();
    let status = child.wait().unwrap();
    assert_eq!(
        status.code(),
        Some(7),
        "the app's own exit code after SIGTERM"
    );
    let left: Vec<_> = std::fs::read_dir(registry.path())
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
        .collect();
    assert!(left.is_empty(), "registration removed on shutdown");
}

/// Resource folders a sidecar must load or refuse: whether `sidecar run` succeeds, and
/// what its error names.
#[test]
fn resource_files_load_or_are_refused_by_name() {
    // A Redis state store (nothing listens at its address) with one more metadata field.
    let redis = |field: &str, value: &str| {
        format!(
            "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: s\nspec:\n  type: state.redis\n  version: v1\n  metadata:\n  - name: redisHost\n    value: 127.0.0.1:1\n  - name: {field}\n    value: \"{value}\"\n"
        )
    };
    // (file, its text, whether the sidecar starts, what its error names)
    let cases: [(&str, String, bool, &[&str]); 8] = [
        (
            "pubsub.yaml",
            "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: pubsub\nspec:\n  type: pubsub.kafka\n  version: v1\n  metadata: []\n".into(),
            false,
            &["pubsub.yaml", "pubsub.kafka"],
        ),
        (
            "broken.yaml",
            "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: s\nspec: [oops\n".into(),
            false,
            &["broken.yaml", "line"],
        ),
        // Values out of range are refused by file and field, never a panic.
        ("forever.yaml", redis("dialTimeout", "inf"), false, &["forever.yaml", "dialTimeout"]),
        ("huge.yaml", redis("readTimeout", "1e300s"), false, &["huge.yaml", "readTimeout"]),
        ("past-u64.yaml", redis("readTimeout", "99999999999999999999h"), false, &["past-u64.yaml", "readTimeout"]),
        ("long.yaml", redis("dialTimeout", "25h"), false, &["long.yaml", "dialTimeout", "24h"]),
        ("ttl.yaml", redis("ttlInSeconds", "9223372036854775807"), false, &["ttl.yaml", "ttlInSeconds"]),
        // Other kinds of resource are skipped.
        (
            "resiliency.yaml",
            "apiVersion: dapr.io/v1alpha1\nkind: Resiliency\nmetadata:\n  name: r\nspec:\n  policies: {}\n---\napiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: s\nspec:\n  type: state.in-memory\n  version: v1\n  metadata: []\n".into(),
            true,
            &[],
        ),
    ];
    for (file, text, starts, names) in cases {
        let registry = TempDir::new("registry");
        let dir = ComponentsDir::raw(&[(file, &text)]);
        let (status, stderr) = SidecarBuilder::new(bin(), "x", registry.path())
            .resources(dir.path())
            .command(&["true"])
            .run_to_end()
            .unwrap();
        assert_eq!(status.success(), starts, "{file}: {stderr}");
        assert!(!stderr.contains("panicked"), "{file}: {stderr}");
        for name in names {
            assert!(stderr.contains(name), "{file}: {name} not in {stderr}");
        }
    }
}

/// Two sidecars of one app id with the in-process lock would each grant the same lock:
/// the second one refuses to start, naming the component and the way out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_replica_with_a_process_local_lock_is_refused() {
    let registry = TempDir::new("registry");
    let components = ComponentsDir::memory();
    let _first = SidecarBuilder::new(bin(), "solo", registry.path())
        .resources(components.path())
        .spawn()
        .await
        .unwrap();
    let (status, stderr) = SidecarBuilder::new(bin(), "solo", registry.path())
        .resources(components.path())
        .command(&["true"])
        .run_to_end()
        .unwrap();
    assert!(!status.success(), "the second replica started: {stderr}");
    assert!(
        stderr.contains("lockstore") && stderr.contains("components/redis"),
        "{stderr}"
    );
    // Another app id beside it is no replica, and starts.
    let (status, stderr) = SidecarBuilder::new(bin(), "other", registry.path())
        .resources(components.path())
        .command(&["true"])
        .run_to_end()
        .unwrap();
    assert!(status.success(), "{stderr}");
}
