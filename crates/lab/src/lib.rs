//! # evac-lab
//!
//! The lab: a data center in miniature on one machine, for tests, examples
//! and `evac lab`. Network namespaces stand in for hosts, a veth pair shaped
//! by `tc tbf` for the WAN ([`LabNetwork`]), small real QEMU VMs for the
//! fleet ([`Lab`]), and a freestanding guest that dirties memory at a chosen
//! rate ([`DIRTY_GUEST`], assembled from `guest/dirty.S` by `build.rs`).
//!
//! It lives apart from `evac-qemu` so that the real backend stays what
//! operators run, and the lab is what exercises it.
//!
//! `evac lab` builds on these modules:
//! - [`topology`]: a namespace per host, a router per site, and the WAN
//!   between them: `tbf` for bandwidth (following the trace), the
//!   [`delay`] line on a [`tun`] pair for latency, the TCP window in the
//!   hosts' socket-buffer sysctls;
//! - [`instance`]: a lab built from a scenario file (namespaces, VMs, an
//!   inventory), torn down when dropped;
//! - [`evacuate`]: its evacuation by the real run loop beside the
//!   simulator's prediction, and the errors between them;
//! - [`cleanup`]: `evac lab down`, which finds labs by name, leftovers of
//!   killed processes included;
//! - [`probe`]: round trips and TCP goodput measured inside the lab.
//!
//! Every process a [`Lab`] starts or is told about ([`Lab::adopt`]) is killed
//! by its pid when the lab is dropped, so a failing test cleans up too.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use evac_model::BytesPerSec;

use evac_qemu::Inventory;

pub mod capture;
pub mod cleanup;
pub mod delay;
pub mod evacuate;
pub mod fit;
pub mod instance;
pub mod probe;
pub mod topology;
pub mod tun;

/// qboot: the firmware that boots fastest; a guest with no disk spins in it,
/// "running".
pub const QBOOT: &str = "/usr/share/qemu/qboot.rom";

/// The environment variable under which a missing prerequisite fails a
/// test instead of skipping it; `.ci/run` sets it, so CI cannot go green by
/// skipping the real-QEMU tests.
pub const REQUIRE_LAB: &str = "EVAC_REQUIRE_LAB";

/// Whether [`REQUIRE_LAB`] is set to something other than empty or `0`.
pub fn lab_required() -> bool {
    std::env::var_os(REQUIRE_LAB).is_some_and(|v| !v.is_empty() && v != "0")
}

/// Whether a test must skip for want of what one of `checks` looks for
/// (e.g. [`qemu_available`]); when it must, says why on stderr, so a skip is
/// never silent.
///
/// # Panics
///
/// With the reason, instead of skipping, when [`REQUIRE_LAB`] is set: a
/// machine meant to run the lab tests must not pass them by skipping.
pub fn skip_without(checks: &[fn() -> Result<(), String>]) -> bool {
    match checks.iter().try_for_each(|check| check()) {
        Ok(()) => false,
        Err(why) if lab_required() => {
            panic!("{REQUIRE_LAB} is set but this test cannot run: {why}")
        }
        Err(why) => {
            eprintln!("SKIPPED: {why}");
            true
        }
    }
}

/// `Err(reason)` when QEMU cannot be run here.
pub fn qemu_available() -> Result<(), String> {
    match Command::new("qemu-system-x86_64").arg("--version").output() {
        Ok(out) if out.status.success() => Ok(()),
        Ok(out) => Err(format!("`qemu-system-x86_64 --version` failed: {}", out.status)),
        Err(e) => Err(format!(
            "qemu-system-x86_64 is not installed ({e}); apt-get install qemu-system-x86"
        )),
    }
}

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

