//! The lab's QEMU VMs: small real VMs (no disk, qboot or the dirtying
//! guest as firmware, RAM of random bytes, of a marker, or anonymous),
//! started as source VMs for evac to migrate, each with a QMP socket for
//! evac and one for the test, owned by a [`Lab`] that kills them (by pid)
//! when dropped; and the inventories that point evac at them.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use evac_model::BytesPerSec;

use crate::curve::DirtyRegion;
use crate::mix::Mix;
use crate::process::{kill, kill_under, pid_alive};

mod guest;
mod inventory;

#[cfg(feature = "libvirt")]
pub(crate) use guest::dirty_guest_image;
use guest::dirty_regions_image;
pub use guest::{
    dirty_guest_available, DIRTY_FILL_PATTERN, DIRTY_FILL_START, DIRTY_GUEST, DIRTY_GUEST_MAGIC,
    DIRTY_WORKING_SET_START,
};

/// qboot: the firmware that boots fastest; a guest with no disk spins in it,
/// "running".
pub const QBOOT: &str = "/usr/share/qemu/qboot.rom";

/// The common machine arguments; `backend` is the `-object` for the RAM,
/// `bios` a firmware image replacing the default one (of the same size).
fn machine_args(backend: String, mib: u64, bios: Option<&Path>) -> Vec<String> {
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
    if let Some(bios) = bios {
        args.extend(["-bios".to_owned(), bios.display().to_string()]);
    } else if Path::new(QBOOT).exists() {
        args.extend(["-bios".to_owned(), QBOOT.to_owned()]);
    }
    args
}

/// The `qemu_args` a destination needs to receive a lab VM of `mib` MiB.
pub fn destination_args(mib: u64) -> Vec<String> {
    machine_args(format!("memory-backend-ram,id=mem,size={mib}M"), mib, None)
}

/// What a lab VM's RAM is.
#[derive(Clone, Copy)]
enum Ram<'a> {
    /// A shared file of random bytes.
    Random,
    /// A shared file of `marker` repeated.
    Marker(&'a [u8]),
    /// Anonymous memory (`memory-backend-ram`), zero until the guest writes.
    Anonymous,
    /// A shared file whose pages are zero, text-like or random ([`Mix`]).
    Mixed(Mix),
}

