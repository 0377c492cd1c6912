//! A libvirt lab on one machine: N libvirtd daemons that look like N hosts,
//! for the libvirt backend's tests and figures (feature `libvirt`).
//!
//! Each daemon runs in its own network, UTS and mount namespace with its own
//! hostname, `host_uuid`, state directories, sockets and IP address. In its
//! mount namespace per-daemon directories are bind-mounted over the fixed
//! libvirt paths (`/etc/libvirt`, `/var/lib/libvirt`, `/run/libvirt`, ...),
//! so nothing of the machine's own libvirt is touched. The hosts' namespaces
//! are joined by veths to a router namespace holding a bridge; every link is
//! shaped with `tc tbf` in both directions when a rate is given. The
//! network is built from [`crate::netns`]'s pieces like every lab network,
//! packets are captured by [`crate::capture`], and what is left is removed
//! by [`crate::cleanup`], as for `evac lab`.
//!
//! evac (the test process) reaches each daemon through its unix socket,
//! which lives in the lab's directory and is visible from the machine's own
//! namespace: the lab's addresses exist only inside its namespaces. The
//! daemons reach one another (peer-to-peer migration) over TCP inside the
//! lab network, at the address [`LabHost::peer_uri`] names.
//!
//! Names (namespaces, directories) carry the pid, so parallel runs never
//! collide. Everything is torn down when the [`Lab`] is dropped; [`sweep`]
//! removes what a crashed run (whose pid is gone) left behind. Only
//! processes the lab started (its daemons and the QEMUs they spawned, found
//! by the lab's directory on their command line) are ever killed.
//!
//! Its parts: this module builds and tears down the hosts (network,
//! daemons, certificates) and writes inventories; [`domains`] starts and
//! inspects domains; `ssh` runs each host's sshd for `qemu+ssh://`.
//!
//! Lab domains have no disk: q35 with qboot and RAM mapped privately
//! (`share=off`) from a file of random bytes (every page is sent) or of a
//! repeated marker (the TLS capture test). Postcopy must never be used with
//! them: with file-backed RAM QEMU 7.2 loses the guest and zeroes the file.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use evac_libvirt::client;
use evac_model::{BitsPerSec, Bytes};

use crate::capture::Capture;
use crate::cleanup::{remove_lab, sweep_dead, Removed};
use crate::netns::{address_up, link_up, shape, veth, Namespaces, QdiscVerb, Tbf};
use crate::process::{self, ip, run};
use crate::QBOOT;

pub mod domains;
mod ssh;

pub use ssh::sshd_available;

/// The prefix of every name the lab gives (namespaces, directories).
pub const PREFIX: &str = "evlv";

/// `Err(reason)` when a libvirt lab cannot be built here (not root, or a
/// program missing).
pub fn libvirt_lab_available() -> Result<(), String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err("the libvirt lab needs root (network and mount namespaces)".into());
    }
    for (program, package) in [
        ("/usr/sbin/libvirtd", "libvirt-daemon"),
        ("/usr/bin/qemu-system-x86_64", "qemu-system-x86"),
        (QBOOT, "qemu-system-data"),
    ] {
        if !Path::new(program).exists() {
            return Err(format!("{program} is missing: apt-get install {package}"));
        }
    }
    for (program, package) in [("ip", "iproute2"), ("tc", "iproute2"), ("unshare", "util-linux")] {
        if let Err(e) = run(program, &["-V"]) {
            if e.kind() == std::io::ErrorKind::NotFound {
                return Err(format!("`{program}` is missing: apt-get install {package}"));
            }
        }
    }
    let qemu_driver = Path::new("/usr/lib/x86_64-linux-gnu/libvirt/connection-driver/libvirt_driver_qemu.so");
    if !qemu_driver.exists() {
        return Err("libvirt's QEMU driver is missing: apt-get install libvirt-daemon-driver-qemu".into());
    }
    Ok(())
}

/// `Err(reason)` when TLS certificates cannot be made here.
pub use evac_pki::certtool_available;

/// How to build a lab.
#[derive(Debug, Clone)]
pub struct LabOptions {
    /// Number of hosts (daemons), at least 2.
    pub hosts: usize,
    /// Each host's link rate in Mbit/s (tbf, both directions); `None`: unshaped.
    pub rate_mbit: Option<u32>,
    /// Make a CA and host certificates and turn on migration TLS support
    /// (`migrate_tls_x509_cert_dir`, verified).
    pub tls: bool,
}