/// The dirtying guest, a 64 KiB x86 firmware image assembled from
/// `guest/dirty.S` by `build.rs`; empty when it could not be built (see
/// [`dirty_guest_available`]).
///
/// The CPU starts in it at the reset vector; it enters 32-bit protected mode
/// (flat segments, no paging), measures the TSC's rate against PIT channel 2
/// for 50 ms, then writes into the working set's pages one after another,
/// each when the TSC says it is due, sleeping (`hlt`) in between until the
/// local APIC's timer (about 1 kHz) wakes it. Its parameters are a
/// 32-byte block at offset 0: the magic [`DIRTY_GUEST_MAGIC`], then u32s
/// (little-endian) pages per second, working-set start address, working-set
/// pages, TSC kHz (0: calibrate).
pub const DIRTY_GUEST: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/dirty-guest.bin"));

/// Why [`DIRTY_GUEST`] is empty, or "".
const DIRTY_GUEST_ERROR: &str = include_str!(concat!(env!("OUT_DIR"), "/dirty-guest.err"));

/// The first 16 bytes of [`DIRTY_GUEST`].
pub const DIRTY_GUEST_MAGIC: &[u8; 16] = b"EVACDIRTYGUEST01";

/// Where the dirtying guest's working set starts (guest-physical).
pub const DIRTY_WORKING_SET_START: u64 = 16 << 20;

/// The dword [`Lab::start_filled_dirtying_vm`]'s guest writes at the start
/// of each page of its RAM from 1 MiB up at boot (`FILL` in
/// `guest/dirty.S`).
pub const DIRTY_FILL_PATTERN: u32 = 0x5a17_e5ac;

/// Where [`Lab::start_filled_dirtying_vm`]'s fill starts (guest-physical).
pub const DIRTY_FILL_START: u64 = 1 << 20;

/// `Err(reason)` when the dirtying guest was not built.
pub fn dirty_guest_available() -> Result<(), String> {
    if DIRTY_GUEST.len() == 65536 && DIRTY_GUEST.starts_with(DIRTY_GUEST_MAGIC) {
        Ok(())
    } else if DIRTY_GUEST_ERROR.is_empty() {
        Err("the dirtying guest image is malformed".into())
    } else {
        Err(format!("the dirtying guest was not built: {DIRTY_GUEST_ERROR}"))
    }
}

/// The size of the firmware a destination gets from [`destination_args`]:
/// the dirtying guest's image must match it (same RAM block layout).
fn default_bios_size() -> std::io::Result<u64> {
    if Path::new(QBOOT).exists() {
        Ok(std::fs::metadata(QBOOT)?.len())
    } else {
        // QEMU's default for q35: SeaBIOS's bios-256k.bin.
        Ok(256 << 10)
    }
}

/// [`DIRTY_GUEST`] with its parameters set, padded at the front (the image
/// sits at the top of the 4 GiB space) to the default firmware's size.
fn dirty_guest_image(
    mib: u64,
    dirty_rate: BytesPerSec,
    working_set_mib: u64,
    fill: bool,
) -> std::io::Result<Vec<u8>> {
    dirty_guest_available().map_err(std::io::Error::other)?;
    let invalid = |why: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, why);
    let start_mib = DIRTY_WORKING_SET_START >> 20;
    // The guest addresses 32 bits, without paging; q35 maps at least the
    // first 2 GiB of RAM below 4 GiB.
    if working_set_mib == 0 || start_mib + working_set_mib > mib.min(2048) {
        return Err(invalid(format!(
            "a working set of {working_set_mib} MiB from {start_mib} MiB does not fit in {} MiB",
            mib.min(2048)
        )));
    }
    let pages_per_sec = match dirty_rate.0 {
        rate if rate <= 0.0 => 0,
        rate => ((rate / 4096.0).round() as u64).max(1),
    };
    let pages_per_sec =
        u32::try_from(pages_per_sec).map_err(|_| invalid(format!("dirty rate {dirty_rate} is too high")))?;
    let size = default_bios_size()? as usize;
    if size < DIRTY_GUEST.len() || (size & 0xffff) != 0 {
        return Err(std::io::Error::other(format!(
            "the default firmware is {size} bytes: no room for the dirtying guest"
        )));
    }
    let mut image = vec![0u8; size - DIRTY_GUEST.len()];
    image.extend_from_slice(DIRTY_GUEST);
    let params = size - DIRTY_GUEST.len() + 16;
    // The fill ends at the top of the RAM the guest addresses (below 2 GiB).
    let fill_end = if fill { (mib.min(2048) << 20) as u32 } else { 0 };
    let words = [
        pages_per_sec,
        DIRTY_WORKING_SET_START as u32,
        (working_set_mib * 256) as u32,
        0,
        fill_end,
    ];
    for (i, word) in words.iter().enumerate() {
        image[params + 4 * i..params + 4 * i + 4].copy_from_slice(&word.to_le_bytes());
    }
    Ok(image)
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

