//! `evac`: plan and run the evacuation of a data center's VMs over a WAN.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, CommandFactory, Parser, Subcommand};
use evac_controller::{Order, PolicyKind};
use evac_scenario::Scenario;

mod explain;
mod init_cmd;
mod lab;
mod metrics;
mod output;
mod plan_cmd;
mod progress;
mod report_cmd;
mod run;

/// mimalloc rather than glibc's malloc: see Cargo.toml.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use output::{is_dash, say, Exit, Outputs};

#[derive(Parser)]
#[command(name = "evac", version = env!("EVAC_VERSION"), about, long_about = None)]
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
    /// Evacuate the real VMs of an inventory: QEMU VMs over QMP, or the
    /// domains of libvirt hosts (`backend = "libvirt"`, in an evac built
    /// with the `libvirt` feature); Ctrl-C cancels the migrations in flight
    /// and leaves every VM running exactly once.
    Run {
        /// Inventory file (TOML): hosts and VMs, with their QMP sockets
        /// (QEMU) or their daemons' URIs (libvirt); `-` reads a QEMU
        /// inventory from stdin.
        inventory: PathBuf,
        /// sequential, parallel, static, aimd-local, aimd-global or deadline.
        #[arg(long, value_parser = parse_with::<PolicyKind>)]
        policy: Option<PolicyKind>,
        /// Draw no live progress on stderr (it is drawn only when stderr is
        /// a terminal anyway).
        #[arg(long, short)]
        quiet: bool,
        /// Take up the unfinished run of the run dir's journal (after evac
        /// was killed): reconnect to the migrations in flight, migrate
        /// nothing twice, write one result covering every VM.
        #[arg(long)]
        resume: bool,
        /// Serve live Prometheus metrics at http://ADDR/metrics during the
        /// run (e.g. 127.0.0.1:9100; port 0 picks a free one, printed).
        #[arg(long, value_name = "ADDR")]
        metrics: Option<String>,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Read a live fleet (QEMU, or libvirt domains in a build with the
    /// `libvirt` feature) without migrating anything (memory, dirty rates
    /// measured by QEMU), simulate its evacuation with every policy and
    /// print the triage of the recommended one.
    Plan {
        /// Inventory file (TOML), as for `evac run`.
        inventory: PathBuf,
        /// How long to sample each VM's dirty pages: a whole number of
        /// seconds, at least 1 (QEMU counts them per second), e.g. `3s`.
        #[arg(long, default_value = "2s", value_parser = parse_whole_seconds)]
        sample: std::time::Duration,
        /// How long the second sample, for the working set, lasts: whole
        /// seconds (a value shorter than `--sample` is raised to it). When
        /// it finds a working set, the guest is also sampled at every power
        /// of two seconds below it, for its dirty curve's shape.
        #[arg(long, default_value = "8s", value_parser = parse_whole_seconds)]
        working_set_sample: std::time::Duration,
        /// How many runs of 64 KiB of each guest's memory to read (at random
        /// places) for its share of zero pages and its zstd ratio; 0 reads
        /// none; at most 16384 (1 GiB).
        #[arg(long, default_value_t = 256, value_name = "RUNS",
              value_parser = clap::value_parser!(u16).range(0..=16384))]
        memory_sample: u16,
        /// How many probe migrations measure the setup time per migration
        /// (libvirt: a paused 16 MiB domain moved with the fleet's flags,
        /// then destroyed; no fleet VM moves); 0 measures none. Unused when
        /// the inventory states `[migration] setup_time`.
        #[arg(long, default_value_t = 3, value_name = "N",
              value_parser = clap::value_parser!(u8).range(0..=20))]
        setup_probes: u8,
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
    /// Print a shell completion script to stdout, e.g. `evac completions
    /// bash > /etc/bash_completion.d/evac`.
    Completions {
        /// bash, elvish, fish, powershell or zsh.
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff) to stdout, e.g. `evac man | man -l -`;
    /// with a command, that command's page (`evac man run`).
    Man {
        /// A command: simulate, sweep, run, plan, init, report, lab...
        command: Option<String>,
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
    /// Print, per VM, why the controller started it when it did and with
    /// what, or gave it up (the `deadline` planner explains itself).
    #[arg(long)]
    explain: bool,
}

