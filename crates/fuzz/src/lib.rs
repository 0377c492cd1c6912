//! # evac-fuzz
//!
//! A mutation fuzzer over every text evac loads: scenarios, sweep grids,
//! QEMU inventories and libvirt inventories. It takes the seed corpus kept
//! in `crates/fuzz/corpus/` (the repo's scenarios, grids and inventories,
//! and the hostile inputs of issue 8), mutates a seed (byte flips, deleted
//! and duplicated ranges, lines spliced in from other seeds, numbers
//! swapped for extremes, units swapped for others), and hands the result
//! to the loader; what loads is then used the way evac uses it (a scenario
//! simulated, a small grid swept, an inventory's fleet built and
//! simulated), with a small simulated horizon so each case is bounded.
//!
//! The promise checked: no input panics, hangs or takes unbounded memory.
//! Each case runs on a thread of its own under `catch_unwind`, waited for
//! at most a timeout ([`run_case`]); the test binary counts every
//! allocation ([`Counting`]) and refuses to pass a limit, so a runaway
//! allocation fails the run instead of the machine.
//!
//! Why not cargo-fuzz: it needs a nightly toolchain, and this project
//! builds on one stable toolchain. The mutations here are the ones that
//! found issue 8's bugs (extreme numbers, swapped units, spliced tables),
//! and the run is reproducible from its seed.
//!
//! Inputs it found that once failed are kept in `corpus/regressions/`:
//! checked as they are on every run, not mutated (some are slow to load).
//!
//! Run it: `cargo test -p evac-fuzz` runs for `EVAC_FUZZ_SECS` seconds
//! (default 10; CI gives it 90); `EVAC_FUZZ_SEED` replays one run. A long
//! run: `EVAC_FUZZ_SECS=3600 cargo test --release -p evac-fuzz -- --nocapture`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use evac_controller::ControllerConfig;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Which loader an input goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Scenario,
    Grid,
    QemuInventory,
    LibvirtInventory,
}

impl Target {
    pub const ALL: [Target; 4] = [
        Target::Scenario,
        Target::Grid,
        Target::QemuInventory,
        Target::LibvirtInventory,
    ];

    /// The loader a corpus file is for, by its name's prefix.
    pub fn of(name: &str) -> Target {
        if name.starts_with("grid-") {
            Target::Grid
        } else if name.starts_with("qemu-") {
            Target::QemuInventory
        } else if name.starts_with("libvirt-") {
            Target::LibvirtInventory
        } else {
            Target::Scenario
        }
    }
}

/// One file of the corpus.
#[derive(Debug, Clone)]
pub struct Seed {
    pub name: String,
    pub text: String,
}

/// `crates/fuzz/corpus`.
pub fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus")
}

/// Every `.toml` file of `dir`, by name.
pub fn corpus(dir: &Path) -> std::io::Result<Vec<Seed>> {
    let mut seeds = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "toml") {
            seeds.push(Seed {
                name: path
                    .file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned(),
                text: std::fs::read_to_string(&path)?,
            });
        }
    }
    seeds.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(seeds)
}

/// Numbers a mutation puts in place of one in the text: the edges of
/// every type and range evac reads.
const EXTREMES: &[&str] = &[
    "0",
    "-1",
    "1e-300",
    "1e-9",
    "1e308",
    "1e20",
    "inf",
    "nan",
    "4294967295",
    "4294967296",
    "18446744073709551615",
    "18446744073709551616",
    "9223372036854775807",
    "1000000",
    "1000001",
    "0.0000001",
    "1125899906842624",
];

/// Units a mutation swaps in for another.
const UNITS: &[&str] = &[
    "B", "KiB", "MiB", "GiB", "TiB", "GB", "bps", "Kbps", "Mbps", "Gbps", "Tbps", "B/s", "MB/s", "GiB/s",
    "us", "ms", "s", "min", "h", "",
];

/// Tokens a mutation splices in: keys of every table, table headers and
/// values of the wrong kind.
const TOKENS: &[&str] = &[
    "\n[[vm]]\nname = \"x\"\nhost = \"src\"\nmemory = \"1 GiB\"\n",
    "\n[[host]]\nname = \"h\"\nsite = \"destination\"\nnic = \"1 Gbps\"\n",
    "\n[[vm_group]]\nprefix = \"g\"\ncount = 1000000\nhost = \"round-robin\"\nmemory = \"1 GiB\"\n",
    "\n[controller]\nhorizon = \"1 us\"\n",
    "\nperiod = \"1 ms\"\n",
    "\nrepeat_seeds = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]\n",
    "{ dist = \"lognormal\", median = \"1e308 MB/s\", sigma = 1e308 }",
    "{ dist = \"choice\", values = [], weights = [] }",
    "{ dist = \"uniform\", min = \"8 GiB\", max = \"1 GiB\" }",
    "[]",
    "\"\"",
    "\"a/../..,b\"",
    "\u{0}",
    "\"\u{7}\"",
    "1979-05-27T07:32:00Z",
    "{ a = { b = { c = { d = 1 } } } }",
];

