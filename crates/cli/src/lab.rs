//! `evac lab`: build a lab from a scenario file, evacuate it for real
//! beside the simulator's prediction, tear it down. The lab itself is the
//! `evac-lab` crate; this is its command line.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Subcommand;
use evac_controller::PolicyKind;
use evac_lab::evacuate::{evacuate, LabRun};
use evac_lab::instance::LabInstance;
use tokio::signal::unix::{signal, Signal, SignalKind};

use crate::output::{say, Console};

/// The built-in lab of `evac lab demo`.
const DEMO: &str = include_str!("../../lab/demo.toml");

/// The longest `evac lab up` waits for its lab to come up.
const UP_TIMEOUT: Duration = Duration::from_secs(300);

/// The most a lab file may weigh.
const MAX_LAB_FILE: u64 = 1 << 20;

#[derive(Subcommand)]
pub enum LabCommand {
    /// Build the lab of LAB.toml (a scenario file) and leave it running in
    /// the background; prints the path of its inventory on the last line.
    Up {
        /// Lab file: a scenario (`evac simulate` predicts it).
        lab: PathBuf,
    },
    /// Build the lab, evacuate it with the real run loop, print measured vs
    /// predicted VM by VM, tear it down.
    Run {
        lab: PathBuf,
        #[command(flatten)]
        options: RunArgs,
    },
    /// Remove the lab named NAME (its file's `name`), or every lab evac
    /// made on this machine, leftovers of a crashed run included.
    Down { name: Option<String> },
    /// Run the built-in lab: 2 source and 2 destination hosts, 4 VMs of
    /// 256 MiB (2 dirtying), a 400 Mbit/s WAN dropping to 150 for a while,
    /// 40 ms RTT.
    Demo {
        #[command(flatten)]
        options: RunArgs,
    },
    /// The background process of `evac lab up` (not for direct use).
    #[command(hide = true)]
    Serve { lab: PathBuf },
}

#[derive(clap::Args)]
pub struct RunArgs {
    /// sequential, parallel, static, aimd-local, aimd-global or deadline.
    #[arg(long, value_parser = crate::parse_with::<PolicyKind>)]
    policy: Option<PolicyKind>,
    /// Write the measured result as JSON (`evac run`'s format) with the
    /// simulator's in a `prediction` field.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Draw the measured timeline and migrations as an SVG picture.
    #[arg(long, value_name = "FILE")]
    plot: Option<PathBuf>,
    /// Before the evacuation, migrate N probe VMs (the fleet's smallest
    /// size) one at a time on the lab's hosts and use the setup time they
    /// measure, instead of the lab file's, in the prediction and the run's
    /// controller (docs/lab.md). Default: 3 when the lab file gives no
    /// per-migration cost (`setup_time` and `ramp_rtts` both 0), else 0.
    #[arg(long, value_name = "N")]
    calibrate: Option<usize>,
}

pub fn dispatch(command: LabCommand) -> Result<()> {
    match command {
        LabCommand::Up { lab } => up(&lab),
        LabCommand::Run { lab, options } => {
            let text = read_lab(&lab)?;
            run(&text, &lab.display().to_string(), &options)
        }
        LabCommand::Demo { options } => run(DEMO, "<evac lab demo>", &options),
        LabCommand::Down { name } => down(name.as_deref()),
        LabCommand::Serve { lab } => serve(&lab),
    }
}

