//! The official Dapr Python SDK (`pip install dapr`) against the sidecar: state with ETags,
//! transactions, locks, invocation and metadata. The interpreter is `$DAPR_SDK_PYTHON`, or
//! the workspace's `.venv/bin/python` that `scripts/test` prepares.

use std::path::PathBuf;
use std::process::Command;

use testkit::{ComponentsDir, SidecarBuilder, TempDir};

fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("DAPR_SDK_PYTHON") {
        return PathBuf::from(p);
    }
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../.venv/bin/python"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_python_sdk_works_against_the_sidecar() {
    let py = python();
    let has_sdk = Command::new(&py)
        .args(["-c", "import dapr.clients"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        has_sdk,
        "{} has no Dapr SDK: run scripts/test, or set DAPR_SDK_PYTHON",
        py.display()
    );

    let registry = TempDir::new("registry");
    let components = ComponentsDir::memory();
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_sidecar"));
    let (_web, _www) = testkit::spawn_static_app(bin, "pyweb", registry.path())
        .await
        .unwrap();
    let client = SidecarBuilder::new(bin, "pyclient", registry.path())
        .resources(components.path())
        .spawn()
        .await
        .unwrap();
    testkit::fetch_hello_through(&client, "pyweb")
        .await
        .unwrap();

    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/sdk_check.py");
    let out = tokio::process::Command::new(&py)
        .arg(script)
        .env("DAPR_HTTP_PORT", client.http_port.to_string())
        .env("DAPR_GRPC_PORT", client.grpc_port.to_string())
        .env("DAPR_HEALTH_TIMEOUT", "10")
        .env("TARGET_APP", "pyweb")
        .env_remove("DAPR_API_TOKEN")
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "python SDK checks failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("all checks passed"), "{stdout}");
}
