//! The libvirt lab's `qemu+ssh://`: an sshd per host, run in the host
//! daemon's namespaces with keys the lab makes, and the URI other daemons
//! reach it by.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use super::{io_err, path, Lab};
use crate::process::run;

/// `Err(reason)` when the lab cannot run sshd ([`Lab::start_sshd`]).
pub fn sshd_available() -> Result<(), String> {
    for (program, package) in [
        ("/usr/sbin/sshd", "openssh-server"),
        ("/usr/bin/ssh-keygen", "openssh-client"),
        ("/usr/bin/virt-ssh-helper", "libvirt-clients"),
    ] {
        if !Path::new(program).exists() {
            return Err(format!("{program} is missing: apt-get install {package}"));
        }
    }
    Ok(())
}

impl Lab {
    /// Starts an sshd for host `i` in its daemon's network, UTS and mount
    /// namespaces (so `virt-ssh-helper` reaches that daemon's socket),
    /// listening on the host's address only, with a host key and the lab's
    /// client key made by the lab ([`Lab::ssh_key`]), and `MaxStartups
    /// max_startups`; waits until it accepts connections. The daemons' own
    /// ssh clients keep their state (`known_hosts`) in their host's
    /// directory: each daemon has its own `/root`.
    pub fn start_sshd(&mut self, i: usize, max_startups: u32) -> std::io::Result<()> {
        let key = self.ssh_key()?;
        let host = &self.hosts[i];
        let pid = host
            .daemon_pid()
            .ok_or_else(|| io_err(format!("{}: no daemon to start sshd beside", host.hostname)))?;
        let dir = host.dir.join("ssh");
        std::fs::create_dir_all(&dir)?;
        let host_key = dir.join("host_key");
        if !host_key.exists() {
            run(
                "ssh-keygen",
                &["-q", "-t", "ed25519", "-N", "", "-f", path(&host_key)],
            )?;
        }
        let config = dir.join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "ListenAddress {ip}\nPort 22\nHostKey {host_key}\nAuthorizedKeysFile {authorized}\n\
                 PermitRootLogin prohibit-password\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n\
                 UsePAM no\nStrictModes no\nPidFile {dir}/sshd.pid\nMaxStartups {max_startups}\n",
                ip = host.ip,
                host_key = host_key.display(),
                authorized = key.with_extension("pub").display(),
                dir = dir.display(),
            ),
        )?;
        let log = dir.join("sshd.log");
        // nsenter execs sshd (no new pid namespace): the child's pid is sshd's.
        let child = Command::new("nsenter")
            .args([
                "-t",
                &pid.to_string(),
                "-m",
                "-u",
                "-n",
                "/usr/sbin/sshd",
                "-D",
                "-f",
            ])
            .arg(&config)
            .arg("-E")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()?;
        let (netns, ip) = (host.netns.clone(), host.ip.clone());
        self.hosts[i].sshd = Some(child);
        let listening = crate::process::wait_until(Duration::from_secs(10), || {
            let (netns, ip) = (netns.clone(), ip.clone());
            crate::netns::in_netns(&netns, move || {
                std::net::TcpStream::connect((ip.as_str(), 22)).is_ok()
            })
            .unwrap_or(false)
        });
        if !listening {
            let said = std::fs::read_to_string(&log).unwrap_or_default();
            return Err(io_err(format!(
                "{}: sshd does not listen: {said}",
                self.hosts[i].hostname
            )));
        }
        Ok(())
    }

    /// The lab's ssh client key (made on first use): authorized by every
    /// lab sshd, used by the daemons' peer-to-peer connections.
    pub fn ssh_key(&self) -> std::io::Result<PathBuf> {
        let key = self.dir.join("ssh_client_key");
        if !key.exists() {
            run("ssh-keygen", &["-q", "-t", "ed25519", "-N", "", "-f", path(&key)])?;
        }
        Ok(key)
    }

    /// The URI other daemons use to reach host `i` over ssh (its sshd
    /// started with [`Lab::start_sshd`]).
    pub fn ssh_peer_uri(&self, i: usize) -> std::io::Result<String> {
        Ok(format!(
            "qemu+ssh://root@{}/system?keyfile={}&no_verify=1",
            self.hosts[i].ip,
            self.ssh_key()?.display()
        ))
    }

    /// How many ssh sessions host `i`'s sshd accepted (its log).
    pub fn ssh_sessions_accepted(&self, i: usize) -> usize {
        std::fs::read_to_string(self.hosts[i].dir.join("ssh/sshd.log"))
            .map(|log| log.matches("Accepted publickey for root").count())
            .unwrap_or(0)
    }
}
