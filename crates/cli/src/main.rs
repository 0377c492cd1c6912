//! `evac`: plan and run the evacuation of a data center's VMs over a WAN.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use evac_controller::{Order, PolicyKind};
use evac_scenario::Scenario;

mod init_cmd;
mod output;
mod progress;
mod report_cmd;

use output::{is_dash, say, Exit, Outputs};

#[derive(Parser)]
#[command(name = "evac", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Simulate an evacuation (the embedded default scenario if none is given).
    Simulate {
        /// Scenario file (TOML); `-` reads it from stdin.
        scenario: Option<PathBuf>,
        #[command(flatten)]
        controller: ControllerArgs,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Simulate every combination of a grid of factors, on all cores, and
    /// print one markdown row per combination.
    Sweep {
        /// Grid file (TOML): a base scenario and the factors to vary; `-`
        /// reads it from stdin (a relative base scenario is then found from
        /// the current directory).
        grid: PathBuf,
        /// Write the rows as JSON (`-`: stdout).
        #[arg(long, value_name = "FILE")]
        json: Option<PathBuf>,
        /// Write the rows as CSV (`-`: stdout).
        #[arg(long, value_name = "FILE")]
        csv: Option<PathBuf>,
    },
    /// Evacuate real QEMU VMs listed in an inventory; Ctrl-C cancels the
    /// migrations in flight and leaves every VM running exactly once.
    Run {
        /// Inventory file (TOML): hosts, VMs and their QMP sockets.
        inventory: PathBuf,
        /// sequential, parallel, static, aimd-local, aimd-global or deadline.
        #[arg(long, value_parser = parse_with::<PolicyKind>)]
        policy: Option<PolicyKind>,
        /// Draw no live progress on stderr (it is drawn only when stderr is
        /// a terminal anyway).
        #[arg(long, short)]
        quiet: bool,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Write a scenario to start from (the embedded default, commented) to
    /// FILE, or to stdout; an existing FILE is never overwritten.
    Init {
        /// The scenario file to create.
        file: Option<PathBuf>,
    },
    /// Render one or more results (`--json` of simulate or run) as one
    /// self-contained HTML page: summary, Gantt chart, WAN, CDF.
    Report {
        /// Result files; several are overlaid and shown side by side.
        #[arg(required = true)]
        results: Vec<PathBuf>,
        /// The HTML file to write.
        #[arg(short, long, value_name = "FILE")]
        output: PathBuf,
        /// A name per result, in order (default: the file's name).
        #[arg(long, value_name = "NAME")]
        label: Vec<String>,
    },
}

/// Overrides of the scenario's `[controller]` table.
#[derive(Args)]
struct ControllerArgs {
    /// sequential, parallel, static, aimd-local, aimd-global or deadline.
    #[arg(long, value_parser = parse_with::<PolicyKind>)]
    policy: Option<PolicyKind>,
    /// as-listed, smallest-first, largest-first, priority or deadline.
    #[arg(long, value_parser = parse_with::<Order>)]
    order: Option<Order>,
}

#[derive(Args)]
struct OutputArgs {
    /// Write the full result as JSON (`-`: stdout).
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Write one CSV row per VM (`-`: stdout).
    #[arg(long, value_name = "FILE")]
    csv: Option<PathBuf>,
    /// Draw the timeline and every VM's migration as an SVG picture (`-`:
    /// stdout).
    #[arg(long, value_name = "FILE")]
    plot: Option<PathBuf>,
}

impl OutputArgs {
    /// Opens (checks) every output path before anything runs.
    fn open(&self) -> Result<Outputs> {
        Outputs::open(&[
            ("json", self.json.as_deref()),
            ("csv", self.csv.as_deref()),
            ("plot", self.plot.as_deref()),
        ])
    }
}

fn parse_with<T: std::str::FromStr<Err = String>>(text: &str) -> Result<T, String> {
    text.parse()
}

/// Exit codes (see `output`): 0 every VM migrated, 3 the run ended with
/// some VM not migrated, 1 an error, 2 a usage error (from clap).
fn main() -> ExitCode {
    match dispatch(Cli::parse().command) {
        Ok(exit) => exit.into(),
        Err(error) => {
            // The whole chain of causes, one line, and no backtrace: this is
            // for an operator, not a debugger.
            say(&format!("error: {error:#}"));
            Exit::Error.into()
        }
    }
}

fn dispatch(command: Command) -> Result<Exit> {
    match command {
        Command::Simulate {
            scenario,
            controller,
            output,
        } => simulate(scenario.as_deref(), &controller, &output),
        Command::Sweep { grid, json, csv } => sweep(&grid, json.as_deref(), csv.as_deref()),
        Command::Run {
            inventory,
            policy,
            quiet,
            output,
        } => run(&inventory, policy, quiet, &output),
        Command::Init { file } => init_cmd::init(file.as_deref()).map(|()| Exit::Done),
        Command::Report {
            results,
            output,
            label,
        } => report_cmd::report(&results, &label, &output).map(|()| Exit::Done),
    }
}

fn run(path: &Path, policy: Option<PolicyKind>, quiet: bool, output: &OutputArgs) -> Result<Exit> {
    let mut outputs = output.open()?;
    let inventory = if is_dash(path) {
        evac_qemu::Inventory::from_str_at(&output::read_stdin_input()?, Path::new("<stdin>"))?
    } else {
        evac_qemu::Inventory::from_path(path)?
    };
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let result = runtime.block_on(async {
        let display = (!quiet).then(progress::Display::stderr);
        // Messages go above the bars, not through them.
        let log: evac_qemu::Log = match &display {
            Some(display) => Arc::new(display.printer()),
            None => evac_qemu::log_to_stderr(),
        };
        let ctrl_c = {
            let log = log.clone();
            async move {
                if tokio::signal::ctrl_c().await.is_ok() {
                    log("Ctrl-C: cancelling the migrations in flight");
                } else {
                    std::future::pending::<()>().await;
                }
            }
        };
        let mut options = evac_qemu::RunOptions {
            policy,
            log: Some(log),
            ..Default::default()
        };
        let render = display.map(|mut display| {
            let (tx, mut rx) = tokio::sync::watch::channel(evac_qemu::RunProgress::default());
            options.progress = Some(tx);
            tokio::spawn(async move {
                // Ends when the run drops the sender, after its last snapshot.
                while rx.changed().await.is_ok() {
                    let snapshot = rx.borrow_and_update().clone();
                    display.update(&snapshot);
                }
                display.finish();
            })
        });
        let output = evac_qemu::run_with_options(inventory, options, ctrl_c).await;
        if let Some(render) = render {
            let _ = render.await;
        }
        output.map(|o| o.result)
    })?;
    let console = outputs.summary_console();
    output::finish(&result, &mut outputs, console)
}

fn simulate(path: Option<&Path>, overrides: &ControllerArgs, output: &OutputArgs) -> Result<Exit> {
    let mut outputs = output.open()?;
    let mut scenario = match path {
        Some(path) if is_dash(path) => Scenario::from_toml_str(&output::read_stdin_input()?, "<stdin>")?,
        Some(path) => Scenario::from_path(path)?,
        None => Scenario::embedded_default(),
    };
    if let Some(policy) = overrides.policy {
        scenario.controller.policy = policy;
    }
    if let Some(order) = overrides.order {
        scenario.controller.order = Some(order);
    }
    let mut console = outputs.summary_console();
    console.line(&format!(
        "{}: {} VMs ({}) on {} hosts, WAN {} / {} RTT",
        scenario.name,
        scenario.fleet.vms.len(),
        scenario.fleet.total_memory(),
        scenario.fleet.hosts.len(),
        scenario.network.wan_bandwidth,
        evac_model::format_duration(scenario.network.wan_rtt),
    ))?;
    let result = evac_sim::simulate_evacuation(
        &scenario.fleet,
        &scenario.network,
        scenario.migration,
        &scenario.controller,
    );
    output::finish(&result, &mut outputs, console)
}

fn sweep(path: &Path, json: Option<&Path>, csv: Option<&Path>) -> Result<Exit> {
    let mut outputs = Outputs::open(&[("json", json), ("csv", csv)])?;
    let grid = if is_dash(path) {
        let dir = std::env::current_dir().context("finding the current directory")?;
        evac_sweep::Grid::from_toml_str(&output::read_stdin_input()?, "<stdin>", &dir)?
    } else {
        evac_sweep::Grid::from_path(path)?
    };
    say(&format!("{}: {} combinations", grid.name, grid.len()));
    let rows = evac_sweep::run(&grid);
    let printed = outputs.summary_console().line(&evac_sweep::markdown_table(&rows));
    outputs.write_all(
        &rows,
        &[
            ("json", &|rows, out| Ok(evac_sweep::write_json(rows, out)?)),
            ("csv", &|rows, out| Ok(evac_sweep::write_csv(rows, out)?)),
        ],
    )?;
    printed?;
    // A sweep is a study: VMs it did not move are its findings, not a failure.
    Ok(Exit::Done)
}
