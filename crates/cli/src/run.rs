//! `evac run INVENTORY`: the inventory's `backend` picks the backend; the
//! run loop (evac-run) is the same for all of them.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use evac_controller::PolicyKind;
use evac_run::{BackendKind, Log, RunOptions, RunProgress};

use crate::output::{self, is_dash, Exit};
use crate::{progress, OutputArgs};

/// An inventory of either backend.
pub(crate) enum Inventory {
    Qemu(evac_qemu::Inventory),
    #[cfg(feature = "libvirt")]
    Libvirt(evac_libvirt::Inventory),
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
    evacuate(
        inventory,
        &output::origin(Some(path)),
        policy,
        quiet,
        resume,
        metrics,
        outputs,
    )
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
        match backend_of(path) {
            BackendKind::Qemu => Inventory::Qemu(evac_qemu::Inventory::from_path(path)?),
            BackendKind::Libvirt => libvirt_inventory(path)?,
        }
    })
}

/// `origin` names the inventory in the result.
fn evacuate(
    inventory: Inventory,
    origin: &str,
    policy: Option<PolicyKind>,
    quiet: bool,
    resume: bool,
    metrics: Option<&str>,
    mut outputs: output::Outputs,
) -> Result<Exit> {
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
        let mut options = RunOptions {
            policy,
            resume,
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

/// The inventory's top-level `backend`. A file that does not parse is
/// taken as QEMU's: its loader reports the error with file, line and field.
fn backend_of(path: &Path) -> BackendKind {
    #[derive(serde::Deserialize)]
    struct Peek {
        #[serde(default)]
        backend: BackendKind,
    }
    std::fs::read_to_string(path)
        .ok()
        .and_then(|text| toml::from_str::<Peek>(&text).ok())
        .map_or(BackendKind::Qemu, |peek| peek.backend)
}

/// The signals that end a run as Ctrl-C does: SIGINT (Ctrl-C), SIGTERM
/// (`kill`, `timeout`, service managers) and SIGHUP (the terminal went
/// away). Each cancels what is in flight, writes the result and leaves no
/// migration without a controller.
struct StopSignals {
    int: Option<tokio::signal::unix::Signal>,
    term: Option<tokio::signal::unix::Signal>,
    hup: Option<tokio::signal::unix::Signal>,
}

impl StopSignals {
    fn install() -> StopSignals {
        use tokio::signal::unix::{signal, SignalKind};
        StopSignals {
            int: signal(SignalKind::interrupt()).ok(),
            term: signal(SignalKind::terminate()).ok(),
            hup: signal(SignalKind::hangup()).ok(),
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
            () = one(&mut self.hup) => "SIGHUP",
        }
    }
}
