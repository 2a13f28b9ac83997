//! `sidecar mint`: a local certificate authority and per-app certificates, for development
//! and tests of mTLS between sidecars (in production, the CA is the operator's).
//!
//! Identities follow Dapr's: an app's certificate names it by the SPIFFE id
//! `spiffe://<trust-domain>/ns/<namespace>/<app-id>` (URI SAN; Dapr's default trust domain
//! is `public`, its default namespace `default`), and also by its app id as a DNS name, so
//! that a caller checks the callee with ordinary server-name verification. Each
//! certificate serves both ends of a hop (server and client authentication). Private keys
//! are written `0600`.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

/// The CA's files in its folder.
pub const CA_CERT: &str = "ca.pem";
pub const CA_KEY: &str = "ca.key";

#[derive(Debug, thiserror::Error)]
pub enum MintError {
    #[error("{0}: {1}")]
    Io(PathBuf, std::io::Error),
    #[error("certificate: {0}")]
    Cert(#[from] rcgen::Error),
    #[error("{0:?} is not a name a certificate can carry (letters, digits, '-', at most 63)")]
    BadName(String),
}

/// The SPIFFE id of `app_id`, as Dapr forms it.
pub fn spiffe_id(trust_domain: &str, namespace: &str, app_id: &str) -> String {
    format!("spiffe://{trust_domain}/ns/{namespace}/{app_id}")
}

fn validity(days: u32) -> (time::OffsetDateTime, time::OffsetDateTime) {
    let now = time::OffsetDateTime::now_utc();
    // A little in the past: clocks of hosts on one LAN differ by seconds.
    (
        now - time::Duration::minutes(5),
        now + time::Duration::days(i64::from(days)),
    )
}

fn write(path: &Path, text: &str, private: bool) -> Result<(), MintError> {
    let io = |e| MintError::Io(path.to_path_buf(), e);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(if private { 0o600 } else { 0o644 })
        .open(path)
        .map_err(io)?;
    file.write_all(text.as_bytes()).map_err(io)
}

fn read(path: &Path) -> Result<String, MintError> {
    std::fs::read_to_string(path).map_err(|e| MintError::Io(path.to_path_buf(), e))
}

/// A new CA in `dir` (`ca.pem`, the trust bundle every sidecar is given, and `ca.key`).
pub fn mint_ca(dir: &Path, trust_domain: &str, days: u32) -> Result<(), MintError> {
    std::fs::create_dir_all(dir).map_err(|e| MintError::Io(dir.to_path_buf(), e))?;
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    // A name of its own: a verifier finds a certificate's issuer by name, so two CAs of one
    // name would make a foreign certificate fail as a bad signature, not an unknown CA.
    let serial = &uuid::Uuid::new_v4().simple().to_string()[..8];
    params.distinguished_name.push(
        DnType::CommonName,
        format!("sidecar local CA ({trust_domain}) {serial}"),
    );
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    (params.not_before, params.not_after) = validity(days);
    let cert = params.self_signed(&key)?;
    write(&dir.join(CA_CERT), &cert.pem(), false)?;
    write(&dir.join(CA_KEY), &key.serialize_pem(), true)
}

/// A certificate for `app_id` signed by the CA in `ca_dir`, written to `out` as
/// `<app-id>.pem` (the certificate, then the CA's: the chain a peer checks) and
/// `<app-id>.key`. Returns the two paths.
pub fn mint_app(
    ca_dir: &Path,
    out: &Path,
    app_id: &str,
    trust_domain: &str,
    namespace: &str,
    days: u32,
) -> Result<(PathBuf, PathBuf), MintError> {
    for name in [app_id, namespace] {
        // A DNS name in the certificate: no `_`, which a host name may not hold either.
        if !crate::names::plain_name(name) || name.contains('_') {
            return Err(MintError::BadName(name.to_string()));
        }
    }
    let ca_pem = read(&ca_dir.join(CA_CERT))?;
    let ca_key = KeyPair::from_pem(&read(&ca_dir.join(CA_KEY))?)?;
    let issuer = Issuer::from_ca_cert_pem(&ca_pem, &ca_key)?;
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, app_id);
    params.subject_alt_names = vec![
        SanType::URI(spiffe_id(trust_domain, namespace, app_id).try_into()?),
        SanType::DnsName(app_id.try_into()?),
    ];
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params.use_authority_key_identifier_extension = true;
    (params.not_before, params.not_after) = validity(days);
    let cert = params.signed_by(&key, &issuer)?;
    std::fs::create_dir_all(out).map_err(|e| MintError::Io(out.to_path_buf(), e))?;
    let (cert_path, key_path) = (
        out.join(format!("{app_id}.pem")),
        out.join(format!("{app_id}.key")),
    );
    write(&cert_path, &format!("{}{ca_pem}", cert.pem()), false)?;
    write(&key_path, &key.serialize_pem(), true)?;
    Ok((cert_path, key_path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_a_certificate_cannot_carry_are_refused() {
        let dir = testkit::TempDir::new("mint-names");
        mint_ca(dir.path(), "public", 1).unwrap();
        for bad in ["", "a.b", "a/b", "-x"] {
            assert!(matches!(
                mint_app(dir.path(), dir.path(), bad, "public", "default", 1),
                Err(MintError::BadName(_))
            ));
        }
    }
}