/// What a lab VM runs and what its RAM holds ([`Lab::start_guest`]).
#[derive(Debug, Clone, Copy)]
pub enum Guest<'a> {
    /// qboot, idle, on a file of random bytes (so every page is sent).
    Idle,
    /// qboot, idle, on a file of `marker` (not empty) repeated: a packet
    /// capture of its migration finds the marker when the stream is plain
    /// text (the TLS tests).
    Marker(&'a [u8]),
    /// qboot on a file of `mix`'s zero, text-like and random pages, written
    /// before QEMU starts (the guest, idle, leaves them be but for the few
    /// pages its firmware writes below 1 MiB).
    Mixed(Mix),
    /// The dirtying guest ([`DIRTY_GUEST`], a firmware image standing in
    /// for qboot) on a file of random bytes: each of `regions` (1 to
    /// [`MAX_DIRTY_REGIONS`](crate::curve::MAX_DIRTY_REGIONS), laid one
    /// after another from [`DIRTY_WORKING_SET_START`], 16 MiB) is written
    /// one 4 KiB page after another at its own rate, wrapping around, all
    /// paced from the same wake-ups (a page written counts 4096 bytes; a
    /// rate is rounded to whole pages per second; 0 makes an idle region).
    /// Needs 16 MiB + the regions' MiB <= `mib` and <= 2 GiB.
    ///
    /// The memory dirtied at least once within a time is then known from
    /// the parameters alone ([`crate::curve::dirtied_within`]): a small fast
    /// region and a large slow one make a curve that grows fast, then
    /// slowly; the write counters ([`crate::curve::WriteCounters`]) read
    /// how many pages each region really got. The VM's RAM layout is the
    /// same as qboot's, so [`destination_args`] still fit (the image travels
    /// with the migration, as the firmware's RAM block) and the guest keeps
    /// dirtying at the destination (a reset there would bring back qboot).
    ///
    /// The guest sleeps between its bursts of writes (one per ~1 ms timer
    /// tick), so it costs the host little CPU: 2-18 % of a core from 2 to
    /// 64 MB/s outside a migration (a version that polled the TSC held
    /// 50-90 % of a core whatever the rate; `docs/lab.md`). Under this lab's
    /// paravirtual KVM it reached about 200 MiB/s while dirty logging was on
    /// (each first write to a page traps).
    Dirtying(&'a [DirtyRegion]),
    /// [`Guest::Dirtying`] on **anonymous** RAM (`memory-backend-ram`, not a
    /// shared file): what postcopy needs (QEMU cannot postcopy file-backed
    /// shared RAM, and evac refuses to). At boot the guest first writes
    /// [`DIRTY_FILL_PATTERN`] into the first dword of every page from 1 MiB
    /// ([`DIRTY_FILL_START`]) to the top of its RAM (at most 2 GiB), so no
    /// page is zero and QEMU sends each in full, like the file-backed VMs'
    /// random bytes (one dword a page: this lab's KVM emulates each guest
    /// instruction; 128 MiB take well under a second); then it dirties its
    /// regions as usual (the first dwords count up from the pattern).
    FilledDirtying(&'a [DirtyRegion]),
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
        self.start_vm_in(name, mib, None)
    }

    /// [`Lab::start_vm`] inside the network namespace `netns` (through
    /// `ip netns exec`, which execs QEMU: the pid is QEMU's). QMP is a unix
    /// socket in `dir`, reachable from every namespace.
    pub fn start_vm_in(&mut self, name: &str, mib: u64, netns: Option<&str>) -> std::io::Result<LabVm> {
        self.start_guest(name, mib, Guest::Idle, netns)
    }

    /// A VM whose guest dirties `working_set_mib` MiB at `dirty_rate`
    /// ([`Guest::Dirtying`] of one region), inside `netns` as
    /// [`Lab::start_vm_in`].
    pub fn start_dirtying_vm_in(
        &mut self,
        name: &str,
        mib: u64,
        dirty_rate: BytesPerSec,
        working_set_mib: u64,
        netns: Option<&str>,
    ) -> std::io::Result<LabVm> {
        let region = DirtyRegion {
            rate: dirty_rate,
            mib: working_set_mib,
        };
        self.start_guest(name, mib, Guest::Dirtying(&[region]), netns)
    }

    /// Starts a VM of `mib` MiB running `guest` on the RAM it needs, inside
    /// the network namespace `netns` as [`Lab::start_vm_in`], and waits for
    /// its QMP socket. The dirtying guests' image is written to
    /// `<dir>/<name>.bios`.
    pub fn start_guest(
        &mut self,
        name: &str,
        mib: u64,
        guest: Guest<'_>,
        netns: Option<&str>,
    ) -> std::io::Result<LabVm> {
        let (ram, dirtying) = match guest {
            Guest::Idle => (Ram::Random, None),
            Guest::Marker([]) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    "empty marker",
                ))
            }
            Guest::Marker(marker) => (Ram::Marker(marker), None),
            Guest::Mixed(mix) => (Ram::Mixed(mix), None),
            Guest::Dirtying(regions) => (Ram::Random, Some((regions, false))),
            Guest::FilledDirtying(regions) => (Ram::Anonymous, Some((regions, true))),
        };
        let bios = match dirtying {
            Some((regions, filled)) => {
                let image = dirty_regions_image(mib, regions, filled)?;
                let bios = self.dir.join(format!("{name}.bios"));
                std::fs::write(&bios, image)?;
                Some(bios)
            }
            None => None,
        };
        let backend = write_ram(&self.dir, name, mib, ram)?;
        let vm = self.spawn(name, mib, netns, bios.as_deref(), backend)?;
        wait_ready(std::slice::from_ref(&vm), Duration::from_secs(10))?;
        Ok(vm)
    }

    /// Starts the VMs of `specs` (a fleet): their RAM files and firmware
    /// images are written by `parallel` threads at once, then their QEMUs
    /// start in waves of [`BOOT_WAVE`], each wave waited for (its QMP
    /// sockets) before the next: a boot of hundreds of VMs neither runs
    /// hundreds of QEMU initialisations on two cores at once nor waits for
    /// them one by one. The VMs are returned in the order of `specs`.
    pub fn start_fleet(&mut self, specs: &[VmSpec], parallel: usize) -> std::io::Result<Vec<LabVm>> {
        let parallel = parallel.clamp(1, specs.len().max(1));
        let next = std::sync::atomic::AtomicUsize::new(0);
        let prepared: Vec<std::io::Result<(String, Option<PathBuf>)>> = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..parallel)
                .map(|_| {
                    scope.spawn(|| {
                        let mut done = Vec::new();
                        loop {
                            let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            let Some(spec) = specs.get(i) else { break done };
                            done.push((i, self.prepare(spec)));
                        }
                    })
                })
                .collect();
            let mut all: Vec<_> = workers
                .into_iter()
                .flat_map(|w| w.join().expect("a RAM file writer panicked"))
                .collect();
            all.sort_by_key(|(i, _)| *i);
            all.into_iter().map(|(_, r)| r).collect()
        });
        let mut vms = Vec::with_capacity(specs.len());
        for (wave_specs, wave_prepared) in specs.chunks(BOOT_WAVE).zip(prepared.chunks(BOOT_WAVE)) {
            let mut wave = Vec::with_capacity(wave_specs.len());
            for (spec, prepared) in wave_specs.iter().zip(wave_prepared) {
                let (backend, bios) = match prepared {
                    Ok(p) => p.clone(),
                    Err(e) => return Err(std::io::Error::new(e.kind(), format!("VM {}: {e}", spec.name))),
                };
                wave.push(self.spawn(
                    &spec.name,
                    spec.mib,
                    spec.netns.as_deref(),
                    bios.as_deref(),
                    backend,
                )?);
            }
            // Ten seconds as for one VM, plus a second per VM of the wave
            // on a machine with few cores.
            wait_ready(&wave, Duration::from_secs(10 + wave.len() as u64))?;
            vms.extend(wave);
        }
        Ok(vms)
    }

    /// A VM's RAM file (the `-object` naming it) and firmware image.
    fn prepare(&self, spec: &VmSpec) -> std::io::Result<(String, Option<PathBuf>)> {
        let bios = if spec.dirty.is_empty() {
            None
        } else {
            let image = dirty_regions_image(spec.mib, &spec.dirty, false)?;
            let bios = self.dir.join(format!("{}.bios", spec.name));
            std::fs::write(&bios, image)?;
            Some(bios)
        };
        Ok((write_ram(&self.dir, &spec.name, spec.mib, Ram::Random)?, bios))
    }

    /// Starts QEMU for a VM whose RAM is `backend` (no waiting).
    fn spawn(
        &mut self,
        name: &str,
        mib: u64,
        netns: Option<&str>,
        bios: Option<&Path>,
        backend: String,
    ) -> std::io::Result<LabVm> {
        let qmp = self.dir.join(format!("{name}.qmp"));
        let log = std::fs::File::create(self.dir.join(format!("{name}.log")))?;
        let mut args = machine_args(backend, mib, bios);
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
            let mut command = match netns {
                Some(ns) => {
                    let mut c = Command::new("ip");
                    c.args(["netns", "exec", ns, "qemu-system-x86_64"]);
                    c
                }
                None => Command::new("qemu-system-x86_64"),
            };
            command
                .args(&args)
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log)
                .process_group(0)
                .spawn()?
        };
        let pid = child.id();
        self.children.push(child);
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

    /// Kills every destination QEMU a real run left (its `placements`)
    /// when the lab is dropped, as [`Lab::adopt`].
    pub fn adopt_destinations(&mut self, placements: &[evac_qemu::Placement]) {
        for placement in placements {
            if let evac_qemu::Placement::Destination { pid, .. } = placement {
                self.adopt(*pid);
            }
        }
    }

    /// Whether a process the lab started has exited (reaping it).
    pub fn exited(&mut self, pid: u32) -> bool {
        match self.children.iter_mut().find(|c| c.id() == pid) {
            Some(child) => child.try_wait().map(|s| s.is_some()).unwrap_or(true),
            None => !pid_alive(pid),
        }
    }
}

