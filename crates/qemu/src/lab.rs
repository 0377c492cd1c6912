//! Test support: starts small source VMs and writes inventories for them.
//!
//! Every process a [`Lab`] starts or is told about ([`Lab::adopt`]) is killed
//! by its pid when the lab is dropped, so a failing test cleans up too.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// qboot: the firmware that boots fastest; a guest with no disk spins in it,
/// "running".
pub const QBOOT: &str = "/usr/share/qemu/qboot.rom";

/// `Err(reason)` when QEMU cannot be run here.
pub fn qemu_available() -> Result<(), String> {
    match Command::new("qemu-system-x86_64").arg("--version").output() {
        Ok(out) if out.status.success() => Ok(()),
        Ok(out) => Err(format!(
            "`qemu-system-x86_64 --version` failed: {}",
            out.status
        )),
        Err(e) => Err(format!(
            "qemu-system-x86_64 is not installed ({e}); apt-get install qemu-system-x86"
        )),
    }
}

/// The common machine arguments; `backend` is the `-object` for the RAM.
fn machine_args(backend: String, mib: u64) -> Vec<String> {
    let mut args: Vec<String> = [
        "-machine",
        "q35,memory-backend=mem,accel=kvm:tcg",
        "-object",
        &backend,
        "-m",
        &format!("{mib}M"),
        "-nodefaults",
        "-display",
        "none",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if Path::new(QBOOT).exists() {
        args.extend(["-bios".to_owned(), QBOOT.to_owned()]);
    }
    args
}

/// The `qemu_args` a destination needs to receive a lab VM of `mib` MiB.
pub fn destination_args(mib: u64) -> Vec<String> {
    machine_args(format!("memory-backend-ram,id=mem,size={mib}M"), mib)
}

/// A source VM started by the lab.
#[derive(Debug, Clone)]
pub struct LabVm {
    pub name: String,
    pub pid: u32,
    /// The QMP socket evac uses.
    pub qmp: PathBuf,
    /// A second QMP socket for the test to watch the VM with.
    pub monitor: PathBuf,
    pub mib: u64,
}

/// Owns the processes of a test.
pub struct Lab {
    pub dir: PathBuf,
    children: Vec<Child>,
    adopted: Vec<u32>,
}

impl Lab {
    pub fn new(dir: &Path) -> Lab {
        Lab {
            dir: dir.to_owned(),
            children: Vec::new(),
            adopted: Vec::new(),
        }
    }

    /// Starts a running VM of `mib` MiB whose RAM is a file of random bytes
    /// (so every page is sent), listening for QMP at `<dir>/<name>.qmp`.
    pub fn start_vm(&mut self, name: &str, mib: u64) -> std::io::Result<LabVm> {
        let mem = self.dir.join(format!("{name}.mem"));
        let mut file = std::fs::File::create(&mem)?;
        let mut random = std::fs::File::open("/dev/urandom")?;
        let mut chunk = vec![0u8; 1 << 20];
        for _ in 0..mib {
            std::io::Read::read_exact(&mut random, &mut chunk)?;
            file.write_all(&chunk)?;
        }
        drop(file);
        let qmp = self.dir.join(format!("{name}.qmp"));
        let log = std::fs::File::create(self.dir.join(format!("{name}.log")))?;
        let mut args = machine_args(
            format!(
                "memory-backend-file,id=mem,size={mib}M,mem-path={},share=on",
                mem.display()
            ),
            mib,
        );
        let monitor = self.dir.join(format!("{name}.mon.qmp"));
        args.extend([
            "-qmp".to_owned(),
            format!("unix:{},server=on,wait=off", qmp.display()),
        ]);
        args.extend([
            "-qmp".to_owned(),
            format!("unix:{},server=on,wait=off", monitor.display()),
        ]);
        let child = {
            use std::os::unix::process::CommandExt;
            Command::new("qemu-system-x86_64")
                .args(&args)
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log)
                .process_group(0)
                .spawn()?
        };
        let pid = child.id();
        self.children.push(child);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !qmp.exists() {
            if std::time::Instant::now() > deadline {
                return Err(std::io::Error::other(format!(
                    "{name}: no QMP socket after 10 s"
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(LabVm {
            name: name.to_owned(),
            pid,
            qmp,
            monitor,
            mib,
        })
    }

    /// Kills `pid` too when the lab is dropped (e.g. a destination QEMU).
    pub fn adopt(&mut self, pid: u32) {
        self.adopted.push(pid);
    }

    /// Whether a process the lab started has exited (reaping it).
    pub fn exited(&mut self, pid: u32) -> bool {
        match self.children.iter_mut().find(|c| c.id() == pid) {
            Some(child) => child.try_wait().map(|s| s.is_some()).unwrap_or(true),
            None => !pid_alive(pid),
        }
    }

    /// An inventory for `vms` on one source host `src` and one destination
    /// `dst` on loopback.
    pub fn inventory(&self, policy: &str, vms: &[LabVm], extra_migration: &str) -> String {
        let mut text = format!(
            r#"name = "lab"
run_dir = "{dir}"
[controller]
policy = "{policy}"
period = "500 ms"
[migration]
downtime_limit = "300 ms"
{extra_migration}
[[host]]
name = "src"
site = "source"
nic = "1 Gbps"
[[host]]
name = "dst"
site = "destination"
nic = "1 Gbps"
migration_address = "127.0.0.1"
"#,
            dir = self.dir.display()
        );
        for vm in vms {
            let args: Vec<String> = destination_args(vm.mib)
                .iter()
                .map(|a| format!("{a:?}"))
                .collect();
            text += &format!(
                "[[vm]]\nname = \"{}\"\nhost = \"src\"\nqmp = \"{}\"\nqemu_args = [{}]\n",
                vm.name,
                vm.qmp.display(),
                args.join(", ")
            );
        }
        text
    }
}

/// The first process whose command line contains `needle`.
pub fn find_pid(needle: &str) -> Option<u32> {
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .find_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            (cmdline.contains(needle) && pid_alive(pid)).then_some(pid)
        })
}

/// Whether a process exists (and is not a zombie).
pub fn pid_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for pid in &self.adopted {
            if pid_alive(*pid) {
                // SAFETY: kill(2) on a pid we were handed; no memory is touched.
                unsafe {
                    libc::kill(*pid as i32, libc::SIGKILL);
                }
            }
        }
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