#[derive(Args)]
pub(crate) struct OutputArgs {
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

fn parse_duration_arg(text: &str) -> Result<std::time::Duration, String> {
    evac_model::parse_duration(text).map_err(|e| e.to_string())
}

/// A duration of whole seconds, at least one: what QEMU's dirty-rate
/// sampling takes (`500ms` or `2.5s` would be silently rounded otherwise).
fn parse_whole_seconds(text: &str) -> Result<std::time::Duration, String> {
    let duration = parse_duration_arg(text)?;
    if duration.subsec_nanos() != 0 || duration.is_zero() {
        return Err(format!(
            "`{text}` is not a whole number of seconds, at least 1 (QEMU samples dirty pages per second), e.g. `2s`"
        ));
    }
    Ok(duration)
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
            resume,
            metrics,
            output,
        } => run::run(&inventory, policy, quiet, resume, metrics.as_deref(), &output),
        Command::Plan {
            inventory,
            sample,
            working_set_sample,
            memory_sample,
            setup_probes,
            scenario_out,
            json,
        } => plan_cmd::plan(
            &inventory,
            &evac_plan::live::Reading {
                sample,
                long: working_set_sample,
                runs: usize::from(memory_sample),
                setup_probes: usize::from(setup_probes),
                // Set by `plan` from the file itself.
                setup_stated: false,
            },
            scenario_out.as_deref(),
            json.as_deref(),
        )
        .map(|()| Exit::Done),
        Command::Init { file } => init_cmd::init(file.as_deref()).map(|()| Exit::Done),
        Command::Report {
            results,
            output,
            label,
        } => report_cmd::report(&results, &label, &output).map(|()| Exit::Done),
        Command::Lab { command } => lab::dispatch(command).map(|()| Exit::Done),
        Command::Completions { shell } => {
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "evac", &mut script);
            write_stdout(&script).map(|()| Exit::Done)
        }
        Command::Man { command } => man_page(command.as_deref())
            .and_then(|page| write_stdout(&page))
            .map(|()| Exit::Done),
    }
}

/// The manual page of evac, or of one of its commands (`evac-run(1)`),
/// generated from the same definition as `--help`.
fn man_page(command: Option<&str>) -> Result<Vec<u8>> {
    let evac = Cli::command();
    let page = match command {
        None => evac,
        Some(name) => {
            let Some(sub) = evac.find_subcommand(name) else {
                let names: Vec<&str> = evac.get_subcommands().map(|c| c.get_name()).collect();
                anyhow::bail!(
                    "evac man: no command `{name}`; expected one of {}{}",
                    names.join(", "),
                    evac_model::suggest::did_you_mean(name, names.iter().copied())
                );
            };
            // Titled evac-run(1), as git's pages are; used as `evac run`.
            sub.clone()
                .display_name(format!("evac-{name}"))
                .bin_name(format!("evac {name}"))
        }
    };
    let mut roff = Vec::new();
    clap_mangen::Man::new(page)
        .source(concat!("evac ", env!("EVAC_VERSION")))
        .render(&mut roff)
        .context("rendering the manual page")?;
    Ok(roff)
}

fn write_stdout(bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(bytes)
        .and_then(|()| stdout.flush())
        .context("writing to stdout")
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
    if let Some(warning) = evac_sim::horizon_warning(&scenario.fleet, &scenario.network, &scenario.controller)
    {
        say(&warning);
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
    let mut result = if overrides.explain {
        let (result, explanations) = explain::simulate(&scenario);
        console.line(explanations.trim_end())?;
        result
    } else {
        evac_sim::simulate_evacuation(
            &scenario.fleet,
            &scenario.network,
            scenario.migration,
            &scenario.controller,
        )
    };
    output::stamp(&mut result, &output::origin(path), Some(scenario.seed));
    let exit = output::finish(&result, &mut outputs, console);
    // The process ends right after: its exit frees a million VMs' records
    // and the fleet at once, where dropping them frees every name and
    // decision one by one (half a second at a million VMs).
    std::mem::forget(result);
    std::mem::forget(scenario);
    exit
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
    let rows = evac_sweep::run(&grid)?;
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