/// How many QEMUs [`Lab::start_fleet`] starts at once.
pub const BOOT_WAVE: usize = 16;

/// One VM of a fleet for [`Lab::start_fleet`]: RAM of random bytes, in
/// network namespace `netns`; with `dirty` regions, the dirtying guest of
/// [`Guest::Dirtying`] (one region: [`Lab::start_dirtying_vm_in`]'s).
#[derive(Debug, Clone)]
pub struct VmSpec {
    pub name: String,
    pub mib: u64,
    pub netns: Option<String>,
    pub dirty: Vec<DirtyRegion>,
}

/// Writes VM `name`'s RAM file in `dir` (none for anonymous RAM); returns
/// the `-object` of its memory backend.
fn write_ram(dir: &Path, name: &str, mib: u64, ram: Ram<'_>) -> std::io::Result<String> {
    Ok(match ram {
        Ram::Anonymous => format!("memory-backend-ram,id=mem,size={mib}M"),
        Ram::Mixed(mix) => {
            let mem = dir.join(format!("{name}.mem"));
            let mut file = std::io::BufWriter::new(std::fs::File::create(&mem)?);
            let mut page = [0u8; 4096];
            for index in 0..mib * 256 {
                mix.page(index, &mut page);
                file.write_all(&page)?;
            }
            file.flush()?;
            drop(file);
            format!(
                "memory-backend-file,id=mem,size={mib}M,mem-path={},share=on",
                mem.display()
            )
        }
        Ram::Random | Ram::Marker(_) => {
            let mem = dir.join(format!("{name}.mem"));
            let mut file = std::fs::File::create(&mem)?;
            let mut random = std::fs::File::open("/dev/urandom")?;
            let mut chunk = vec![0u8; 1 << 20];
            if let Ram::Marker(marker) = ram {
                for (i, byte) in chunk.iter_mut().enumerate() {
                    *byte = marker[i % marker.len()];
                }
            }
            for _ in 0..mib {
                if matches!(ram, Ram::Random) {
                    std::io::Read::read_exact(&mut random, &mut chunk)?;
                }
                file.write_all(&chunk)?;
            }
            drop(file);
            format!(
                "memory-backend-file,id=mem,size={mib}M,mem-path={},share=on",
                mem.display()
            )
        }
    })
}

