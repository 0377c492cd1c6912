//! # evac-pki
//!
//! A throwaway certificate authority for labs and tests: migration TLS
//! (QEMU's `tls-creds-x509`, libvirt's `VIR_MIGRATE_TLS`) needs a CA and,
//! per host, a server and a client certificate. Real fleets have their own
//! PKI; evac only points at the directories it made.
//!
//! [`Ca::create`] makes a self-signed CA with GnuTLS's `certtool` (package
//! `gnutls-bin`); [`Ca::issue_host`] writes one host's directory in the
//! layout both QEMU (`dir=` of `tls-creds-x509`) and libvirt
//! (`migrate_tls_x509_cert_dir`, default `/etc/pki/qemu`) read:
//!
//! ```text
//! ca-cert.pem                        the CA both ends trust
//! server-cert.pem server-key.pem     presented when the host receives a migration
//! client-cert.pem client-key.pem     presented when it sends one (the receiver verifies it)
//! ```
//!
//! Both certificates name the host by its DNS name and by its IP address
//! (subject alt names): a sender checks the receiver's certificate against
//! the name it was told (`tls-hostname`, libvirt's `tls.destination`) or,
//! by default, the address it connects to.
//!
//! `certtool` is a program, not a library, on purpose: it is what QEMU's
//! and libvirt's own documentation use, so a lab's certificates are made
//! the way an operator's are. Keys and certificates expire after 2 days:
//! they are for one test run.

use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// `Err(reason)` when `certtool` cannot be run here.
pub fn certtool_available() -> Result<(), String> {
    match Command::new("certtool").arg("--version").output() {
        Ok(out) if out.status.success() => Ok(()),
        _ => Err("`certtool` is missing: apt-get install gnutls-bin".into()),
    }
}

/// A CA: its key and self-signed certificate in a directory.
#[derive(Debug, Clone)]
pub struct Ca {
    pub key: PathBuf,
    pub cert: PathBuf,
}

/// One host's identity: the names its certificates carry.
#[derive(Debug, Clone)]
pub struct HostIdentity<'a> {
    /// Common name and DNS subject alt name.
    pub name: &'a str,
    /// IP subject alt name, if any.
    pub ip: Option<&'a str>,
}

impl Ca {
    /// Makes a CA called `cn` in `dir` (created if missing): `ca-key.pem`,
    /// `ca-cert.pem`.
    pub fn create(dir: &Path, cn: &str) -> io::Result<Ca> {
        std::fs::create_dir_all(dir)?;
        let ca = Ca {
            key: dir.join("ca-key.pem"),
            cert: dir.join("ca-cert.pem"),
        };
        let info = dir.join("ca.info");
        std::fs::write(
            &info,
            format!(
                "cn = {}\nca\ncert_signing_key\nexpiration_days = 2\n",
                template_value(cn)?
            ),
        )?;
        certtool(&["--generate-privkey", "--outfile", path(&ca.key)?])?;
        certtool(&[
            "--generate-self-signed",
            "--load-privkey",
            path(&ca.key)?,
            "--template",
            path(&info)?,
            "--outfile",
            path(&ca.cert)?,
        ])?;
        Ok(ca)
    }

    /// Writes `host`'s certificate directory `dir` (created if missing):
    /// the CA's certificate and a server and a client key pair naming
    /// `host`, signed by this CA.
    pub fn issue_host(&self, dir: &Path, host: &HostIdentity) -> io::Result<()> {
        std::fs::create_dir_all(dir)?;
        std::fs::copy(&self.cert, dir.join("ca-cert.pem"))?;
        let name = template_value(host.name)?;
        let ip = match host.ip {
            Some(ip) => format!("ip_address = {}\n", template_value(ip)?),
            None => String::new(),
        };
        for (kind, usage) in [("server", "tls_www_server"), ("client", "tls_www_client")] {
            let key = dir.join(format!("{kind}-key.pem"));
            let info = dir.join(format!("{kind}.info"));
            std::fs::write(
                &info,
                format!(
                    "organization = evac lab\ncn = {name}\ndns_name = {name}\n{ip}{usage}\n\
                     encryption_key\nsigning_key\nexpiration_days = 2\n"
                ),
            )?;
            certtool(&["--generate-privkey", "--outfile", path(&key)?])?;
            certtool(&[
                "--generate-certificate",
                "--load-privkey",
                path(&key)?,
                "--load-ca-certificate",
                path(&self.cert)?,
                "--load-ca-privkey",
                path(&self.key)?,
                "--template",
                path(&info)?,
                "--outfile",
                path(&dir.join(format!("{kind}-cert.pem")))?,
            ])?;
            std::fs::remove_file(&info)?;
        }
        Ok(())
    }
}

/// A value for a certtool template line: one line, no quotes to escape.
fn template_value(value: &str) -> io::Result<&str> {
    if value.is_empty() || value.contains(['\n', '\r', '"']) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{value:?} cannot go in a certificate template"),
        ));
    }
    Ok(value)
}

fn path(p: &Path) -> io::Result<&str> {
    p.to_str().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} is not UTF-8", p.display()),
        )
    })
}

fn certtool(args: &[&str]) -> io::Result<()> {
    let out = Command::new("certtool")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| io::Error::new(e.kind(), format!("cannot run certtool: {e}")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "`certtool {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The certificates say what was asked, checked by certtool itself
    /// (a second reader) and against the CA.
    #[test]
    fn issues_certificates_naming_the_host_and_signed_by_the_ca() {
        if let Err(why) = certtool_available() {
            // As evac_lab::skip_without (not a dependency here: it pulls
            // in QEMU's crates): CI sets EVAC_REQUIRE_LAB, a skip fails.
            if std::env::var_os("EVAC_REQUIRE_LAB").is_some_and(|v| !v.is_empty() && v != "0") {
                panic!("EVAC_REQUIRE_LAB is set but this test cannot run: {why}");
            }
            eprintln!("SKIPPED: {why}");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::create(&dir.path().join("ca"), "test CA").unwrap();
        let host = dir.path().join("h");
        ca.issue_host(
            &host,
            &HostIdentity {
                name: "host-b.example",
                ip: Some("10.9.8.7"),
            },
        )
        .unwrap();
        let mut names: Vec<String> = std::fs::read_dir(&host)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(
            names,
            [
                "ca-cert.pem",
                "client-cert.pem",
                "client-key.pem",
                "server-cert.pem",
                "server-key.pem"
            ]
        );
        let info = Command::new("certtool")
            .args(["--certificate-info", "--infile"])
            .arg(host.join("server-cert.pem"))
            .output()
            .unwrap();
        let info = String::from_utf8_lossy(&info.stdout);
        assert!(info.contains("DNSname: host-b.example"), "{info}");
        assert!(info.contains("IPAddress: 10.9.8.7"), "{info}");
        assert!(info.contains("TLS WWW Server"), "{info}");
        // Signed by our CA: certtool verifies the chain.
        let verify = Command::new("certtool")
            .args(["--verify", "--load-ca-certificate"])
            .arg(&ca.cert)
            .arg("--infile")
            .arg(host.join("client-cert.pem"))
            .output()
            .unwrap();
        assert!(
            verify.status.success(),
            "{}",
            String::from_utf8_lossy(&verify.stdout)
        );
        assert!(ca
            .issue_host(
                &host,
                &HostIdentity {
                    name: "a\"b",
                    ip: None
                }
            )
            .is_err());
    }
}
