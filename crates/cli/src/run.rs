//! `evac run INVENTORY`: the inventory's `backend` picks the backend; the
//! run loop (evac-run) is the same for all of them.
//!
//! While it runs, the power-offs may change (`evac_run::power`): the
//! inventory file is watched (every control period, and on SIGHUP) for
//! edited `power_off_at` values, and hosts that name a UPS have it polled
//! every period.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use evac_controller::PolicyKind;
use evac_run::{Log, RunOptions, RunProgress};

use crate::output::{self, is_dash, Exit};
use crate::{progress, OutputArgs};

/// An inventory of either backend.
#[derive(Clone)]
pub(crate) enum Inventory {
    Qemu(evac_qemu::Inventory),
    #[cfg(feature = "libvirt")]
    Libvirt(evac_libvirt::Inventory),
}

impl Inventory {
    /// What the run takes of it whatever its backend.
    pub(crate) fn common(&self) -> &dyn evac_run::inventory::RunInventory {
        match self {
            Inventory::Qemu(i) => i,
            #[cfg(feature = "libvirt")]
            Inventory::Libvirt(i) => i,
        }
    }
}

pub fn run(
    path: &Path,
    policy: Option<PolicyKind>,
    quiet: bool,
    resume: bool,
    metrics: Option<&str>,
    output: &OutputArgs,
) -> Result<Exit> {
    // Checked before anything runs: a bad path is found now, not after an
    // hour of migrations.
    let outputs = output.open()?;
    let inventory = load(path)?;
    evacuate(inventory, path, policy, quiet, resume, metrics, outputs)
}

/// The inventory at `path` (`-`: standard input, a QEMU one), read and
/// checked by its backend's loader, as its `backend` key says.
pub(crate) fn load(path: &Path) -> Result<Inventory> {
    Ok(if is_dash(path) {
        Inventory::Qemu(evac_qemu::Inventory::from_str_at(
            &output::read_stdin_input()?,
            Path::new("<stdin>"),
        )?)
    } else {
        match BackendKind::of(path)? {
            BackendKind::Qemu => Inventory::Qemu(evac_qemu::Inventory::from_path(path)?),
            BackendKind::Libvirt => libvirt_inventory(path)?,
        }
    })
}

/// `path` (`-`: stdin) names the inventory in the result, and is watched
/// for new power-offs.
fn evacuate(
    inventory: Inventory,
    path: &Path,
    policy: Option<PolicyKind>,
    quiet: bool,
    resume: bool,
    metrics: Option<&str>,
    mut outputs: output::Outputs,
) -> Result<Exit> {
    let origin = &output::origin(Some(path));
    // An inventory read from stdin cannot be read again.
    let watched = (!is_dash(path)).then(|| path.to_owned());
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let mut result = runtime.block_on(async {
        let display = (!quiet).then(progress::Display::stderr);
        // Messages go above the bars, not through them.
        let log: Log = match &display {
            Some(display) => Arc::new(display.printer()),
            None => evac_run::log_to_stderr(),
        };
        let ctrl_c = {
            let log = log.clone();
            // Installed now, not when first polled: a signal that comes
            // while the VMs are being connected must not kill evac.
            let signals = StopSignals::install();
            async move {
                let name = signals.recv().await;
                log(&format!("{name}: cancelling the migrations in flight"));
            }
        };
        let (power_tx, power_rx) = evac_run::power::feed();
        let power_tasks = power_sources(&inventory, watched, power_tx, &log);
        let mut options = RunOptions {
            policy,
            resume,
            power: Some(power_rx),
            log: Some(log),
            // `deadline` plans by simulation, as in `evac simulate`.
            plan_with: Some(Arc::new(|network, params, config| {
                Arc::new(evac_sim::rollout::SimRollout::new(network, params, config))
            })),
            ..Default::default()
        };
        // One progress channel for the display and the metrics alike.
        let (tx, rx) = tokio::sync::watch::channel(RunProgress::default());
        let endpoint = match metrics {
            Some(addr) => {
                let endpoint = crate::metrics::Endpoint::start(addr, rx.clone()).await?;
                crate::output::say(&format!("metrics at http://{}/metrics", endpoint.addr));
                Some(endpoint)
            }
            None => None,
        };
        if display.is_some() || endpoint.is_some() {
            options.progress = Some(tx);
        }
        let render = display.map(|mut display| {
            let mut rx = rx;
            tokio::spawn(async move {
                // Ends when the run drops the sender, after its last snapshot.
                while rx.changed().await.is_ok() {
                    let snapshot = rx.borrow_and_update().clone();
                    display.update(&snapshot);
                }
                display.finish();
            })
        });
        let output = match inventory {
            Inventory::Qemu(inventory) => evac_qemu::run_with_options(inventory, options, ctrl_c)
                .await
                .map(|o| o.result),
            #[cfg(feature = "libvirt")]
            Inventory::Libvirt(inventory) => evac_libvirt::run_with_options(inventory, options, ctrl_c)
                .await
                .map(|o| o.result),
        };
        if let Some(render) = render {
            let _ = render.await;
        }
        if let Some(endpoint) = endpoint {
            endpoint.stop().await;
        }
        for task in power_tasks {
            task.abort();
        }
        output
    })?;
    // An inventory has no seed: a real run draws nothing at random.
    output::stamp(&mut result, origin, None);
    let console = outputs.summary_console();
    output::finish(&result, &mut outputs, console)
}

#[cfg(feature = "libvirt")]
fn libvirt_inventory(path: &Path) -> Result<Inventory> {
    Ok(Inventory::Libvirt(evac_libvirt::Inventory::from_path(path)?))
}