/// What a lab guest's RAM holds, page by page: a share of zero pages, a
/// share of text-like pages (words and spaces, which zstd shrinks about
/// fourfold), the rest random bytes (which it cannot shrink). Which page is
/// which is drawn from a hash of its index ([`Mix::kind`]), so a test knows
/// the truth page by page.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Mix {
    pub zero: f64,
    pub text: f64,
}

/// A page of a [`Mix`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageKind {
    Zero,
    Text,
    Random,
}

impl Mix {
    /// The kind of page `index` (the 4 KiB page at byte `index × 4096` of
    /// the RAM file).
    pub fn kind(&self, index: u64) -> PageKind {
        let u = (splitmix(index) >> 11) as f64 / (1u64 << 53) as f64;
        if u < self.zero {
            PageKind::Zero
        } else if u < self.zero + self.text {
            PageKind::Text
        } else {
            PageKind::Random
        }
    }

    /// Page `index`'s 4096 bytes.
    pub fn page(&self, index: u64, out: &mut [u8; 4096]) {
        const WORDS: [&str; 32] = [
            "the",
            "evacuation",
            "of",
            "a",
            "data",
            "center",
            "moves",
            "every",
            "virtual",
            "machine",
            "over",
            "wide",
            "area",
            "network",
            "before",
            "power",
            "runs",
            "out",
            "and",
            "memory",
            "pages",
            "are",
            "sent",
            "in",
            "rounds",
            "while",
            "guest",
            "keeps",
            "writing",
            "to",
            "them",
            "again",
        ];
        let mut x = splitmix(index ^ 0x9e37_79b9_7f4a_7c15);
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        match self.kind(index) {
            PageKind::Zero => out.fill(0),
            PageKind::Random => {
                for chunk in out.chunks_mut(8) {
                    chunk.copy_from_slice(&next().to_le_bytes());
                }
            }
            PageKind::Text => {
                let mut at = 0;
                while at < out.len() {
                    let r = next();
                    let word = WORDS[(r % 32) as usize].as_bytes();
                    for &b in word.iter().chain(if r & 0x700 == 0 { b"\n" } else { b" " }) {
                        if at < out.len() {
                            out[at] = b;
                            at += 1;
                        }
                    }
                }
            }
        }
    }

    /// How many of the first `pages` pages are zero pages.
    pub fn zero_pages(&self, pages: u64) -> u64 {
        (0..pages).filter(|&i| self.kind(i) == PageKind::Zero).count() as u64
    }
}