/// Mutates seeds, reproducibly from its seed.
pub struct Mutator {
    rng: ChaCha8Rng,
}

impl Mutator {
    pub fn new(seed: u64) -> Self {
        Self {
            rng: ChaCha8Rng::seed_from_u64(seed),
        }
    }

    /// One to four mutations of one seed: the seed's index and the text.
    pub fn mutate(&mut self, seeds: &[Seed]) -> (usize, String) {
        let index = self.rng.gen_range(0..seeds.len());
        let mut text = seeds[index].text.clone().into_bytes();
        for _ in 0..self.rng.gen_range(1..=4) {
            self.once(&mut text, seeds);
        }
        (index, String::from_utf8_lossy(&text).into_owned())
    }

    fn once(&mut self, text: &mut Vec<u8>, seeds: &[Seed]) {
        let len = text.len().max(1);
        let at = self.rng.gen_range(0..len).min(text.len());
        match self.rng.gen_range(0..9) {
            0 => {
                if let Some(byte) = text.get_mut(at) {
                    *byte ^= 1 << self.rng.gen_range(0..8);
                }
            }
            1 => {
                let end = (at + self.rng.gen_range(1..64)).min(text.len());
                text.drain(at..end);
            }
            2 => {
                let end = (at + self.rng.gen_range(1..256)).min(text.len());
                let copy = text[at..end].to_vec();
                text.splice(at..at, copy);
            }
            3 => {
                // A line of another seed, at a line start.
                let other = &seeds[self.rng.gen_range(0..seeds.len())].text;
                let lines: Vec<&str> = other.lines().collect();
                if let Some(line) = lines.get(self.rng.gen_range(0..lines.len().max(1))) {
                    let start = text[..at].iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
                    let insert = format!("{line}\n").into_bytes();
                    text.splice(start..start, insert);
                }
            }
            4 | 5 => self.swap_number(text),
            6 => self.swap_unit(text),
            7 => {
                let token = TOKENS[self.rng.gen_range(0..TOKENS.len())].as_bytes().to_vec();
                text.splice(at..at, token);
            }
            _ => {
                let end = self.rng.gen_range(at..=text.len());
                text.truncate(end);
            }
        }
    }

    /// Replaces a run of digits (with its sign, point and exponent) by an
    /// extreme.
    fn swap_number(&mut self, text: &mut Vec<u8>) {
        let digits: Vec<usize> = (0..text.len()).filter(|&i| text[i].is_ascii_digit()).collect();
        if digits.is_empty() {
            return;
        }
        let mut start = digits[self.rng.gen_range(0..digits.len())];
        let number = |b: u8| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'-' | b'+' | b'_');
        while start > 0 && number(text[start - 1]) {
            start -= 1;
        }
        let mut end = start;
        while end < text.len() && number(text[end]) {
            end += 1;
        }
        let extreme = EXTREMES[self.rng.gen_range(0..EXTREMES.len())]
            .as_bytes()
            .to_vec();
        text.splice(start..end, extreme);
    }

    /// Replaces the unit after a number inside a string by another.
    fn swap_unit(&mut self, text: &mut Vec<u8>) {
        let spaces: Vec<usize> = (1..text.len())
            .filter(|&i| text[i] == b' ' && text[i - 1].is_ascii_digit())
            .collect();
        if spaces.is_empty() {
            return;
        }
        let start = spaces[self.rng.gen_range(0..spaces.len())] + 1;
        let mut end = start;
        while end < text.len() && (text[end].is_ascii_alphabetic() || text[end] == b'/') {
            end += 1;
        }
        let unit = UNITS[self.rng.gen_range(0..UNITS.len())].as_bytes().to_vec();
        text.splice(start..end, unit);
    }
}

/// What became of an input that did not break anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Refused with an error.
    Refused,
    /// Loaded; too large to simulate within a case's bound.
    Loaded,
    /// Loaded and used (simulated, swept, its fleet built).
    Used,
}

/// The simulated-time bound of a case's simulation, and the largest
/// fleet a case simulates: each case stays well under a second.
const CASE_HORIZON: Duration = Duration::from_secs(3600);
const CASE_MAX_VMS: usize = 300;
const CASE_MIN_PERIOD: Duration = Duration::from_millis(100);

