//! mTLS between sidecars: calls go through when both certificates chain to the trust
//! bundle; the app is told the caller id the caller's certificate gives, not the one a
//! header claims; a sidecar with a certificate from another CA, one without mTLS, a client
//! without a certificate and plain HTTP are all refused before the app hears of them.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::{Value, json};
use testkit::{ComponentsDir, Pki, SidecarBuilder, SidecarProcess, TempDir};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

const BIN: &str = env!("CARGO_BIN_EXE_sidecar");

struct Bed {
    registry: TempDir,
    components: ComponentsDir,
}

impl Bed {
    fn new() -> Bed {
        Bed {
            registry: TempDir::new("registry"),
            components: ComponentsDir::memory(),
        }
    }

    fn sidecar(&self, app_id: &str) -> SidecarBuilder {
        SidecarBuilder::new(BIN, app_id, self.registry.path()).resources(self.components.path())
    }
}

/// POSTs `body` to `target`'s `/who` through `caller`'s HTTP API: status and JSON answer.
async fn invoke(caller: &SidecarProcess, target: &str, body: &Value) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(format!(
            "{}/v1.0/invoke/{target}/method/who",
            caller.http_url()
        ))
        .header("dapr-caller-app-id", "spoofed")
        .json(body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// A TLS client of our own on a sidecar's internal port: with `identity`'s certificate (or
/// none), trusting `ca`, expecting the server to be `server_name`. Sends one request with
/// `dapr-caller-app-id: frontend` and returns the answer's text, or why it failed.
async fn raw_call(
    port: u16,
    identity: Option<(&Path, &Path)>,
    ca: &Path,
    server_name: &str,
) -> Result<String, String> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let config = match identity {
        Some((cert, key)) => builder
            .with_client_auth_cert(
                CertificateDer::pem_file_iter(cert)
                    .unwrap()
                    .map(Result::unwrap)
                    .collect(),
                PrivateKeyDer::from_pem_file(key).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| e.to_string())?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let name = ServerName::try_from(server_name.to_string()).unwrap();
    let mut tls = connector
        .connect(name, tcp)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let body = r#"{"raw":true}"#;
    let request = format!(
        "POST /who HTTP/1.1\r\nhost: peer\r\ndapr-caller-app-id: frontend\r\n\
         content-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    // Under TLS 1.3 a refused client certificate shows only when the server's alert
    // arrives, on the first write or read after the handshake.
    tls.write_all(request.as_bytes())
        .await
        .map_err(|e| format!("write: {e}"))?;
    let mut answer = String::new();
    tls.read_to_string(&mut answer)
        .await
        .map_err(|e| format!("read: {e}"))?;
    if answer.is_empty() {
        return Err("no answer".into());
    }
    Ok(answer)
}

/// The JSON body of an HTTP/1.1 answer's text.
fn body_of(answer: &str) -> Value {
    let (_, body) = answer.split_once("\r\n\r\n").expect("an HTTP answer");
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {answer}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_app_is_told_the_caller_its_certificate_names() {
    let pki = Pki::new(BIN.as_ref(), &["frontend", "backend", "mallory"]).unwrap();
    let bed = Bed::new();
    let backend = bed
        .sidecar("backend")
        .mtls(&pki)
        .app_port(testkit::start_echo_app().await)
        .spawn()
        .await
        .unwrap();
    let frontend = bed.sidecar("frontend").mtls(&pki).spawn().await.unwrap();

    let (status, seen) = invoke(&frontend, "backend", &json!({"n": 1})).await;
    assert_eq!(status, 200, "{seen}");
    assert_eq!(seen["headers"]["dapr-caller-app-id"], "frontend", "{seen}");
    assert_eq!(seen["body"], r#"{"n":1}"#);
    assert!(
        seen["headers"].get("dapr-internal-secret").is_none(),
        "no secret crosses under mTLS: {seen}"
    );

    // A caller with a certificate of this CA, writing another app's id in the header.
    let answer = raw_call(
        backend.internal_port,
        Some((&pki.cert("mallory"), &pki.key("mallory"))),
        &pki.ca(),
        "backend",
    )
    .await
    .unwrap();
    let seen = body_of(&answer);
    assert_eq!(seen["headers"]["dapr-caller-app-id"], "mallory", "{seen}");
    assert!(seen["headers"].get("dapr-internal-secret").is_none());

    // The backend's certificate names the backend, and no other app.
    let err = raw_call(
        backend.internal_port,
        Some((&pki.cert("mallory"), &pki.key("mallory"))),
        &pki.ca(),
        "frontend",
    )
    .await
    .unwrap_err();
    assert!(err.contains("not valid for name \"frontend\""), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_without_a_certificate_of_the_trust_bundle_are_refused() {
    let pki = Pki::new(BIN.as_ref(), &["frontend", "backend"]).unwrap();
    let other = Pki::new(BIN.as_ref(), &["intruder"]).unwrap();
    let bed = Bed::new();
    let (app_port, heard) = testkit::start_collector().await;
    let backend = bed
        .sidecar("backend")
        .mtls(&pki)
        .app_port(app_port)
        .spawn()
        .await
        .unwrap();

    // A sidecar whose certificate and trust bundle are another CA's.
    let intruder = bed.sidecar("intruder").mtls(&other).spawn().await.unwrap();
    let (status, answer) = invoke(&intruder, "backend", &json!({"from": "intruder"})).await;
    assert_eq!(status, 500, "{answer}");
    assert_eq!(answer["errorCode"], "ERR_DIRECT_INVOKE", "{answer}");
    assert!(
        answer["message"].as_str().unwrap().contains("certificate"),
        "the reason is named: {answer}"
    );
    // A sidecar without mTLS: it speaks plain HTTP to a port that speaks only TLS.
    let plain = bed.sidecar("plain").spawn().await.unwrap();
    let (status, answer) = invoke(&plain, "backend", &json!({"from": "plain"})).await;
    assert_eq!(status, 500, "{answer}");

    // The other CA's certificate, even from a client that trusts the backend's CA.
    let ca = pki.ca();
    let foreign = Some((other.cert("intruder"), other.key("intruder")));
    let foreign = foreign.as_ref().map(|(c, k)| (c.as_path(), k.as_path()));
    let err = raw_call(backend.internal_port, foreign, &ca, "backend")
        .await
        .unwrap_err();
    assert!(err.contains("UnknownCA"), "{err}");
    // No certificate at all.
    let err = raw_call(backend.internal_port, None, &ca, "backend")
        .await
        .unwrap_err();
    assert!(err.contains("CertificateRequired"), "{err}");
    // Plain HTTP, with the registry's own secret: TLS or nothing.
    let secret = std::fs::read_to_string(bed.registry.path().join(".secret")).unwrap_or_default();
    let plain_http = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{}/who", backend.internal_port))
        .header("dapr-internal-secret", secret.trim())
        .json(&json!({"from": "plain http"}))
        .send()
        .await;
    assert!(plain_http.is_err(), "{plain_http:?}");

    // The same path with a certificate of the bundle goes through: the refusals above
    // were the certificates', not a broken set-up.
    let frontend = bed.sidecar("frontend").mtls(&pki).spawn().await.unwrap();
    let (status, answer) = invoke(&frontend, "backend", &json!({"from": "frontend"})).await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(heard.all(), [json!({"from": "frontend"})]);
}