impl Default for LabOptions {
    fn default() -> Self {
        LabOptions {
            hosts: 2,
            rate_mbit: None,
            tls: false,
        }
    }
}

impl LabOptions {
    /// Two hosts, each link shaped to 400 Mbit/s: what most tests use.
    pub fn pair(tls: bool) -> LabOptions {
        LabOptions {
            hosts: 2,
            rate_mbit: Some(400),
            tls,
        }
    }
}

/// One lab host: a libvirtd in its own namespaces.
#[derive(Debug)]
pub struct LabHost {
    /// Its hostname (also its certificate's name).
    pub hostname: String,
    /// Its network namespace.
    pub netns: String,
    /// Its address inside the lab network.
    pub ip: String,
    /// Its per-daemon directory.
    pub dir: PathBuf,
    daemon: Option<Child>,
    /// Its sshd, once [`Lab::start_sshd`] started it.
    sshd: Option<Child>,
}

impl LabHost {
    /// The URI evac uses: the daemon's unix socket.
    pub fn uri(&self) -> String {
        format!("qemu+unix:///system?socket={}", self.socket().display())
    }

    /// The URI other daemons use to reach it (peer-to-peer migration).
    pub fn peer_uri(&self) -> String {
        format!("qemu+tcp://{}/system", self.ip)
    }

    /// The daemon's read-write socket.
    pub fn socket(&self) -> PathBuf {
        self.dir.join("run/libvirt-sock")
    }

    /// The pid of its libvirtd, while it runs.
    pub fn daemon_pid(&self) -> Option<u32> {
        self.daemon.as_ref().map(Child::id)
    }
}

/// A running lab; torn down on drop.
#[derive(Debug)]
pub struct Lab {
    /// `evlv<pid>x<n>`: the prefix of this lab's namespaces.
    pub name: String,
    /// The lab's directory (`$TMPDIR/evlv<pid>x<n>`).
    pub dir: PathBuf,
    pub hosts: Vec<LabHost>,
    tls: bool,
    /// Removed last, once the daemons are stopped.
    namespaces: Namespaces,
}

static LAB_COUNTER: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// The lab network: 10.213.<n>.0/24 inside the lab's namespaces only.
const SUBNET: &str = "10.213.77";

pub(super) fn io_err(why: String) -> std::io::Error {
    std::io::Error::other(why)
}

impl Lab {
    /// Builds the lab and returns once every daemon answers.
    pub fn start(options: &LabOptions) -> std::io::Result<Lab> {
        if options.hosts < 2 || options.hosts > 26 {
            return Err(io_err(format!("a lab has 2 to 26 hosts, not {}", options.hosts)));
        }
        sweep();
        let n = LAB_COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("{PREFIX}{}x{n}", std::process::id());
        let dir = std::env::temp_dir().join(&name);
        if dir.exists() {
            std::fs::remove_dir_all(&dir)?;
        }
        std::fs::create_dir_all(&dir)?;
        let mut lab = Lab {
            name: name.clone(),
            dir: dir.clone(),
            hosts: Vec::new(),
            tls: options.tls,
            namespaces: Namespaces::new(),
        };
        // On error `lab` is dropped here and tears down what was built.
        lab.build_network(options)?;
        if options.tls {
            lab.make_certificates()?;
        }
        for i in 0..lab.hosts.len() {
            lab.write_configs(i)?;
            lab.start_daemon(i)?;
        }
        Ok(lab)
    }