/// Loads `text` with `target`'s loader and, if it loads, uses it the way
/// evac would, within a small bound. A panic propagates; see [`run_case`].
pub fn check(target: Target, text: &str, dir: &Path) -> Verdict {
    match target {
        Target::Scenario => {
            let Ok(scenario) = evac_scenario::Scenario::from_toml_str(text, "fuzz.toml") else {
                return Verdict::Refused;
            };
            let _ = evac_sim::horizon_warning(&scenario.fleet, &scenario.network, &scenario.controller);
            simulate(
                &scenario.fleet,
                &scenario.network,
                scenario.migration,
                &scenario.controller,
            )
        }
        Target::Grid => {
            let Ok(mut grid) = evac_sweep::Grid::from_toml_str(text, "fuzz.toml", dir) else {
                return Verdict::Refused;
            };
            if grid.len() > 4 || grid.base.fleet.vms.len() > 50 || !grid.repeat_seeds.is_empty() {
                return Verdict::Loaded;
            }
            bound(&mut grid.base.controller);
            match evac_sweep::run(&grid) {
                Ok(rows) => {
                    let _ = evac_sweep::markdown_table(&rows);
                    Verdict::Used
                }
                Err(_) => Verdict::Refused,
            }
        }
        Target::QemuInventory => {
            let Ok(inventory) = evac_qemu::Inventory::from_str_at(text, Path::new("fuzz.toml")) else {
                return Verdict::Refused;
            };
            // As `evac plan` does, with the stated sizes (or 1 GiB).
            let memory: Vec<_> = inventory
                .vms
                .iter()
                .map(|vm| vm.memory.unwrap_or(evac_model::Bytes::gib(1)))
                .collect();
            let fleet = inventory.fleet(&memory);
            if fleet.validate().is_err() {
                return Verdict::Refused;
            }
            simulate(
                &fleet,
                &inventory.network(),
                inventory.migration.params,
                &inventory.controller,
            )
        }
        Target::LibvirtInventory => {
            let Ok(inventory) = evac_libvirt::Inventory::from_str_at(text, Path::new("fuzz.toml")) else {
                return Verdict::Refused;
            };
            // The domains a discovery could find: the listed VMs, 1 GiB each,
            // on the first source host.
            let Some(source) = inventory
                .hosts
                .iter()
                .position(|h| h.site == evac_model::Site::Source)
            else {
                return Verdict::Loaded;
            };
            let domains: Vec<_> = inventory
                .vms
                .iter()
                .map(|vm| evac_libvirt::inventory::FoundDomain {
                    host: evac_model::HostId(source),
                    name: vm.name.clone(),
                    memory: evac_model::Bytes::gib(1),
                    disk: evac_model::Bytes::ZERO,
                })
                .collect();
            match inventory.fleet(&domains) {
                Ok(fleet) => simulate(
                    &fleet,
                    &inventory.network(),
                    inventory.migration.params,
                    &inventory.controller,
                ),
                Err(_) => Verdict::Refused,
            }
        }
    }
}

fn bound(config: &mut ControllerConfig) {
    config.horizon = config.horizon.min(CASE_HORIZON);
    config.period = config.period.max(CASE_MIN_PERIOD);
}

fn simulate(
    fleet: &evac_model::Fleet,
    network: &evac_model::Network,
    params: evac_model::MigrationParams,
    config: &ControllerConfig,
) -> Verdict {
    if fleet.vms.len() > CASE_MAX_VMS || fleet.hosts.len() > CASE_MAX_VMS || network.wan_trace.len() > 10_000
    {
        return Verdict::Loaded;
    }
    let mut config = config.clone();
    bound(&mut config);
    let result = evac_sim::simulate_evacuation(fleet, network, params, &config);
    assert_eq!(result.vms.len(), fleet.vms.len(), "a record per VM");
    Verdict::Used
}

/// Why a case failed.
#[derive(Debug)]
pub enum Failure {
    Panic(String),
    Hang(Duration),
}

/// [`check`] on a thread of its own: a panic is caught, and a case that
/// has not ended within `timeout` is a hang (its thread is left behind;
/// the caller stops).
pub fn run_case(target: Target, text: String, dir: PathBuf, timeout: Duration) -> Result<Verdict, Failure> {
    let (tx, rx) = std::sync::mpsc::channel();
    let spawned = std::thread::Builder::new()
        .name(format!("fuzz-{target:?}"))
        .spawn(move || {
            let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| check(target, &text, &dir)));
            let _ = tx.send(outcome.map_err(|payload| {
                payload
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                    .unwrap_or_else(|| "a panic without a message".to_owned())
            }));
        });
    if let Err(e) = spawned {
        return Err(Failure::Panic(format!("cannot start a case's thread: {e}")));
    }
    match rx.recv_timeout(timeout) {
        Ok(Ok(verdict)) => Ok(verdict),
        Ok(Err(message)) => Err(Failure::Panic(message)),
        Err(_) => Err(Failure::Hang(timeout)),
    }
}

/// A global allocator that counts the bytes live and refuses to go past
/// [`Counting::set_limit`]: a runaway allocation fails the fuzz run (the
/// allocation error aborts it, naming the size) instead of the machine.
pub struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);
static LIMIT: AtomicUsize = AtomicUsize::new(usize::MAX);

impl Counting {
    pub fn set_limit(bytes: usize) {
        LIMIT.store(bytes, Ordering::Relaxed);
    }

    /// The most bytes live at once so far.
    pub fn peak() -> usize {
        PEAK.load(Ordering::Relaxed)
    }
}

// SAFETY: every call is forwarded to `System`; the counters only watch.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let live = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
        if live > LIMIT.load(Ordering::Relaxed) {
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
            return std::ptr::null_mut();
        }
        PEAK.fetch_max(live, Ordering::Relaxed);
        // SAFETY: the caller's contract is `System`'s.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: the caller's contract is `System`'s.
        unsafe { System.dealloc(ptr, layout) }
    }
}
