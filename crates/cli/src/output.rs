//! Where `evac`'s results go, and how it exits.
//!
//! The rules a script can rely on:
//!
//! - Exit codes ([`Exit`]): 0 when every VM migrated (or the command is not
//!   an evacuation, e.g. a finished sweep), 3 when the evacuation ran to its
//!   end but some VM did not migrate, 1 for an error, 2 for a usage error
//!   (clap's own).
//! - Output paths (`--json`, `--csv`, `--plot`) are opened before anything
//!   runs, so a path that cannot be written is refused in a second, not
//!   after an hour of real migrations; a file this run created is removed
//!   again if the run fails before it has a result.
//! - `-` is stdout for an output (then the human summary goes to stderr, so
//!   stdout carries only the requested format) and stdin for an input.
//! - A closed stdout (`evac simulate | head -2`) ends printing quietly; the
//!   files are written all the same, and the exit code is the run's. Any
//!   other write error (a full disk, `/dev/full`) is one line naming the
//!   path.
//!
//! Every result file is written even when another one fails; the first
//! error is reported.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use evac_report::{Outcome, RunResult};

/// What `evac` exits with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// 0: every VM migrated, or a non-evacuation command finished.
    Done = 0,
    /// 1: an error; nothing (or not everything) could run.
    Error = 1,
    /// 3: the evacuation ended, and at least one VM did not migrate.
    NotAllMigrated = 3,
}

impl Exit {
    /// The code for a finished evacuation's result.
    pub fn of(result: &RunResult) -> Exit {
        if result.vms.iter().all(|vm| vm.outcome == Outcome::Migrated) {
            Exit::Done
        } else {
            Exit::NotAllMigrated
        }
    }
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> ExitCode {
        ExitCode::from(exit as u8)
    }
}

/// The largest input file (scenario, grid, inventory) read from stdin: far
/// beyond any real one, small enough to never exhaust memory.
pub const MAX_INPUT_BYTES: u64 = 16 << 20;

/// Reads an input named on the command line, `-` being stdin; returns its
/// text and how error messages should name it.
pub fn read_stdin_input() -> Result<String> {
    let mut text = String::new();
    io::stdin()
        .lock()
        .take(MAX_INPUT_BYTES + 1)
        .read_to_string(&mut text)
        .context("reading <stdin>")?;
    if text.len() as u64 > MAX_INPUT_BYTES {
        bail!("<stdin>: longer than {MAX_INPUT_BYTES} bytes; no scenario, grid or inventory is this large");
    }
    Ok(text)
}

/// Whether a command-line path means stdin or stdout.
pub fn is_dash(path: &Path) -> bool {
    path.as_os_str() == "-"
}

/// One output named on the command line, opened before the run.
#[derive(Debug)]
struct Sink {
    path: PathBuf,
    /// `None` for stdout.
    file: Option<File>,
    /// Whether this run created the file (and so removes it if nothing is
    /// ever written).
    created: bool,
    written: bool,
}

impl Sink {
    fn open(path: &Path, what: &str) -> Result<Sink> {
        if is_dash(path) {
            return Ok(Sink {
                path: path.to_owned(),
                file: None,
                created: false,
                written: false,
            });
        }
        if path.is_dir() {
            bail!("--{what} {}: is a directory", path.display());
        }
        let existed = path.exists();
        // Opened, not truncated: a file that already exists keeps its
        // content until there is a result to replace it with.
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .with_context(|| format!("--{what} {}: cannot be written", path.display()))?;
        Ok(Sink {
            path: path.to_owned(),
            file: Some(file),
            created: !existed,
            written: false,
        })
    }

