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
    let www = TempDir::new("www");
    std::fs::write(www.path().join("hello.txt"), "hello from the app\n").unwrap();
    let port = testkit::free_port();
    let bin = env!("CARGO_BIN_EXE_sidecar");
    let _web = SidecarBuilder::new(bin, "pyweb", registry.path())
        .app_port(port)
        .command(&[
            "python3",
            "-m",
            "http.server",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--directory",
            &www.path().display().to_string(),
        ])
        .spawn()
        .await
        .unwrap();
    let client = SidecarBuilder::new(bin, "pyclient", registry.path())
        .resources(components.path())
        .spawn()
        .await
        .unwrap();
    testkit::wait_until(
        "the app behind the target sidecar",
        std::time::Duration::from_secs(20),
        || async {
            let r = reqwest::get(format!(
                "{}/v1.0/invoke/pyweb/method/hello.txt",
                client.http_url()
            ))
            .await
            .ok()?;
            (r.status() == 200).then_some(())
        },
    )
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
