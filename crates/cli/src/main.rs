//! `evac`: plan and run the evacuation of a data center's VMs over a WAN.

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use evac_controller::{Order, PolicyKind};
use evac_report::RunResult;
use evac_scenario::Scenario;

mod init_cmd;
mod lab;
mod plan_cmd;
mod progress;
mod report_cmd;
mod run;

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
        /// Scenario file (TOML).
        scenario: Option<PathBuf>,
        #[command(flatten)]
        controller: ControllerArgs,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Simulate every combination of a grid of factors, on all cores, and
    /// print one markdown row per combination.
    Sweep {
        /// Grid file (TOML): a base scenario and the factors to vary.
        grid: PathBuf,
        /// Write the rows as JSON.
        #[arg(long, value_name = "FILE")]
        json: Option<PathBuf>,
        /// Write the rows as CSV.
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
    /// Read a live QEMU fleet without migrating anything (memory, dirty
    /// rates measured by QEMU), simulate its evacuation with every policy
    /// and print the triage of the recommended one.
    Plan {
        /// Inventory file (TOML), as for `evac run`.
        inventory: PathBuf,
        /// How long to sample each VM's dirty pages (whole seconds).
        #[arg(long, default_value = "2s", value_parser = parse_duration_arg)]
        sample: std::time::Duration,
        /// How long the second sample, for the working set, lasts.
        #[arg(long, default_value = "8s", value_parser = parse_duration_arg)]
        working_set_sample: std::time::Duration,
        /// Write the equivalent scenario (for `evac simulate`).
        #[arg(long, value_name = "FILE")]
        scenario_out: Option<PathBuf>,
        /// Write the plan as JSON.
        #[arg(long, value_name = "FILE")]
        json: Option<PathBuf>,
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
    /// A lab on this machine (needs root): namespaces as hosts, a shaped
    /// WAN with latency, real QEMU VMs; evacuated beside the simulator.
    Lab {
        #[command(subcommand)]
        command: lab::LabCommand,
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
pub(crate) struct OutputArgs {
    /// Write the full result as JSON.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Write one CSV row per VM.
    #[arg(long, value_name = "FILE")]
    csv: Option<PathBuf>,
    /// Draw the timeline and every VM's migration as an SVG picture.
    #[arg(long, value_name = "FILE")]
    plot: Option<PathBuf>,
}

fn parse_duration_arg(text: &str) -> Result<std::time::Duration, String> {
    evac_model::parse_duration(text).map_err(|e| e.to_string())
}

fn parse_with<T: std::str::FromStr<Err = String>>(text: &str) -> Result<T, String> {
    text.parse()
}

fn main() -> ExitCode {
    match dispatch(Cli::parse().command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // The whole chain of causes, one line, and no backtrace: this is
            // for an operator, not a debugger.
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn dispatch(command: Command) -> Result<()> {
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
        } => run::run(&inventory, policy, quiet, &output),
        Command::Plan {
            inventory,
            sample,
            working_set_sample,
            scenario_out,
            json,
        } => plan_cmd::plan(
            &inventory,
            sample,
            working_set_sample,
            scenario_out.as_deref(),
            json.as_deref(),
        ),
        Command::Init { file } => init_cmd::init(file.as_deref()),
        Command::Report {
            results,
            output,
            label,
        } => report_cmd::report(&results, &label, &output),
        Command::Lab { command } => lab::dispatch(command),
    }
}

fn simulate(path: Option<&Path>, overrides: &ControllerArgs, output: &OutputArgs) -> Result<()> {
    let mut scenario = match path {
        Some(path) => Scenario::from_path(path)?,
        None => Scenario::embedded_default(),
    };
    if let Some(policy) = overrides.policy {
        scenario.controller.policy = policy;
    }
    if let Some(order) = overrides.order {
        scenario.controller.order = Some(order);
    }
    println!(
        "{}: {} VMs ({}) on {} hosts, WAN {} / {} RTT",
        scenario.name,
        scenario.fleet.vms.len(),
        scenario.fleet.total_memory(),
        scenario.fleet.hosts.len(),
        scenario.network.wan_bandwidth,
        evac_model::format_duration(scenario.network.wan_rtt),
    );
    let result = evac_sim::simulate_evacuation(
        &scenario.fleet,
        &scenario.network,
        scenario.migration,
        &scenario.controller,
    );
    println!("{}", evac_report::summary::render_text(&result));
    write_outputs(&result, output)
}

fn sweep(path: &Path, json: Option<&Path>, csv: Option<&Path>) -> Result<()> {
    let grid = evac_sweep::Grid::from_path(path)?;
    eprintln!("{}: {} combinations", grid.name, grid.len());
    let rows = evac_sweep::run(&grid);
    println!("{}", evac_sweep::markdown_table(&rows));
    if let Some(path) = json {
        let file = File::create(path).with_context(|| format!("creating {}", path.display()))?;
        evac_sweep::write_json(&rows, BufWriter::new(file))
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    if let Some(path) = csv {
        let file = File::create(path).with_context(|| format!("creating {}", path.display()))?;
        evac_sweep::write_csv(&rows, BufWriter::new(file))
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

pub(crate) fn write_outputs(result: &RunResult, output: &OutputArgs) -> Result<()> {
    if let Some(path) = &output.json {
        // Streamed through a buffer: a million VMs' JSON is never one string.
        let file = File::create(path).with_context(|| format!("creating {}", path.display()))?;
        let mut out = BufWriter::new(file);
        result
            .write_json(&mut out)
            .and_then(|()| std::io::Write::flush(&mut out))
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    if let Some(path) = &output.csv {
        let file = File::create(path).with_context(|| format!("creating {}", path.display()))?;
        evac_report::write_csv(result, BufWriter::new(file))
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    if let Some(path) = &output.plot {
        evac_report::plot::write_svg(result, path)?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}