    /// Replaces the content with what `fill` writes.
    fn write(&mut self, fill: impl FnOnce(&mut dyn Write) -> Result<()>) -> Result<()> {
        self.written = true;
        match &mut self.file {
            Some(file) => {
                let context = || format!("writing {}", self.path.display());
                // Devices (`/dev/stdout`, `/dev/full`) can be neither
                // truncated nor synced; only a regular file is.
                let regular = file.metadata().with_context(context)?.is_file();
                if regular {
                    file.set_len(0)
                        .and_then(|()| file.rewind())
                        .with_context(context)?;
                }
                // A result of a million VMs is hundreds of MB: large
                // writes, not 8 KiB ones.
                let mut out = BufWriter::with_capacity(1 << 20, &*file);
                fill(&mut out)
                    .and_then(|()| out.flush().map_err(Into::into))
                    .with_context(context)?;
                drop(out);
                if regular {
                    file.sync_all().with_context(context)?;
                }
                say(&format!("wrote {}", self.path.display()));
                Ok(())
            }
            None => {
                let mut out = Console::stdout();
                let mut buffer = Vec::new();
                fill(&mut buffer).context("writing <stdout>")?;
                out.write(&buffer)
            }
        }
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        if self.created && !self.written {
            // The run failed before it had a result: leave no empty file
            // that looks like one.
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// A formatter of a result into one output.
pub type Render<'a, T> = &'a dyn Fn(&T, &mut dyn Write) -> Result<()>;

/// The outputs of one command, opened (checked) up front.
#[derive(Debug, Default)]
pub struct Outputs {
    sinks: Vec<(&'static str, Sink)>,
}

impl Outputs {
    /// Opens each `(option name, path)`; at most one may be `-`.
    pub fn open(requested: &[(&'static str, Option<&Path>)]) -> Result<Outputs> {
        let dashes = requested.iter().filter(|(_, p)| p.is_some_and(is_dash)).count();
        if dashes > 1 {
            bail!("only one output can go to stdout (`-`)");
        }
        let mut sinks = Vec::new();
        for &(what, path) in requested {
            if let Some(path) = path {
                sinks.push((what, Sink::open(path, what)?));
            }
        }
        Ok(Outputs { sinks })
    }

    /// Whether one output goes to stdout, so the summary must not.
    pub fn uses_stdout(&self) -> bool {
        self.sinks.iter().any(|(_, sink)| sink.file.is_none())
    }

    /// Where the human-readable summary goes.
    pub fn summary_console(&self) -> Console {
        if self.uses_stdout() {
            Console::stderr()
        } else {
            Console::stdout()
        }
    }

    /// Writes `value` into every output with the renderer for its option
    /// name; every one is attempted, the first error is returned.
    pub fn write_all<T>(&mut self, value: &T, renderers: &[(&str, Render<'_, T>)]) -> Result<()> {
        let mut first_error = None;
        for (what, sink) in &mut self.sinks {
            let Some((_, render)) = renderers.iter().find(|(name, _)| name == what) else {
                continue;
            };
            if let Err(error) = sink.write(|out| render(value, out)) {
                first_error.get_or_insert(error);
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

/// Stdout or stderr for human-readable text: a closed pipe stops the
/// printing quietly, any other error is returned.
pub struct Console {
    stdout: bool,
}

impl Console {
    pub fn stdout() -> Console {
        Console { stdout: true }
    }

    pub fn stderr() -> Console {
        Console { stdout: false }
    }

    pub fn line(&mut self, text: &str) -> Result<()> {
        let mut bytes = Vec::with_capacity(text.len() + 1);
        bytes.extend_from_slice(text.as_bytes());
        bytes.push(b'\n');
        self.write(&bytes)
    }

    fn write(&mut self, bytes: &[u8]) -> Result<()> {
        let (result, name) = if self.stdout {
            let mut out = io::stdout().lock();
            (out.write_all(bytes).and_then(|()| out.flush()), "<stdout>")
        } else {
            let mut out = io::stderr().lock();
            (out.write_all(bytes).and_then(|()| out.flush()), "<stderr>")
        };
        match result {
            Err(error) if error.kind() == io::ErrorKind::BrokenPipe => Ok(()),
            other => other.with_context(|| format!("writing {name}")),
        }
    }
}

/// A line for the operator on stderr; a closed stderr is no reason to fail.
pub fn say(text: &str) {
    let _ = writeln!(io::stderr().lock(), "{text}");
}

/// Prints the summary of an evacuation, writes its result into every
/// output, and says how to exit: the result files are written even when the
/// summary could not be printed.
/// Records in a result what only the binary knows: which evac made it,
/// from which file (`origin`), with which seed.
pub fn stamp(result: &mut RunResult, origin: &str, seed: Option<u64>) {
    result.evac_version = Some(env!("EVAC_VERSION").to_owned());
    result.scenario = Some(origin.to_owned());
    result.seed = seed;
}

/// How a result names its input: the file as given, `<stdin>` for `-`, or
/// `default` for the embedded default scenario.
pub fn origin(path: Option<&Path>) -> String {
    match path {
        None => "default".to_owned(),
        Some(path) if is_dash(path) => "<stdin>".to_owned(),
        Some(path) => path.display().to_string(),
    }
}

pub fn finish(result: &RunResult, outputs: &mut Outputs, mut console: Console) -> Result<Exit> {
    let printed = console.line(&evac_report::summary::render_text(result));
    outputs.write_all(
        result,
        &[
            ("json", &|result, out| {
                result.write_json(&mut *out)?;
                Ok(out.write_all(b"\n")?)
            }),
            ("csv", &|result, out| Ok(evac_report::write_csv(result, out)?)),
            ("plot", &render_plot),
        ],
    )?;
    printed?;
    Ok(Exit::of(result))
}

/// The SVG picture, drawn into a file of our own (the plotting library
/// writes to a path) and copied into `out`.
fn render_plot(result: &RunResult, out: &mut dyn Write) -> Result<()> {
    let path = std::env::temp_dir().join(format!("evac-plot-{}.svg", std::process::id()));
    let drawn = evac_report::plot::write_svg(result, &path)
        .map_err(anyhow::Error::from)
        .and_then(|()| {
            let mut file = File::open(&path)?;
            io::copy(&mut file, out)?;
            Ok(())
        });
    let _ = std::fs::remove_file(&path);
    drawn
}
