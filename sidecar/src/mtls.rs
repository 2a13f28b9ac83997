//! mTLS between sidecars (`--enable-mtls` or the Configuration's `spec.mtls.enabled`): the
//! internal port speaks only TLS 1.3, asks every caller for a certificate and checks it
//! against the trust bundle; a calling sidecar checks the callee's certificate the same way
//! and that it names the app id it meant to call, as a DNS name and as a SPIFFE id of this
//! sidecar's trust domain and namespace. Identities are Dapr's SPIFFE ids
//! (`spiffe://<trust-domain>/ns/<namespace>/<app-id>`); a peer whose certificate has none
//! is refused, and the caller id an app is told is the one in the verified certificate,
//! not a header the caller wrote.
//!
//! Files, as flags or environment: `--cert-chain-file` (`DAPR_CERT_CHAIN_FILE`),
//! `--cert-key-file` (`DAPR_CERT_KEY_FILE`), and the trust bundle as `--trust-anchors-file`
//! (`DAPR_TRUST_ANCHORS_FILE`) or, as daprd reads it, the PEM text in `DAPR_TRUST_ANCHORS`.
//! daprd gets its certificate from Sentry; this sidecar has none, so `sidecar mint` makes
//! the files for development and tests.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::server::TlsStream;

use crate::config::Config;

#[derive(Debug, thiserror::Error)]
pub enum MtlsError {
    #[error("mTLS is enabled but no {0} is given ({1})")]
    Missing(&'static str, &'static str),
    #[error("reading the {what} {name}")]
    Read {
        what: &'static str,
        name: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("no app id to check the peer's certificate against in {0}")]
    PeerName(String),
    #[error("the {0} {1} holds no certificate")]
    NoCertificate(&'static str, String),
    #[error(
        "the certificate in {file} is for {found}, not app id {app_id:?} (mint one with \
         `sidecar mint app --app-id {app_id}`)"
    )]
    NotOurs {
        file: String,
        found: String,
        app_id: String,
    },
    #[error("mTLS set-up")]
    Tls(#[from] rustls::Error),
    #[error("mTLS set-up")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
}

/// Who a certificate says its holder is: its SPIFFE id, taken apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub trust_domain: String,
    pub namespace: String,
    pub app_id: String,
}

impl Identity {
    /// The identity in a certificate's URI SAN `spiffe://<td>/ns/<ns>/<app-id>`, if it has one.
    pub fn of(cert: &CertificateDer<'_>) -> Option<Identity> {
        let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
        let san = parsed.subject_alternative_name().ok()??;
        san.value.general_names.iter().find_map(|name| match name {
            x509_parser::extensions::GeneralName::URI(uri) => Identity::parse(uri),
            _ => None,
        })
    }

    fn parse(uri: &str) -> Option<Identity> {
        let rest = uri.strip_prefix("spiffe://")?;
        let mut parts = rest.split('/');
        let (td, ns_word, ns, app) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        (ns_word == "ns" && parts.next().is_none() && ![td, ns, app].contains(&"")).then(|| {
            Identity {
                trust_domain: td.into(),
                namespace: ns.into(),
                app_id: app.into(),
            }
        })
    }
}

impl std::fmt::Display for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let id = crate::mint::spiffe_id(&self.trust_domain, &self.namespace, &self.app_id);
        f.write_str(&id)
    }
}

/// Where the trust bundle comes from.
#[derive(Debug, Clone)]
pub enum Anchors {
    File(PathBuf),
    /// PEM text, as daprd reads `DAPR_TRUST_ANCHORS`.
    Pem(String),
}

/// This sidecar's TLS set-up for both ends of the sidecar-to-sidecar hop.
pub struct Mtls {
    pub server: Arc<rustls::ServerConfig>,
    pub client: rustls::ClientConfig,
    pub identity: Identity,
}