/// Waits until every VM of `vms` has its QMP socket, at most `timeout` in
/// all; an error names the VMs without one (and those whose QEMU exited).
fn wait_ready(vms: &[LabVm], timeout: Duration) -> std::io::Result<()> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let missing: Vec<&LabVm> = vms.iter().filter(|vm| !vm.qmp.exists()).collect();
        if missing.is_empty() {
            return Ok(());
        }
        let exited = missing.iter().any(|vm| !pid_alive(vm.pid));
        if exited || std::time::Instant::now() > deadline {
            let names: Vec<String> = missing
                .iter()
                .map(|vm| {
                    let gone = if pid_alive(vm.pid) {
                        ""
                    } else {
                        " (QEMU exited; see its .log)"
                    };
                    format!("{}{gone}", vm.name)
                })
                .collect();
            return Err(std::io::Error::other(format!(
                "no QMP socket after {} s: {}",
                timeout.as_secs(),
                names.join(", ")
            )));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for &pid in &self.adopted {
            if pid_alive(pid) {
                kill(pid, libc::SIGKILL);
            }
        }
        // All signalled first, then all reaped: a fleet's QEMUs exit
        // together instead of one after the other.
        for child in &mut self.children {
            let _ = child.kill();
        }
        for child in &mut self.children {
            let _ = child.wait();
        }
        // Destination QEMUs evac started for this lab (their QMP sockets
        // and logs are in `dir`, the inventory's run_dir) outlive evac on
        // purpose; a test that panics before adopting them must not leak them.
        kill_under(&self.dir);
    }
}