/// SplitMix64's output for `x`: a well-mixed 64-bit hash.
fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
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
        self.start(name, mib, netns, None, Ram::Random)
    }

    /// [`Lab::start_vm_in`] with RAM that is `marker` repeated instead of
    /// random bytes: a packet capture of its migration finds the marker
    /// when the stream is plain text (the TLS tests).
    pub fn start_marker_vm_in(
        &mut self,
        name: &str,
        mib: u64,
        marker: &[u8],
        netns: Option<&str>,
    ) -> std::io::Result<LabVm> {
        if marker.is_empty() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "empty marker",
            ));
        }
        self.start(name, mib, netns, None, Ram::Marker(marker))
    }

    /// [`Lab::start_vm_in`] with RAM of `mix`'s zero, text-like and random
    /// pages, written before QEMU starts (the guest, idle, leaves them be
    /// but for the few pages its firmware writes below 1 MiB).
    pub fn start_mixed_vm_in(
        &mut self,
        name: &str,
        mib: u64,
        mix: Mix,
        netns: Option<&str>,
    ) -> std::io::Result<LabVm> {
        self.start(name, mib, netns, None, Ram::Mixed(mix))
    }

    /// Starts a VM like [`Lab::start_vm`] whose guest dirties memory: it
    /// writes into one 4 KiB page after another of a working set of
    /// `working_set_mib` MiB starting at 16 MiB ([`DIRTY_WORKING_SET_START`]),
    /// wrapping around, at `dirty_rate` bytes per second (a page written
    /// counts 4096 bytes; the rate is rounded to whole pages per second; 0
    /// makes an idle guest). The guest is [`DIRTY_GUEST`], a firmware image
    /// standing in for qboot: the VM's RAM layout is the same as
    /// [`Lab::start_vm`]'s, so [`destination_args`] still fit (the image
    /// travels with the migration, as the firmware's RAM block) and the guest
    /// keeps dirtying at the destination (a reset there would bring back
    /// qboot). Needs 16 MiB + `working_set_mib` <= `mib` and <= 2 GiB.
    ///
    /// The guest sleeps between its bursts of writes (one per ~1 ms timer
    /// tick), so it costs the host little CPU: 2-18 % of a core from 2 to
    /// 64 MB/s outside a migration (a version that polled the TSC held
    /// 50-90 % of a core whatever the rate; `docs/lab.md`). Under this lab's
    /// paravirtual KVM it reached about 200 MiB/s while dirty logging was on
    /// (each first write to a page traps).
    pub fn start_dirtying_vm(
        &mut self,
        name: &str,
        mib: u64,
        dirty_rate: BytesPerSec,
        working_set_mib: u64,
    ) -> std::io::Result<LabVm> {
        self.start_dirtying_vm_in(name, mib, dirty_rate, working_set_mib, None)
    }

    /// [`Lab::start_dirtying_vm`] inside the network namespace `netns`, as
    /// [`Lab::start_vm_in`].
    pub fn start_dirtying_vm_in(
        &mut self,
        name: &str,
        mib: u64,
        dirty_rate: BytesPerSec,
        working_set_mib: u64,
        netns: Option<&str>,
    ) -> std::io::Result<LabVm> {
        let image = dirty_guest_image(mib, dirty_rate, working_set_mib, false)?;
        let bios = self.dir.join(format!("{name}.bios"));
        std::fs::write(&bios, image)?;
        self.start(name, mib, netns, Some(&bios), Ram::Random)
    }

    /// The dirtying guest of [`Lab::start_dirtying_vm`] on **anonymous**
    /// RAM (`memory-backend-ram`, not a shared file): what postcopy needs
    /// (QEMU cannot postcopy file-backed shared RAM, and evac refuses to).
    /// At boot the guest first writes [`DIRTY_FILL_PATTERN`] into the first
    /// dword of every page from 1 MiB ([`DIRTY_FILL_START`]) to the top of
    /// its RAM (at most 2 GiB), so no page is zero and QEMU sends each in
    /// full, like the file-backed VMs' random bytes (one dword a page: this
    /// lab's KVM emulates each guest instruction; 128 MiB take well under a
    /// second); then it dirties its working set as usual (the working set's
    /// first dwords count up from the pattern).
    pub fn start_filled_dirtying_vm(
        &mut self,
        name: &str,
        mib: u64,
        dirty_rate: BytesPerSec,
        working_set_mib: u64,
    ) -> std::io::Result<LabVm> {
        let image = dirty_guest_image(mib, dirty_rate, working_set_mib, true)?;
        let bios = self.dir.join(format!("{name}.bios"));
        std::fs::write(&bios, image)?;
        self.start(name, mib, None, Some(&bios), Ram::Anonymous)
    }

    fn start(
        &mut self,
        name: &str,
        mib: u64,
        netns: Option<&str>,
        bios: Option<&Path>,
        ram: Ram<'_>,
    ) -> std::io::Result<LabVm> {
        let backend = match ram {
            Ram::Anonymous => format!("memory-backend-ram,id=mem,size={mib}M"),
            Ram::Mixed(mix) => {
                let mem = self.dir.join(format!("{name}.mem"));
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
                let mem = self.dir.join(format!("{name}.mem"));
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
        };
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
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !qmp.exists() {
            if std::time::Instant::now() > deadline {
                return Err(std::io::Error::other(format!("{name}: no QMP socket after 10 s")));
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
    /// [`Lab::inventory`], parsed.
    pub fn parsed_inventory(&self, policy: &str, vms: &[LabVm], extra_migration: &str) -> Inventory {
        let text = self.inventory(policy, vms, extra_migration);
        Inventory::from_str_at(&text, Path::new("lab.toml")).expect("the lab writes valid inventories")
    }

    pub fn inventory(&self, policy: &str, vms: &[LabVm], extra_migration: &str) -> String {
        self.inventory_with_hosts(
            policy,
            vms,
            extra_migration,
            "[[host]]\nname = \"src\"\nsite = \"source\"\nnic = \"1 Gbps\"\n\
             [[host]]\nname = \"dst\"\nsite = \"destination\"\nnic = \"1 Gbps\"\n\
             migration_address = \"127.0.0.1\"\n",
        )
    }

    /// An inventory for `vms` on host `src` = the namespace `net.src` and a
    /// destination `dst` = `net.dst`, whose QEMUs are started there by
    /// `ip netns exec` and listen on its veth address.
    pub fn inventory_in(
        &self,
        net: &LabNetwork,
        policy: &str,
        vms: &[LabVm],
        extra_migration: &str,
    ) -> String {
        let hosts = format!(
            r#"[[host]]
name = "src"
site = "source"
nic = "1 Gbps"
netns = "{src}"
[[host]]
name = "dst"
site = "destination"
nic = "1 Gbps"
netns = "{dst}"
migration_address = "{address}"
incoming_command = "ip netns exec {{netns}} qemu-system-x86_64"
"#,
            src = net.src,
            dst = net.dst,
            address = LabNetwork::DST_ADDRESS,
        );
        self.inventory_with_hosts(policy, vms, extra_migration, &hosts)
    }

    fn inventory_with_hosts(
        &self,
        policy: &str,
        vms: &[LabVm],
        extra_migration: &str,
        hosts: &str,
    ) -> String {
        let mut text = format!(
            r#"name = "lab"
run_dir = "{dir}"
[controller]
policy = "{policy}"
period = "500 ms"
[migration]
downtime_limit = "300 ms"
{extra_migration}
{hosts}"#,
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
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|entry| {
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
        // Destination QEMUs evac started for this lab (their QMP sockets
        // and logs are in `dir`, the inventory's run_dir) outlive evac on
        // purpose; a test that panics before adopting them must not leak them.
        for pid in pids_mentioning(&self.dir) {
            // SAFETY: kill(2) on a process whose command line names this
            // lab's own temporary directory: one evac started for it.
            unsafe {
                libc::kill(pid as i32, libc::SIGKILL);
            }
        }
    }
}

/// The processes (other than this one) whose command line mentions `dir`.
fn pids_mentioning(dir: &Path) -> Vec<u32> {
    let mut needle = dir.as_os_str().as_encoded_bytes().to_vec();
    needle.push(b'/');
    if needle.len() < 8 {
        // Never match broadly (`/`, `/tmp`): only a lab's own directory.
        return Vec::new();
    }
    let me = std::process::id();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != me)
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|cmd| cmd.windows(needle.len()).any(|w| w == needle.as_slice()))
        })
        .collect()
}

/// Whether `ip netns add` works here (root, iproute2, kernel support):
/// `Err(reason)` otherwise. Creates and deletes a throw-away namespace.
pub fn netns_available() -> Result<(), String> {
    // SAFETY: geteuid(2) has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err("not running as root".into());
    }
    for tool in ["ip", "tc"] {
        match Command::new(tool).arg("-V").output() {
            Ok(out) if out.status.success() => {}
            Ok(out) => return Err(format!("`{tool} -V` failed: {}", out.status)),
            Err(e) => {
                return Err(format!(
                    "`{tool}` is not installed ({e}); apt-get install iproute2"
                ))
            }
        }
    }
    let probe = format!("evac-{}-probe-{}", std::process::id(), next_id());
    ip(&["netns", "add", &probe]).map_err(|e| format!("`ip netns add` fails: {e}"))?;
    ip(&["netns", "del", &probe]).map_err(|e| format!("`ip netns del` fails: {e}"))?;
    Ok(())
}

