//! Certificates for mTLS tests, made by the sidecar's own `sidecar mint`: one CA (a trust
//! domain) and a certificate for each app id, in a temporary folder.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::TempDir;

/// A CA and its apps' certificates, removed when dropped.
pub struct Pki {
    dir: TempDir,
}

impl Pki {
    /// A new CA with certificates for `apps`, minted by the sidecar binary `bin`.
    pub fn new(bin: &Path, apps: &[&str]) -> anyhow::Result<Pki> {
        let pki = Pki {
            dir: TempDir::new("pki"),
        };
        let out = pki.dir.path().display().to_string();
        run(bin, &["ca", "--out", &out])?;
        for app in apps {
            run(bin, &["app", "--ca", &out, "--app-id", app, "--out", &out])?;
        }
        Ok(pki)
    }

    /// The trust bundle: the CA's certificate.
    pub fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// The CA's private key, for tests that sign certificates of their own making.
    pub fn ca_key(&self) -> PathBuf {
        self.dir.path().join("ca.key")
    }

    /// `app_id`'s certificate, the CA's after it.
    pub fn cert(&self, app_id: &str) -> PathBuf {
        self.dir.path().join(format!("{app_id}.pem"))
    }

    /// `app_id`'s private key.
    pub fn key(&self, app_id: &str) -> PathBuf {
        self.dir.path().join(format!("{app_id}.key"))
    }

    /// The `sidecar run` flags that turn mTLS on with `app_id`'s certificate.
    pub fn flags(&self, app_id: &str) -> Vec<String> {
        let path = |p: PathBuf| p.display().to_string();
        vec![
            "--enable-mtls".into(),
            "--cert-chain-file".into(),
            path(self.cert(app_id)),
            "--cert-key-file".into(),
            path(self.key(app_id)),
            "--trust-anchors-file".into(),
            path(self.ca()),
        ]
    }
}

fn run(bin: &Path, args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new(bin).arg("mint").args(args).output()?;
    anyhow::ensure!(
        out.status.success(),
        "sidecar mint {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}