/// A build without the `libvirt` feature (the default: it needs libvirt-dev
/// and links libvirt) still reads and checks the file, so its own errors
/// come first, then says in one line how to get a build that runs it.
#[cfg(not(feature = "libvirt"))]
fn libvirt_inventory(path: &Path) -> Result<Inventory> {
    evac_libvirt::Inventory::from_path(path)?;
    // The line of the top-level `backend` key (before any table), which
    // this build cannot honour.
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let line = text
        .lines()
        .take_while(|l| !l.trim_start().starts_with('['))
        .position(|l| l.trim_start().starts_with("backend"))
        .map_or(String::new(), |i| format!(":{}", i + 1));
    anyhow::bail!("{}{line}: {NO_LIBVIRT}", path.display())
}

/// What a build without libvirt support says to a libvirt inventory.
#[cfg(not(feature = "libvirt"))]
const NO_LIBVIRT: &str = "backend = \"libvirt\" needs an evac built with libvirt support: \
     cargo install --path crates/cli --features libvirt (needs libvirt-dev and pkg-config; docs/libvirt.md)";

/// The backends this `evac` dispatches to, by an inventory's top-level
/// `backend` key. The run loop (`evac-run`) knows none of them: a new
/// backend is its crate, a variant here and its arm in [`load`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BackendKind {
    /// QEMU processes reachable over QMP from this machine (`evac-qemu`).
    Qemu,
    /// Hosts run by libvirt daemons (`evac-libvirt`).
    Libvirt,
}

impl BackendKind {
    const ALL: [(&'static str, BackendKind); 2] =
        [("qemu", BackendKind::Qemu), ("libvirt", BackendKind::Libvirt)];

    /// The inventory's top-level `backend` (`qemu` when absent). A file
    /// that does not parse is taken as QEMU's: its loader reports the error
    /// with file, line and field.
    fn of(path: &Path) -> Result<BackendKind> {
        #[derive(serde::Deserialize)]
        struct Peek {
            backend: Option<String>,
        }
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let Some(name) = toml::from_str::<Peek>(&text).ok().and_then(|peek| peek.backend) else {
            return Ok(BackendKind::Qemu);
        };
        match BackendKind::ALL.iter().find(|(n, _)| *n == name) {
            Some(&(_, kind)) => Ok(kind),
            None => {
                let at = evac_run::inventory::At::Key("backend");
                let line = evac_run::inventory::line_of(&text, &at);
                let known: Vec<String> = BackendKind::ALL.iter().map(|(n, _)| format!("`{n}`")).collect();
                anyhow::bail!(
                    "{}:{line}: field `backend`: unknown backend `{name}`, expected one of {}",
                    path.display(),
                    known.join(", ")
                )
            }
        }
    }
}

/// The tasks that tell the run of changes of power: the inventory watched
/// (when it is a file) and on SIGHUP, and the UPSes hosts name. SIGHUP no
/// longer ends a run: as daemons do, evac reads its inventory again (a
/// terminal that goes away does not stop an evacuation).
fn power_sources(
    inventory: &Inventory,
    watched: Option<std::path::PathBuf>,
    tx: tokio::sync::mpsc::Sender<evac_run::power::PowerUpdate>,
    log: &Log,
) -> Vec<tokio::task::JoinHandle<()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let period = inventory.common().period();
    let mut tasks = Vec::new();
    let (hup_tx, hup_rx) = tokio::sync::mpsc::channel(4);
    if let Ok(mut hangups) = signal(SignalKind::hangup()) {
        let log = log.clone();
        let stdin = watched.is_none();
        tasks.push(tokio::spawn(async move {
            while hangups.recv().await.is_some() {
                if stdin {
                    log("evac: SIGHUP: the inventory came from stdin, there is no file to read again");
                }
                let _ = hup_tx.try_send(());
            }
        }));
    }
    if let Some(path) = watched {
        let baseline = inventory.clone();
        let reread_path = path.clone();
        tasks.push(tokio::spawn(evac_run::power::watch_inventory(
            path,
            period,
            inventory.common().power_offs(),
            move |text: &str| baseline.common().reread(text, &reread_path),
            hup_rx,
            tx.clone(),
            log.clone(),
        )));
    }
    let ups = inventory.common().ups_hosts();
    if !ups.is_empty() {
        // Each read within the period (at least 200 ms, at most 2 s): a
        // dead upsd costs one poll, never the run.
        let wait = period.clamp(
            std::time::Duration::from_millis(200),
            std::time::Duration::from_secs(2),
        );
        tasks.push(tokio::spawn(evac_run::power::poll_ups(
            ups,
            period,
            wait,
            tx,
            log.clone(),
        )));
    }
    tasks
}

/// The signals that end a run as Ctrl-C does: SIGINT (Ctrl-C) and SIGTERM
/// (`kill`, `timeout`, service managers). Each cancels what is in flight,
/// writes the result and leaves no migration without a controller.
struct StopSignals {
    int: Option<tokio::signal::unix::Signal>,
    term: Option<tokio::signal::unix::Signal>,
}

impl StopSignals {
    fn install() -> StopSignals {
        use tokio::signal::unix::{signal, SignalKind};
        StopSignals {
            int: signal(SignalKind::interrupt()).ok(),
            term: signal(SignalKind::terminate()).ok(),
        }
    }

    /// The name of the first of them to come.
    async fn recv(mut self) -> &'static str {
        async fn one(signal: &mut Option<tokio::signal::unix::Signal>) {
            if let Some(signal) = signal {
                if signal.recv().await.is_some() {
                    return;
                }
            }
            std::future::pending().await
        }
        tokio::select! {
            () = one(&mut self.int) => "Ctrl-C",
            () = one(&mut self.term) => "SIGTERM",
        }
    }
}
