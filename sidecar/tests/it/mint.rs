//! `sidecar mint`: a CA and per-app certificates that a standard verifier (OpenSSL's)
//! accepts for both ends of a hop, naming the app as Dapr does, and that a CA of another
//! trust refuses.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::Command;

use testkit::TempDir;

fn sidecar(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_sidecar"))
        .arg("mint")
        .args(args)
        .output()
        .unwrap()
}

fn openssl(args: &[&str]) -> (bool, String) {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn minted_certificates_name_the_app_and_chain_to_their_ca_only() {
    let dir = TempDir::new("mint");
    let (ca, other_ca, certs) = (
        dir.path().join("ca"),
        dir.path().join("other-ca"),
        dir.path().join("certs"),
    );
    for out in [&ca, &other_ca] {
        let made = sidecar(&["ca", "--out", out.to_str().unwrap()]);
        assert!(made.status.success(), "{made:?}");
    }
    assert_eq!(mode(&ca.join("ca.key")), 0o600);
    let made = sidecar(&[
        "app",
        "--ca",
        ca.to_str().unwrap(),
        "--app-id",
        "backend",
        "--out",
        certs.to_str().unwrap(),
    ]);
    assert!(made.status.success(), "{made:?}");
    assert!(String::from_utf8_lossy(&made.stdout).contains("spiffe://public/ns/default/backend"));
    let (cert, key) = (certs.join("backend.pem"), certs.join("backend.key"));
    assert_eq!(mode(&key), 0o600);
    let cert = cert.to_str().unwrap();

    let (_, sans) = openssl(&["x509", "-in", cert, "-noout", "-ext", "subjectAltName"]);
    assert!(
        sans.contains("URI:spiffe://public/ns/default/backend"),
        "{sans}"
    );
    assert!(sans.contains("DNS:backend"), "{sans}");
    let ca_pem = ca.join("ca.pem");
    for purpose in ["sslserver", "sslclient"] {
        let (ok, report) = openssl(&[
            "verify",
            "-CAfile",
            ca_pem.to_str().unwrap(),
            "-purpose",
            purpose,
            cert,
        ]);
        assert!(ok, "{purpose}: {report}");
    }
    let foreign = other_ca.join("ca.pem");
    let (ok, report) = openssl(&["verify", "-CAfile", foreign.to_str().unwrap(), cert]);
    assert!(!ok, "a certificate of another CA was accepted: {report}");
    // The key belongs to the certificate.
    let (_, cert_key) = openssl(&["x509", "-in", cert, "-noout", "-pubkey"]);
    let (_, key_pub) = openssl(&["pkey", "-in", key.to_str().unwrap(), "-pubout"]);
    assert_eq!(cert_key, key_pub);
}