fn read_lab(path: &Path) -> Result<String> {
    let size = std::fs::metadata(path)
        .with_context(|| format!("reading {}", path.display()))?
        .len();
    if size > MAX_LAB_FILE {
        bail!(
            "{}: {size} bytes, more than a lab file may have ({MAX_LAB_FILE})",
            path.display()
        );
    }
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

/// SIGINT and SIGTERM, caught from before the lab is built: an interrupted
/// build finishes, then tears down.
struct Stop {
    int: Signal,
    term: Signal,
}

impl Stop {
    fn new() -> Result<Stop> {
        Ok(Stop {
            int: signal(SignalKind::interrupt()).context("catching SIGINT")?,
            term: signal(SignalKind::terminate()).context("catching SIGTERM")?,
        })
    }

    async fn wait(&mut self) {
        tokio::select! {
            _ = self.int.recv() => {}
            _ = self.term.recv() => {}
        }
    }

    /// Whether a signal came already.
    async fn came(&mut self) -> bool {
        tokio::time::timeout(Duration::ZERO, self.wait()).await.is_ok()
    }
}

/// Probes run when `--calibrate` is not given: a lab file that sets no
/// per-migration cost would predict with the ideal model, whose error on
/// small VMs is the cost itself (a 32 MiB VM's 0.34 s of payload at 800
/// Mbit/s takes 0.5 s in the lab); three probes measure it in 3-5 s.
fn default_probes(migration: &evac_model::MigrationParams) -> usize {
    if migration.setup_time.is_zero() && migration.ramp_rtts == 0.0 {
        3
    } else {
        0
    }
}

fn build(text: &str, origin: &str) -> Result<LabInstance> {
    say("building the lab (namespaces, WAN, VMs)...");
    LabInstance::build(text, origin)
}

fn run(text: &str, origin: &str, options: &RunArgs) -> Result<()> {
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let outcome = runtime.block_on(async {
        let mut stop = Stop::new()?;
        let mut lab = tokio::task::block_in_place(|| build(text, origin))?;
        if stop.came().await {
            bail!("interrupted while building the lab; it was torn down");
        }
        say(&format!(
            "lab {} is up ({}); evacuating {} VMs",
            lab.scenario.name,
            lab.dir.display(),
            lab.scenario.fleet.vms.len()
        ));
        let probes = options.calibrate.unwrap_or_else(|| {
            let probes = default_probes(&lab.scenario.migration);
            if probes > 0 {
                say(&format!(
                    "the lab file gives no per-migration cost ([migration] setup_time, ramp_rtts): \
                     measuring it with {probes} probe migrations first (--calibrate 0 predicts without it)"
                ));
            }
            probes
        });
        if probes > 0 {
            say(&format!("calibrating: {probes} probe migration(s)"));
            match evac_lab::calibration::calibrate(&mut lab, probes).await {
                Ok(calibration) => say(&calibration.summary()),
                Err(e) => {
                    drop(lab);
                    return Err(e.context("calibrating the lab"));
                }
            }
        }
        let shutdown = async move {
            stop.wait().await;
            say("interrupted: cancelling the migrations in flight");
        };
        let period = lab.scenario.controller.period.as_secs_f64();
        let run = evacuate(&mut lab, options.policy, None, shutdown).await;
        say("tearing the lab down");
        drop(lab);
        run.map(|run| (run, period))
    });
    let (run, period): (LabRun, f64) = outcome?;
    Console::stdout().line(&format!(
        "policy {}: measured (lab) / predicted (simulator), error relative to measured\n",
        run.measured.policy
    ))?;
    Console::stdout().line(&run.table())?;
    // Whether the run decided what the prediction did (docs/lab.md).
    let decisions = evac_lab::decisions::Comparison::new(&run.measured.vms, &run.prediction.vms, period);
    let differences = decisions.mismatches();
    Console::stdout().line(&format!(
        "decisions: {} difference(s) from the prediction's, VM by VM (start order, start within a period plus drift, connections, mode)",
        differences.len()
    ))?;
    for difference in &differences {
        Console::stdout().line(&format!("  {difference}"))?;
    }
    if let Some(path) = &options.json {
        std::fs::write(path, run.to_json()).with_context(|| format!("writing {}", path.display()))?;
        say(&format!("wrote {}", path.display()));
    }
    if let Some(path) = &options.plot {
        evac_report::plot::write_svg(&run.measured, path)?;
        say(&format!("wrote {}", path.display()));
    }
    Ok(())
}

/// Starts `evac lab serve` in a session of its own and waits for the line
/// saying its lab is up.
fn up(path: &Path) -> Result<()> {
    read_lab(path)?; // a missing or huge file is reported here, not by the child
    let exe = std::env::current_exe().context("finding the evac executable")?;
    let mut child = {
        use std::os::unix::process::CommandExt;
        Command::new(exe)
            .args(["lab", "serve"])
            .arg(path)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .process_group(0)
            .spawn()
            .context("starting the lab's background process")?
    };
    let stdout = child.stdout.take().expect("piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = std::io::BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    match rx.recv_timeout(UP_TIMEOUT) {
        Ok(line) if line.starts_with("ready ") => {
            let inventory = line["ready ".len()..].trim_end();
            Console::stdout().line(&format!(
                "lab up: background process {} owns it; `evac lab down` removes it",
                child.id()
            ))?;
            Console::stdout().line(inventory)?;
            Ok(())
        }
        Ok(_) => {
            let status = child.wait()?;
            bail!("the lab did not come up ({status}); see above")
        }
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            evac_lab::cleanup::down(None).ok();
            bail!("the lab was not up within {} s", UP_TIMEOUT.as_secs())
        }
    }
}

/// The background process of `evac lab up`: builds the lab, says so on
/// stdout, then keeps it (delay line, trace) until SIGTERM or SIGINT.
fn serve(path: &Path) -> Result<()> {
    let text = read_lab(path)?;
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async {
        let mut stop = Stop::new()?;
        let mut lab = tokio::task::block_in_place(|| build(&text, &path.display().to_string()))?;
        if stop.came().await {
            return Ok(());
        }
        lab.start_trace();
        // From now on our output goes to the lab's log: `evac lab up` has
        // returned and its terminal may be gone.
        let log = lab.dir.join("serve.log");
        Console::stdout().line(&format!("ready {}", lab.inventory_path.display()))?;
        redirect_output(&log)?;
        say(&format!("lab {} up; waiting for SIGTERM", lab.scenario.name));
        stop.wait().await;
        say("stopping");
        drop(lab);
        Ok(())
    })
}

fn redirect_output(log: &Path) -> Result<()> {
    use std::os::fd::AsRawFd;
    let file = std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
    for fd in [1, 2] {
        // SAFETY: dup2(2) onto stdout/stderr of a file we keep open.
        if unsafe { libc::dup2(file.as_raw_fd(), fd) } < 0 {
            return Err(std::io::Error::last_os_error()).context("redirecting output");
        }
    }
    Ok(())
}

fn down(name: Option<&str>) -> Result<()> {
    // SAFETY: geteuid(2) has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("removing labs needs root (network namespaces): run it with sudo");
    }
    let removed = evac_lab::cleanup::down(name)?;
    if removed.labs.is_empty() {
        Console::stdout().line(&format!(
            "no lab{} found",
            name.map(|n| format!(" named {n}")).unwrap_or_default()
        ))?;
    }
    for lab in &removed.labs {
        Console::stdout().line(&format!("removed lab {lab}"))?;
    }
    if !removed.namespaces.is_empty() || !removed.processes.is_empty() {
        Console::stdout().line(&format!(
            "({} namespaces, {} processes)",
            removed.namespaces.len(),
            removed.processes.len()
        ))?;
    }
    Ok(())
}