    fn build_network(&mut self, options: &LabOptions) -> std::io::Result<()> {
        let router = format!("{}r", self.name);
        self.namespaces.add(&router)?;
        ip(&["-n", &router, "link", "add", "br0", "type", "bridge"])?;
        link_up(&router, "br0")?;
        // The burst and queue every link had when this lab was written
        // with `tc ... tbf rate R burst 256kb latency 50ms`.
        let tbf = options.rate_mbit.map(|rate| Tbf {
            rate: BitsPerSec(f64::from(rate) * 1e6),
            burst: Bytes(256 << 10),
            latency: Duration::from_millis(50),
        });
        for i in 0..options.hosts {
            let letter = (b'a' + i as u8) as char;
            let netns = format!("{}{letter}", self.name);
            self.namespaces.add(&netns)?;
            let port = format!("p{letter}");
            veth(&netns, "eth0", &router, &port)?;
            let ip_address = format!("{SUBNET}.{}", i + 1);
            address_up(&netns, "eth0", &format!("{ip_address}/24"))?;
            ip(&["-n", &router, "link", "set", &port, "master", "br0"])?;
            link_up(&router, &port)?;
            if let Some(tbf) = &tbf {
                for (ns, dev) in [(&netns, "eth0"), (&router, port.as_str())] {
                    shape(ns, dev, QdiscVerb::Add, tbf)?;
                }
            }
            let host_dir = self.dir.join(letter.to_string());
            self.hosts.push(LabHost {
                hostname: format!("{}-host-{letter}", self.name),
                netns,
                ip: ip_address,
                dir: host_dir,
                daemon: None,
                sshd: None,
            });
        }
        Ok(())
    }

    /// A throwaway CA and, per host, a server and a client certificate
    /// naming it (hostname and IP), in the host's `pki` directory.
    fn make_certificates(&mut self) -> std::io::Result<()> {
        let ca = evac_pki::Ca::create(&self.dir.join("pki"), "evac lab CA")?;
        for host in &self.hosts {
            ca.issue_host(
                &host.dir.join("pki"),
                &evac_pki::HostIdentity {
                    name: &host.hostname,
                    ip: Some(&host.ip),
                },
            )?;
        }
        Ok(())
    }

    fn write_configs(&self, i: usize) -> std::io::Result<()> {
        let host = &self.hosts[i];
        let d = &host.dir;
        for sub in ["etc", "lib", "run", "log", "cache"] {
            std::fs::create_dir_all(d.join(sub))?;
        }
        if Path::new("/etc/libvirt").is_dir() {
            run("cp", &["-a", "/etc/libvirt/.", path(&d.join("etc"))])?;
        }
        let uuid = random_uuid()?;
        std::fs::write(
            d.join("etc/libvirtd.conf"),
            format!(
                "listen_tls = 0\nlisten_tcp = 1\nlisten_addr = \"{ip}\"\nauth_tcp = \"none\"\n\
                 auth_unix_rw = \"none\"\nauth_unix_ro = \"none\"\nunix_sock_group = \"root\"\n\
                 unix_sock_rw_perms = \"0700\"\nhost_uuid = \"{uuid}\"\nmax_workers = 64\n\
                 log_outputs = \"3:file:/var/log/libvirt/libvirtd.log\"\n",
                ip = host.ip
            ),
        )?;
        let mut qemu = format!(
            "stdio_handler = \"file\"\nmigration_host = \"{ip}\"\nuser = \"root\"\ngroup = \"root\"\n\
             security_driver = \"none\"\nremember_owner = 0\n",
            ip = host.ip
        );
        if self.tls {
            qemu.push_str(&format!(
                "migrate_tls_x509_cert_dir = \"{}\"\nmigrate_tls_x509_verify = 1\n",
                d.join("pki").display()
            ));
        }
        std::fs::write(d.join("etc/qemu.conf"), qemu)?;
        Ok(())
    }