impl std::fmt::Debug for Mtls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mtls")
            .field("identity", &self.identity)
            .finish_non_exhaustive()
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read_err(
    what: &'static str,
    name: &str,
    e: impl Into<Box<dyn std::error::Error + Send + Sync>>,
) -> MtlsError {
    MtlsError::Read {
        what,
        name: name.to_string(),
        source: e.into(),
    }
}

fn certificates(
    what: &'static str,
    name: &str,
    pem: &[u8],
) -> Result<Vec<CertificateDer<'static>>, MtlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| read_err(what, name, e))?;
    if certs.is_empty() {
        return Err(MtlsError::NoCertificate(what, name.to_string()));
    }
    Ok(certs)
}

fn read_file(what: &'static str, path: &Path) -> Result<Vec<u8>, MtlsError> {
    std::fs::read(path).map_err(|e| read_err(what, &path.display().to_string(), e))
}

impl Mtls {
    /// The set-up `config` asks for: none unless mTLS is enabled by flag or Configuration.
    pub fn from_config(config: &Config, enabled: bool) -> Result<Option<Mtls>, MtlsError> {
        if !(enabled || config.enable_mtls) {
            let given = config.cert_chain_file.is_some()
                || config.cert_key_file.is_some()
                || config.trust_anchors_file.is_some();
            if given {
                // Files given and mTLS off is a set-up that looks secure and is not.
                tracing::warn!(
                    "certificate files are given but mTLS is off: calls between sidecars go \
                     in plain text (turn it on with --enable-mtls or spec.mtls.enabled)"
                );
            }
            return Ok(None);
        }
        let cert = config.cert_chain_file.as_deref().ok_or(MtlsError::Missing(
            "certificate",
            "--cert-chain-file or DAPR_CERT_CHAIN_FILE",
        ))?;
        let key = config.cert_key_file.as_deref().ok_or(MtlsError::Missing(
            "private key",
            "--cert-key-file or DAPR_CERT_KEY_FILE",
        ))?;
        let anchors = match (&config.trust_anchors_file, &config.trust_anchors) {
            (Some(file), _) => Anchors::File(file.clone()),
            (None, Some(pem)) if !pem.trim().is_empty() => Anchors::Pem(pem.clone()),
            _ => {
                return Err(MtlsError::Missing(
                    "trust bundle",
                    "--trust-anchors-file, DAPR_TRUST_ANCHORS_FILE or DAPR_TRUST_ANCHORS",
                ));
            }
        };
        Mtls::load(cert, key, &anchors, &config.app_id).map(Some)
    }

    /// Loads the certificate chain, key and trust bundle; the certificate must name `app_id`.
    pub fn load(
        cert_file: &Path,
        key_file: &Path,
        anchors: &Anchors,
        app_id: &str,
    ) -> Result<Mtls, MtlsError> {
        let cert_name = cert_file.display().to_string();
        let chain = certificates(
            "certificate",
            &cert_name,
            &read_file("certificate", cert_file)?,
        )?;
        let key = PrivateKeyDer::from_pem_slice(&read_file("private key", key_file)?)
            .map_err(|e| read_err("private key", &key_file.display().to_string(), e))?;
        let roots = match anchors {
            Anchors::File(path) => {
                let name = path.display().to_string();
                certificates("trust bundle", &name, &read_file("trust bundle", path)?)?
            }
            Anchors::Pem(pem) => {
                certificates("trust bundle", "DAPR_TRUST_ANCHORS", pem.as_bytes())?
            }
        };
        let identity = Identity::of(&chain[0]).ok_or_else(|| MtlsError::NotOurs {
            file: cert_name.clone(),
            found: "no SPIFFE id".into(),
            app_id: app_id.into(),
        })?;
        if identity.app_id != app_id {
            return Err(MtlsError::NotOurs {
                file: cert_name,
                found: identity.to_string(),
                app_id: app_id.into(),
            });
        }
        let mut store = rustls::RootCertStore::empty();
        for root in roots {
            store.add(root)?;
        }
        let store = Arc::new(store);
        let verifier =
            rustls::server::WebPkiClientVerifier::builder_with_provider(store.clone(), provider())
                .build()?;
        let callee = SpiffeServerVerifier {
            chain: rustls::client::WebPkiServerVerifier::builder_with_provider(store, provider())
                .build()
                .map_err(|e| read_err("trust bundle", "for servers", e))?,
            trust_domain: identity.trust_domain.clone(),
            namespace: identity.namespace.clone(),
        };
        let server = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain.clone(), key.clone_key())?;
        let client = rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(callee))
            .with_client_auth_cert(chain, key)?;
        Ok(Mtls {
            server: Arc::new(server),
            client,
            identity,
        })
    }
}

