//! mTLS between sidecars: calls go through when both certificates chain to the trust
//! bundle; the app is told the caller id the caller's certificate gives, not the one a
//! header claims; a sidecar with a certificate from another CA, one without mTLS, a client
//! without a certificate or with one that names no app, and plain HTTP are all refused
//! before the app hears of them; a caller checks that the callee is the app it calls, and
//! sends it no secret.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

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
         dapr-caller-namespace: prod\r\ndapr-callee-app-id: elsewhere\r\n\
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
    assert_eq!(
        seen["headers"]["dapr-caller-namespace"], "default",
        "{seen}"
    );
    assert_eq!(seen["headers"]["dapr-callee-app-id"], "backend", "{seen}");

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
    // The same, trusting the backend's CA too: now the backend refuses its certificate.
    let both = format!(
        "{}{}",
        std::fs::read_to_string(pki.ca()).unwrap(),
        std::fs::read_to_string(other.ca()).unwrap()
    );
    let intruder = bed
        .sidecar("intruder2")
        .arg("--enable-mtls")
        .flag("--cert-chain-file", other.cert("intruder").display())
        .flag("--cert-key-file", other.key("intruder").display())
        .env("DAPR_TRUST_ANCHORS", &both)
        .spawn()
        .await;
    // Its certificate names "intruder": the sidecar refuses to start as "intruder2".
    assert!(intruder.is_err());
    let (dir, cert, key) = craft(
        &other,
        "intruder2",
        Some("spiffe://public/ns/default/intruder2"),
    );
    let intruder = bed
        .sidecar("intruder2")
        .arg("--enable-mtls")
        .flag("--cert-chain-file", cert.display())
        .flag("--cert-key-file", key.display())
        .env("DAPR_TRUST_ANCHORS", &both)
        .spawn()
        .await
        .unwrap();
    let (status, answer) = invoke(&intruder, "backend", &json!({"from": "intruder2"})).await;
    assert_eq!(status, 500, "{answer}");
    assert!(
        answer["message"].as_str().unwrap().contains("UnknownCA"),
        "the backend refused it: {answer}"
    );
    drop(dir);
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
    // A certificate of the bundle that names no app.
    let (dir, cert, key) = craft(&pki, "nobody", None);
    let err = raw_call(backend.internal_port, Some((&cert, &key)), &ca, "backend")
        .await
        .unwrap_err();
    assert!(!err.contains("HTTP/1.1"), "{err}");
    drop(dir);
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

/// A certificate signed by `pki`'s CA for DNS name `dns`, with `spiffe` as its URI SAN if
/// given: (folder, certificate file, key file).
fn craft(pki: &Pki, dns: &str, spiffe: Option<&str>) -> (TempDir, PathBuf, PathBuf) {
    use rcgen::{CertificateParams, ExtendedKeyUsagePurpose, Issuer, KeyPair, SanType};
    let ca_pem = std::fs::read_to_string(pki.ca()).unwrap();
    let ca_key = KeyPair::from_pem(&std::fs::read_to_string(pki.ca_key()).unwrap()).unwrap();
    let issuer = Issuer::from_ca_cert_pem(&ca_pem, &ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec![dns.to_string()]).unwrap();
    if let Some(uri) = spiffe {
        params
            .subject_alt_names
            .push(SanType::URI(uri.try_into().unwrap()));
    }
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let cert = params.signed_by(&key, &issuer).unwrap();
    let dir = TempDir::new("crafted");
    let (cert_file, key_file) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_file, cert.pem() + &ca_pem).unwrap();
    std::fs::write(&key_file, key.serialize_pem()).unwrap();
    (dir, cert_file, key_file)
}

/// A TLS server of the test's own with the given certificate, registered in the bed's
/// registry as app `backend`: it keeps the head of every request it gets and answers `{}`.
struct FakeCallee {
    heads: Arc<Mutex<Vec<String>>>,
    _task: tokio::task::JoinHandle<()>,
}

impl FakeCallee {
    async fn start(bed: &Bed, cert: &Path, key: &Path) -> FakeCallee {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                CertificateDer::pem_file_iter(cert)
                    .unwrap()
                    .map(Result::unwrap)
                    .collect(),
                PrivateKeyDer::from_pem_file(key).unwrap(),
            )
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let heads = Arc::new(Mutex::new(Vec::new()));
        let kept = heads.clone();
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, kept) = (acceptor.clone(), kept.clone());
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") && tls.read_exact(&mut byte).await.is_ok() {
                        head.push(byte[0]);
                    }
                    kept.lock()
                        .unwrap()
                        .push(String::from_utf8_lossy(&head).into_owned());
                    let answer = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
                                  content-length: 2\r\nconnection: close\r\n\r\n{}";
                    let _ = tls.write_all(answer.as_bytes()).await;
                    let _ = tls.shutdown().await;
                });
            }
        });
        // Registered as a live sidecar of `backend`: this test's process.
        let pid = std::process::id();
        let entry = json!({"appId": "backend", "pid": pid, "internalPort": port, "httpPort": 1, "grpcPort": 1});
        std::fs::write(
            bed.registry.path().join(format!("backend.{pid}.json")),
            entry.to_string(),
        )
        .unwrap();
        FakeCallee { heads, _task: task }
    }

    fn heads(&self) -> Vec<String> {
        self.heads.lock().unwrap().clone()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_sends_the_callee_no_secret_and_the_request_as_it_came() {
    let pki = Pki::new(BIN.as_ref(), &["frontend", "backend"]).unwrap();
    let bed = Bed::new();
    let frontend = bed.sidecar("frontend").mtls(&pki).spawn().await.unwrap();
    let callee = FakeCallee::start(&bed, &pki.cert("backend"), &pki.key("backend")).await;
    let (status, answer) = invoke(&frontend, "backend", &json!({"n": 2})).await;
    assert_eq!(status, 200, "{answer}");
    let heads = callee.heads();
    assert_eq!(heads.len(), 1, "{heads:?}");
    let head = heads[0].to_ascii_lowercase();
    assert!(head.starts_with("post /who http/1.1"), "{head}");
    assert!(head.contains("dapr-caller-app-id: frontend"), "{head}");
    assert!(!head.contains("dapr-internal-secret"), "{head}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_refuses_a_callee_whose_certificate_names_another_app() {
    let pki = Pki::new(BIN.as_ref(), &["frontend"]).unwrap();
    let bed = Bed::new();
    let frontend = bed.sidecar("frontend").mtls(&pki).spawn().await.unwrap();
    // The right DNS name, but the SPIFFE id of an app of that name in another namespace.
    let (_dir, cert, key) = craft(&pki, "backend", Some("spiffe://public/ns/other/backend"));
    let callee = FakeCallee::start(&bed, &cert, &key).await;
    let (status, answer) = invoke(&frontend, "backend", &json!({"n": 3})).await;
    assert_eq!(status, 500, "{answer}");
    let message = answer["message"].as_str().unwrap();
    assert!(
        message
            .contains("spiffe://public/ns/other/backend, not spiffe://public/ns/default/backend"),
        "{answer}"
    );
    assert!(callee.heads().is_empty(), "{:?}", callee.heads());
}