    /// Starts (or restarts) host `i`'s daemon and waits until it answers.
    pub fn start_daemon(&mut self, i: usize) -> std::io::Result<()> {
        let host = &self.hosts[i];
        if host.daemon.is_some() {
            return Err(io_err(format!("{}: the daemon already runs", host.hostname)));
        }
        let d = &host.dir;
        let _ = std::fs::remove_file(host.socket());
        let script = format!(
            "set -e; hostname {hostname}\n\
             mount -t tmpfs {name}-run /run; mkdir -p /run/libvirt; mount --bind {d}/run /run/libvirt\n\
             mount --bind {d}/etc /etc/libvirt\n\
             mkdir -p /var/lib/libvirt /var/log/libvirt /var/cache/libvirt\n\
             mount --bind {d}/lib /var/lib/libvirt\n\
             mount --bind {d}/log /var/log/libvirt\n\
             mount --bind {d}/cache /var/cache/libvirt\n\
             mkdir -p {d}/home /run/sshd; mount --bind {d}/home /root\n\
             exec /usr/sbin/libvirtd --listen",
            hostname = host.hostname,
            name = self.name,
            d = d.display()
        );
        let log = std::fs::File::create(d.join("daemon.out"))?;
        // ip, unshare and bash all exec: the child's pid is libvirtd's.
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &host.netns,
                "unshare",
                "--mount",
                "--uts",
                "--propagation",
                "private",
            ])
            .args(["bash", "-c", &script])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0)
            .spawn()?;
        let socket = host.socket();
        let hostname = host.hostname.clone();
        self.hosts[i].daemon = Some(child);
        // Up means: the socket answers a real libvirt call.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.hosts[i]
                .daemon
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.hosts[i].daemon = None;
                let out = std::fs::read_to_string(self.hosts[i].dir.join("daemon.out")).unwrap_or_default();
                return Err(io_err(format!("{hostname}: libvirtd exited ({status}): {out}")));
            }
            if socket.exists() {
                let uri = self.hosts[i].uri();
                match client::probe(&uri, Duration::from_secs(5)) {
                    Ok(name) if name == hostname => return Ok(()),
                    Ok(name) => return Err(io_err(format!("{uri} is host `{name}`, not `{hostname}`"))),
                    Err(_) if Instant::now() < deadline => {}
                    Err(e) => return Err(io_err(format!("{hostname}: libvirtd does not answer: {e}"))),
                }
            }
            if Instant::now() > deadline {
                return Err(io_err(format!(
                    "{hostname}: libvirtd did not create {}",
                    socket.display()
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills host `i`'s daemon (SIGKILL, by its pid); its domains keep
    /// running.
    pub fn kill_daemon(&mut self, i: usize) {
        if let Some(mut child) = self.hosts[i].daemon.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sets host `i`'s libvirtd `max_workers` (and `min_workers`, which
    /// may not exceed it) and restarts the daemon with it (SIGTERM by pid,
    /// then as [`Lab::start_daemon`]); its domains keep running.
    pub fn set_max_workers(&mut self, i: usize, max_workers: u32) -> std::io::Result<()> {
        let conf = self.hosts[i].dir.join("etc/libvirtd.conf");
        let text = std::fs::read_to_string(&conf)?;
        let mut lines: Vec<String> = text
            .lines()
            .filter(|l| !l.starts_with("max_workers") && !l.starts_with("min_workers"))
            .map(str::to_owned)
            .collect();
        lines.push(format!("max_workers = {max_workers}"));
        lines.push(format!("min_workers = {}", max_workers.min(5)));
        std::fs::write(&conf, lines.join("\n") + "\n")?;
        if let Some(child) = self.hosts[i].daemon.take() {
            process::stop(child, libc::SIGTERM, Duration::from_secs(10));
        }
        self.start_daemon(i)
    }

    /// Starts a packet capture on host `i`'s lab interface (first 256
    /// bytes of each packet of the migration port range) into `file`.
    pub fn capture(&self, i: usize, file: &Path) -> std::io::Result<Capture> {
        Capture::start(
            &self.hosts[i].netns,
            "eth0",
            "tcp portrange 49152-49215",
            256,
            file,
        )
    }

    /// A lab of `options` for a test, or `None` (with the reason on stderr)
    /// when one of `needs` is missing ([`crate::skip_without()`]: under
    /// `EVAC_REQUIRE_LAB` that fails the test instead).
    ///
    /// # Panics
    ///
    /// When the lab does not start.
    pub fn unless_missing(needs: &[crate::Prerequisite], options: &LabOptions) -> Option<Lab> {
        if crate::skip_without(needs) {
            return None;
        }
        Some(Lab::start(options).expect("the libvirt lab starts"))
    }

    /// A request to migrate `domain` from the first host to the second over
    /// the lab network: one connection, no cap, a 300 ms downtime limit,
    /// nothing else asked for; a test changes what it varies.
    pub fn migrate_request(&self, domain: &str) -> client::MigrateRequest {
        client::MigrateRequest {
            domain: domain.to_owned(),
            destination_uri: self.hosts[1].peer_uri(),
            migration_uri: Some(format!("tcp://{}", self.hosts[1].ip)),
            max_bandwidth: None,
            parallel_connections: 1,
            auto_converge: false,
            downtime_limit: Duration::from_millis(300),
            tls: false,
            tls_destination: None,
            copy_storage: false,
            offline: false,
            postcopy: false,
        }
    }

    /// [`Lab::inventory`] of the first host to the second at 400 Mbps, the
    /// [`LabOptions::pair`] lab's.
    pub fn pair_inventory(&self, migration: &str, controller: &str) -> String {
        self.inventory(&[0], &[1], "400 Mbps", migration, controller)
    }

    /// [`Lab::pair_inventory`] written to `fleet.toml` in the lab's
    /// directory, for a test that runs `evac` on it; its path.
    ///
    /// # Panics
    ///
    /// When the file cannot be written.
    pub fn pair_inventory_file(&self, migration: &str, controller: &str) -> PathBuf {
        let path = self.dir.join("fleet.toml");
        std::fs::write(&path, self.pair_inventory(migration, controller)).expect("the lab's inventory file");
        path
    }

    /// A libvirt inventory for this lab: `sources` and `destinations` are
    /// host indices; `nic` each host's NIC (e.g. "200 Mbps"); `migration`
    /// and `controller` are extra lines for those tables. evac reaches the
    /// daemons by their sockets, the daemons one another over the lab
    /// network.
    pub fn inventory(
        &self,
        sources: &[usize],
        destinations: &[usize],
        nic: &str,
        migration: &str,
        controller: &str,
    ) -> String {
        // The journal goes in the lab's directory, removed with it.
        let mut text = format!(
            "name = \"{}\"\nbackend = \"libvirt\"\nrun_dir = \"{}\"\n[controller]\n{controller}\n[migration]\n{migration}\n",
            self.name,
            self.dir.join("run").display()
        );
        for (&i, site) in sources
            .iter()
            .map(|i| (i, "source"))
            .chain(destinations.iter().map(|i| (i, "destination")))
        {
            let h = &self.hosts[i];
            text.push_str(&format!(
                "[[host]]\nname = \"{}\"\nsite = \"{site}\"\nnic = \"{nic}\"\nuri = \"{}\"\npeer_uri = \"{}\"\n",
                h.hostname,
                h.uri(),
                h.peer_uri()
            ));
            if site == "destination" {
                text.push_str(&format!("migration_address = \"{}\"\n", h.ip));
            }
        }
        text
    }

    fn teardown(&mut self) {
        // Domains first, through their daemons (which reap their QEMUs).
        for i in 0..self.hosts.len() {
            if self.hosts[i].daemon.is_some() {
                let uri = self.hosts[i].uri();
                let _ = client::blocking(Duration::from_secs(15), move || {
                    let conn = client::Conn::open_blocking(&uri)?;
                    for dom in conn.0.list_all_domains(0)? {
                        let _ = dom.destroy();
                        let _ = dom.undefine();
                    }
                    Ok(())
                });
            }
        }
        for host in &mut self.hosts {
            if let Some(mut sshd) = host.sshd.take() {
                let _ = sshd.kill();
                let _ = sshd.wait();
            }
        }
        for i in 0..self.hosts.len() {
            if let Some(child) = self.hosts[i].daemon.take() {
                process::stop(child, libc::SIGTERM, Duration::from_secs(5));
            }
        }
        // QEMUs a killed daemon left (their command line names our dir),
        // the namespaces, the directory.
        let namespaces = self.namespaces.names().to_vec();
        if let Err(e) = remove_lab(&self.dir, &namespaces, &mut Removed::default()) {
            eprintln!("lab: {e:#}");
        }
        self.namespaces.remove_all();
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.teardown();
    }
}

pub(crate) fn path(p: &Path) -> &str {
    p.to_str().expect("lab paths are UTF-8")
}

fn random_uuid() -> std::io::Result<String> {
    let mut b = [0u8; 16];
    std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom")?, &mut b)?;
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    Ok(format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    ))
}

/// The owner's pid in a lab name `evlv<pid>...`.
fn owner(name: &str) -> Option<u32> {
    let rest = name.strip_prefix(PREFIX)?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// Removes what crashed libvirt labs left: namespaces, processes and
/// directories named `evlv<pid>...` whose pid no longer runs
/// ([`sweep_dead`]).
pub fn sweep() {
    sweep_dead(&std::env::temp_dir(), owner);
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_lab_name_carries_its_owner() {
        assert_eq!(super::owner("evlv1234x0"), Some(1234));
        assert_eq!(super::owner("evlv1234x0r"), Some(1234));
        assert_eq!(super::owner("evlvx0"), None);
        assert_eq!(super::owner("evlab-x-1234-h0"), None);
    }
}