/// The server name a peer's certificate must carry: the app id the call is for, which the
/// invoker writes as the user part of the peer's URI (`https://<app-id>@<address>/...`).
/// The connection pool keys on the whole authority, so a connection verified for one app
/// id never carries a call meant for another.
pub fn peer_server_name(uri: &http::Uri) -> Result<ServerName<'static>, MtlsError> {
    uri.authority()
        .and_then(|a| a.as_str().split_once('@'))
        .map(|(user, _)| user)
        .and_then(|app_id| ServerName::try_from(app_id.to_string()).ok())
        .ok_or_else(|| MtlsError::PeerName(uri.to_string()))
}

/// Checks a callee's certificate: the chain to the trust bundle and the app id as a DNS
/// name (webpki), then its SPIFFE id: the same app id, in this sidecar's trust domain and
/// namespace (an app of that name elsewhere is another app).
#[derive(Debug)]
struct SpiffeServerVerifier {
    chain: Arc<rustls::client::WebPkiServerVerifier>,
    trust_domain: String,
    namespace: String,
}

impl ServerCertVerifier for SpiffeServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let verified = self.chain.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )?;
        let expected = match server_name {
            ServerName::DnsName(name) => name.as_ref(),
            _ => "",
        };
        match Identity::of(end_entity) {
            Some(id)
                if id.app_id == expected
                    && id.trust_domain == self.trust_domain
                    && id.namespace == self.namespace =>
            {
                Ok(verified)
            }
            found => Err(rustls::Error::General(format!(
                "the peer's certificate is for {}, not {}",
                found.map_or_else(|| "no SPIFFE id".into(), |id| id.to_string()),
                crate::mint::spiffe_id(&self.trust_domain, &self.namespace, expected)
            ))),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.chain.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.chain.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.chain.supported_verify_schemes()
    }
}

/// Who is on the other end of an internal mTLS connection: its address, and the identity
/// its verified certificate gives.
#[derive(Debug, Clone)]
pub struct Peer {
    pub addr: SocketAddr,
    pub identity: Arc<Identity>,
}

/// How long a caller may take over its TLS handshake before the connection is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Handshakes under way at once; more connections wait to be accepted, so a flood of
/// silent connections holds bounded memory and file descriptors.
const HANDSHAKES: usize = 256;

/// The internal port under mTLS: accepts TCP connections and completes their handshakes
/// off the accept path (a slow or silent caller holds up no one), then hands on only the
/// connections whose caller presented a certificate the trust bundle vouches for, with an
/// app's SPIFFE id in it.
pub struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, Peer)>,
    local: SocketAddr,
    identity: Arc<Identity>,
    accepting: tokio::task::AbortHandle,
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}