/// A number unique in this process.
fn next_id() -> u32 {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// Runs `ip <args>`; `Err` with its stderr when it fails.
pub(crate) fn ip(args: &[&str]) -> std::io::Result<()> {
    run("ip", args)
}

pub(crate) fn run(program: &str, args: &[&str]) -> std::io::Result<()> {
    let out = Command::new(program).args(args).stdin(Stdio::null()).output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(std::io::Error::other(format!(
            "`{program} {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// The egress shaping of the source's veth: a `tbf` qdisc.
#[derive(Debug, Clone, Copy)]
pub struct Shaping {
    /// tbf `rate`, in bits per second.
    pub rate_bps: u64,
    /// tbf `burst`, in bytes.
    pub burst_bytes: u64,
    /// tbf `latency`: the longest a packet may wait in the queue.
    pub latency: Duration,
}

/// Two network namespaces, a source and a destination "host", joined by a
/// veth pair whose source end is shaped: the WAN bottleneck.
///
/// Names are `evac-<pid>-<n>-src` / `-dst`, unique per process and per
/// network. The veth ends (`evac0` in `src`, `evac1` in `dst`) are created
/// directly inside the namespaces, and their addresses
/// ([`LabNetwork::SRC_ADDRESS`], [`LabNetwork::DST_ADDRESS`]) exist only
/// there: nothing touches the initial namespace, no traffic leaves.
///
/// Dropping it deletes both namespaces (`ip netns del`), which removes the
/// veth pair and its qdisc once no process is left inside: drop the
/// [`Lab`] owning the VMs first (declare the network before the lab).
#[derive(Debug)]
pub struct LabNetwork {
    pub src: String,
    pub dst: String,
    pub shaping: Shaping,
}

impl LabNetwork {
    /// The source end's address (in `src`).
    pub const SRC_ADDRESS: &'static str = "10.213.0.1";
    /// The destination end's address (in `dst`): its `migration_address`.
    pub const DST_ADDRESS: &'static str = "10.213.0.2";
    /// The veth end in `src`, whose egress is shaped.
    pub const SRC_DEV: &'static str = "evac0";
    /// The veth end in `dst`.
    pub const DST_DEV: &'static str = "evac1";

    /// Creates the namespaces, the veth pair and the shaping.
    pub fn new(shaping: Shaping) -> std::io::Result<LabNetwork> {
        let base = format!("evac-{}-{}", std::process::id(), next_id());
        let src = format!("{base}-src");
        let dst = format!("{base}-dst");
        ip(&["netns", "add", &src])?;
        // From here on, Drop cleans up whatever was made.
        let mut net = LabNetwork {
            src,
            dst: String::new(),
            shaping,
        };
        ip(&["netns", "add", &dst])?;
        net.dst = dst;
        net.setup()?;
        Ok(net)
    }

    fn setup(&self) -> std::io::Result<()> {
        let (src, dst) = (self.src.as_str(), self.dst.as_str());
        ip(&[
            "-n",
            src,
            "link",
            "add",
            Self::SRC_DEV,
            "type",
            "veth",
            "peer",
            "name",
            Self::DST_DEV,
            "netns",
            dst,
        ])?;
        for (ns, dev, address) in [
            (src, Self::SRC_DEV, Self::SRC_ADDRESS),
            (dst, Self::DST_DEV, Self::DST_ADDRESS),
        ] {
            ip(&["-n", ns, "addr", "add", &format!("{address}/24"), "dev", dev])?;
            ip(&["-n", ns, "link", "set", dev, "up"])?;
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
        }
        let s = self.shaping;
        run(
            "tc",
            &[
                "-n",
                src,
                "qdisc",
                "add",
                "dev",
                Self::SRC_DEV,
                "root",
                "tbf",
                "rate",
                &format!("{}bit", s.rate_bps),
                "burst",
                &format!("{}b", s.burst_bytes),
                "latency",
                &format!("{}ms", s.latency.as_millis()),
            ],
        )
    }

    /// Transmitted bytes of the source's veth end.
    pub fn src_tx_bytes(&self) -> std::io::Result<u64> {
        let out = Command::new("ip")
            .args(["-n", &self.src, "-s", "-j", "link", "show", Self::SRC_DEV])
            .output()?;
        let text = String::from_utf8_lossy(&out.stdout);
        // `"tx":{"bytes":N,` in the JSON.
        text.split("\"tx\":{\"bytes\":")
            .nth(1)
            .and_then(|rest| rest.split([',', '}']).next())
            .and_then(|n| n.trim().parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("no tx bytes in `{text}`")))
    }
}

/// The names of the existing network namespaces (`ip netns list`).
pub fn netns_list() -> std::io::Result<Vec<String>> {
    let out = Command::new("ip").args(["netns", "list"]).output()?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect())
}

impl Drop for LabNetwork {
    fn drop(&mut self) {
        for ns in [&self.src, &self.dst] {
            if !ns.is_empty() {
                if let Err(e) = ip(&["netns", "del", ns]) {
                    eprintln!("lab: {e}");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    fn never_here() -> Result<(), String> {
        Err("a prerequisite no machine has".into())
    }

    /// Run by `require_lab_turns_a_skip_into_a_failure` in a child process,
    /// so the variable it sets never leaks into tests running beside it.
    #[test]
    #[ignore = "run as a child process by require_lab_turns_a_skip_into_a_failure"]
    fn child_skipping_test() {
        assert!(super::skip_without(&[never_here]));
    }

    fn run_child(require: Option<&str>) -> std::process::Output {
        let mut child = Command::new(std::env::current_exe().unwrap());
        child.args([
            "--exact",
            "tests::child_skipping_test",
            "--ignored",
            "--nocapture",
        ]);
        child.env_remove(super::REQUIRE_LAB);
        if let Some(value) = require {
            child.env(super::REQUIRE_LAB, value);
        }
        child.output().unwrap()
    }

    #[test]
    fn require_lab_turns_a_skip_into_a_failure() {
        let skipped = run_child(None);
        let stderr = String::from_utf8_lossy(&skipped.stderr);
        assert!(skipped.status.success(), "{stderr}");
        assert!(
            stderr.contains("SKIPPED: a prerequisite no machine has"),
            "{stderr}"
        );

        let off = run_child(Some("0"));
        assert!(off.status.success(), "{}", String::from_utf8_lossy(&off.stderr));

        let failed = run_child(Some("1"));
        let stderr = String::from_utf8_lossy(&failed.stderr);
        assert!(!failed.status.success(), "{stderr}");
        assert!(
            stderr
                .contains("EVAC_REQUIRE_LAB is set but this test cannot run: a prerequisite no machine has"),
            "{stderr}"
        );
    }
}
