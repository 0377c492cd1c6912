//! What the QEMU backend's lab tests share, so that each test file says
//! only what it checks: a scripted controller, a watcher of a source's
//! monitor, the lab's inventory at a short period, and the check that a VM
//! runs at its destination with its source gone.
//!
//! Every test file uses a different part of it.
#![allow(dead_code)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use evac_controller::{Action, Controller, MigrationObs, Observations};
use evac_lab::{Lab, LabVm};
use evac_model::{HostId, MigrationParams, VmId};
use evac_qemu::{Inventory, Placement};
use evac_qmp::{MigrationStatus, Qmp, RunState};

/// What a [`Script`] does on a tick with a migration in flight, after the
/// start: zero or more actions for it.
type Then = Box<dyn FnMut(&Observations, &MigrationObs) -> Vec<Action> + Send>;

/// A controller that starts VM 0 towards host 1 with `params` at its first
/// tick, then hands every tick with a migration in flight to `then`.
pub struct Script {
    params: MigrationParams,
    started: bool,
    then: Then,
}

impl Script {
    /// Starts VM 0 and then does nothing more.
    pub fn start(params: MigrationParams) -> Script {
        Script::then(params, |_, _| Vec::new())
    }

    /// Starts VM 0, then asks `then` on every tick with a migration in
    /// flight (the first one listed).
    pub fn then(
        params: MigrationParams,
        then: impl FnMut(&Observations, &MigrationObs) -> Vec<Action> + Send + 'static,
    ) -> Script {
        Script {
            params,
            started: false,
            then: Box::new(then),
        }
    }
}

impl Controller for Script {
    fn on_tick(&mut self, obs: &Observations) -> Vec<Action> {
        let mut actions = Vec::new();
        if !self.started {
            self.started = true;
            actions.push(Action::Start {
                vm: VmId(0),
                destination: HostId(1),
                params: self.params,
            });
        }
        if let Some(m) = obs.migrations.first() {
            actions.extend((self.then)(obs, m));
        }
        actions
    }

    fn name(&self) -> &str {
        "scripted"
    }
}

/// The lab's inventory for `vms` under `policy` with `extra` added to
/// `[migration]`, observed every 250 ms (twice the default rate: the
/// scripts act within a quarter second).
pub fn quick_inventory(lab: &Lab, policy: &str, vms: &[LabVm], extra: &str) -> Inventory {
    let mut inv = lab.parsed_inventory(policy, vms, extra);
    inv.controller.period = Duration::from_millis(250);
    inv
}

/// A QMP client of `vm`'s monitor socket, waiting up to 5 s for it.
pub async fn monitor(vm: &LabVm) -> Qmp {
    Qmp::connect_retry(vm.monitor.to_str().unwrap(), Duration::from_secs(5))
        .await
        .unwrap()
}

/// The pid of `vm-1`'s first destination QEMU (`dst-vm-1-1.qmp` in the
/// lab's directory), adopted by `lab`, once the source (watched on
/// `monitor`) is sending and has sent more than `sent` bytes: what a test
/// kills or stops mid-flight. Fails when that takes longer than `within`.
pub async fn first_destination_once_sent(lab: &mut Lab, monitor: &Qmp, sent: u64, within: Duration) -> u32 {
    let deadline = Instant::now() + within;
    let pid = loop {
        assert!(Instant::now() < deadline, "the first attempt never started");
        let info = monitor.query_migrate().await.unwrap();
        let transferred = info.ram.map_or(0, |r| r.transferred);
        if info.status == Some(MigrationStatus::Active) && transferred > sent {
            break evac_lab::find_pid(lab.dir.join("dst-vm-1-1.qmp").to_str().unwrap())
                .expect("the first destination's pid");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    lab.adopt(pid);
    pid
}

/// One look at the source through its monitor socket.
#[derive(Debug, Clone)]
pub struct Sample {
    pub at: Instant,
    pub status: RunState,
    pub migration: Option<MigrationStatus>,
    /// `ram.transferred`, bytes.
    pub transferred: u64,
    /// `ram.dirty-sync-count`: precopy rounds begun.
    pub syncs: u64,
    /// `cpu-throttle-percentage`.
    pub throttle: u64,
    /// `ram.dirty-pages-rate`, pages per second.
    pub dirty_rate: u64,
}

/// The last of `samples` before `at`, which must show precopy under way
/// with the guest running at its source.
pub fn last_running_before(samples: &[Sample], at: Instant) -> &Sample {
    let last = samples
        .iter()
        .rfind(|s| s.at < at)
        .expect("no sample before the switch");
    assert_eq!(last.migration, Some(MigrationStatus::Active), "{last:?}");
    assert_eq!(last.status, RunState::Running, "{last:?}");
    last
}

/// Polls `query-status` and `query-migrate` on a source's monitor `qmp`
/// every 20 ms until the source goes away (it quits after completing).
/// Holds the monitor socket meanwhile (QEMU serves one client per socket).
pub fn watch(qmp: Qmp) -> Arc<Mutex<Vec<Sample>>> {
    let samples = Arc::new(Mutex::new(Vec::new()));
    let out = samples.clone();
    tokio::spawn(async move {
        loop {
            let Ok(status) = qmp.query_status().await else {
                break;
            };
            let Ok(info) = qmp.query_migrate().await else {
                break;
            };
            let ram = info.ram.unwrap_or_default();
            out.lock().unwrap().push(Sample {
                at: Instant::now(),
                status: status.status,
                migration: info.status,
                transferred: ram.transferred,
                syncs: ram.dirty_sync_count,
                throttle: info.cpu_throttle_percentage.unwrap_or(0),
                dirty_rate: ram.dirty_pages_rate,
            });
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    samples
}

/// The destination's QMP of `vm`, placed at `placement`: it must run there,
/// and its source must quit within 5 s.
pub async fn at_destination(lab: &mut Lab, vm: &LabVm, placement: &Placement) -> Qmp {
    let Placement::Destination { qmp, pid, .. } = placement else {
        panic!("{} is not at a destination: {placement:?}", vm.name)
    };
    lab.adopt(*pid);
    let qmp = Qmp::connect(qmp.to_str().unwrap()).await.unwrap();
    let status = qmp.query_status().await.unwrap();
    assert_eq!(status.status, RunState::Running, "{} at its destination", vm.name);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !lab.exited(vm.pid) {
        assert!(Instant::now() < deadline, "source of {} still runs", vm.name);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    qmp
}

/// Whether `capability` is on in a reply of `query-migrate-capabilities`.
pub fn capability(caps: &serde_json::Value, capability: &str) -> Option<bool> {
    caps.as_array()?
        .iter()
        .find(|c| c["capability"] == capability)
        .map(|c| c["state"] == true)
}

/// A test's turn at the machine's cores (tests that keep a core busy with a
/// spinning guest run one at a time), and when it began; the test's wall
/// time goes to stderr when the turn ends.
pub struct Turn {
    pub t0: Instant,
    _held: tokio::sync::MutexGuard<'static, ()>,
}

impl Turn {
    /// Waits for the turn `of` gives out.
    pub async fn take(of: &'static tokio::sync::Mutex<()>) -> Turn {
        let held = of.lock().await;
        Turn {
            t0: Instant::now(),
            _held: held,
        }
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        eprintln!("wall time {:.1} s", self.t0.elapsed().as_secs_f64());
    }
}