impl TlsListener {
    /// Serves TLS on `listener` for `config`; `identity` is this sidecar's own.
    pub fn new(
        listener: TcpListener,
        config: Arc<rustls::ServerConfig>,
        identity: Identity,
    ) -> io::Result<Self> {
        let local = listener.local_addr()?;
        let (tx, ready) = mpsc::channel(64);
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        let slots = Arc::new(Semaphore::new(HANDSHAKES));
        let accepting = tokio::spawn(async move {
            loop {
                let Ok(slot) = slots.clone().acquire_owned().await else {
                    return;
                };
                let (tcp, addr) = match listener.accept().await {
                    Ok(accepted) => accepted,
                    // Reset before it was accepted: nothing to do.
                    Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => continue,
                    Err(e) => {
                        // Out of file descriptors and the like: wait, then go on.
                        refused(None, &e);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = tcp.set_nodelay(true);
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    let _slot = slot;
                    let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp));
                    let tls = match handshake.await {
                        Ok(Ok(tls)) => tls,
                        Ok(Err(e)) => return refused(Some(addr), &e),
                        Err(_) => return refused(Some(addr), &"no handshake in time"),
                    };
                    let identity = tls
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|c| c.first())
                        .and_then(Identity::of)
                        .filter(|id| crate::names::plain_name(&id.app_id));
                    // A certificate of the bundle without an app's SPIFFE id names no caller.
                    let Some(identity) = identity else {
                        return refused(Some(addr), &"the certificate names no app (SPIFFE id)");
                    };
                    let peer = Peer {
                        addr,
                        identity: Arc::new(identity),
                    };
                    let _ = tx.send((tls, peer)).await;
                });
            }
        });
        Ok(TlsListener {
            ready,
            local,
            identity: Arc::new(identity),
            accepting: accepting.abort_handle(),
        })
    }
}

/// Refusals are logged, but a flood of them writes one line a second, not one each.
fn refused(addr: Option<SocketAddr>, why: &dyn std::fmt::Display) {
    static LAST: AtomicU64 = AtomicU64::new(0);
    if crate::transport::once_a_second(&LAST) {
        tracing::warn!(?addr, error = %why, "internal port: refused a connection");
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = Peer;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(conn) => conn,
            // The accepting task is gone only when this listener is dropped.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Peer> {
        Ok(Peer {
            addr: self.local,
            identity: self.identity.clone(),
        })
    }
}

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, TlsListener>> for Peer {
    fn connect_info(stream: axum::serve::IncomingStream<'_, TlsListener>) -> Peer {
        stream.remote_addr().clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spiffe_ids_as_dapr_forms_them() {
        let id = Identity::parse("spiffe://public/ns/default/backend").unwrap();
        assert_eq!(id.app_id, "backend");
        assert_eq!(id.namespace, "default");
        assert_eq!(id.to_string(), "spiffe://public/ns/default/backend");
        for bad in [
            "spiffe://public/default/backend",
            "spiffe://public/ns//backend",
            "spiffe://public/ns/default/backend/x",
            "https://public/ns/default/backend",
        ] {
            assert_eq!(Identity::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_certificate_must_name_the_app_it_serves() {
        let dir = testkit::TempDir::new("mtls-load");
        crate::mint::mint_ca(dir.path(), "public", 1).unwrap();
        let (cert, key) =
            crate::mint::mint_app(dir.path(), dir.path(), "backend", "public", "default", 1)
                .unwrap();
        let anchors = Anchors::File(dir.path().join(crate::mint::CA_CERT));
        let mtls = Mtls::load(&cert, &key, &anchors, "backend").unwrap();
        assert_eq!(mtls.identity.app_id, "backend");
        let err = Mtls::load(&cert, &key, &anchors, "frontend").unwrap_err();
        assert!(
            err.to_string()
                .contains("spiffe://public/ns/default/backend, not app id \"frontend\""),
            "{err}"
        );
        let err = Mtls::load(&cert, &key, &Anchors::Pem("nothing".into()), "backend").unwrap_err();
        assert!(matches!(err, MtlsError::NoCertificate(..)), "{err}");
    }

    #[test]
    fn the_peer_name_is_the_app_id_before_the_address() {
        let uri: http::Uri = "https://backend@10.0.0.2:3500/book".parse().unwrap();
        assert_eq!(
            peer_server_name(&uri).unwrap(),
            ServerName::try_from("backend").unwrap()
        );
        let bare: http::Uri = "https://10.0.0.2:3500/book".parse().unwrap();
        assert!(matches!(
            peer_server_name(&bare),
            Err(MtlsError::PeerName(_))
        ));
    }
}
