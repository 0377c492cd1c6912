//! The lab's one command runner and one process finder.
//!
//! Every program the lab runs to build or tear down (`ip`, `tc`, `cp`,
//! `umount`...) goes through [`run`], bounded by a timeout: a wedged tool
//! must fail a test, not hang it. Every process the lab looks for (a QEMU
//! evac started, what a crashed lab left) is found by [`pids_where`] on
//! `/proc`, by something only the lab puts on a command line (its
//! directory, its names): the lab never kills by a broad name.

use std::io;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long [`run`] lets a tool take.
pub const TOOL_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs `program args` to completion (at most [`TOOL_TIMEOUT`]); its
/// stdout, or an error with its stderr.
pub fn run(program: &str, args: &[&str]) -> io::Result<String> {
    run_with_timeout(program, args, TOOL_TIMEOUT)
}

/// [`run`] with its own bound: killed (by its pid) when it takes longer.
pub fn run_with_timeout(program: &str, args: &[&str], timeout: Duration) -> io::Result<String> {
    let command = || format!("`{program} {}`", args.join(" "));
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| io::Error::new(e.kind(), format!("cannot run {program}: {e}")))?;
    // The pipes are read on threads so that a chatty tool never blocks on
    // a full pipe while we wait for it.
    let mut stdout = child.stdout.take().expect("piped");
    let mut stderr = child.stderr.take().expect("piped");
    let out = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = io::Read::read_to_end(&mut stdout, &mut buf);
        buf
    });
    let err = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = io::Read::read_to_end(&mut stderr, &mut buf);
        buf
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("{} timed out after {timeout:?}", command()),
            ));
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let stdout = out.join().unwrap_or_default();
    let stderr = err.join().unwrap_or_default();
    if status.success() {
        Ok(String::from_utf8_lossy(&stdout).into_owned())
    } else {
        Err(io::Error::other(format!(
            "{} failed ({status}): {}",
            command(),
            String::from_utf8_lossy(&stderr).trim()
        )))
    }
}

/// Runs `ip <args>` ([`run`]).
pub fn ip(args: &[&str]) -> io::Result<String> {
    run("ip", args)
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

/// The arguments of `pid`'s command line (empty when it is gone).
pub fn cmdline(pid: u32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| {
            c.split(|b| *b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// The live processes, other than this one, whose command line (its
/// arguments joined by spaces) satisfies `pred`.
pub fn pids_where(pred: impl Fn(&str) -> bool) -> Vec<u32> {
    let me = std::process::id();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != me)
        .filter(|&pid| {
            let args = cmdline(pid);
            !args.is_empty() && pred(&args.join(" ")) && pid_alive(pid)
        })
        .collect()
}

/// The processes whose command line contains `needle` ([`pids_where`]).
pub fn pids_mentioning(needle: &str) -> Vec<u32> {
    pids_where(|cmdline| cmdline.contains(needle))
}

/// The first process whose command line contains `needle`.
pub fn find_pid(needle: &str) -> Option<u32> {
    pids_mentioning(needle).into_iter().next()
}

/// The processes whose command line names a file under `dir`: what was
/// started with a lab's files (its QEMUs, its daemons). Never a broad
/// match: nothing for a directory of fewer than 8 bytes (`/`, `/tmp`).
pub fn pids_under(dir: &Path) -> Vec<u32> {
    let needle = format!("{}/", dir.display());
    if needle.len() < 8 {
        return Vec::new();
    }
    pids_mentioning(&needle)
}

/// Sends `signal` to `pid`.
pub fn kill(pid: u32, signal: i32) {
    // SAFETY: kill(2) touches no memory of ours; callers only name
    // processes the lab started or found by its own names.
    unsafe {
        libc::kill(pid as i32, signal);
    }
}

/// Stops a child the lab started: `signal` (SIGTERM, or SIGINT for a
/// tool that then flushes what it holds), SIGKILL if it is still there
/// after `grace`, and reaps it, so that neither a hung process nor a
/// zombie outlives the lab.
pub fn stop(mut child: std::process::Child, signal: i32, grace: Duration) {
    kill(child.id(), signal);
    wait_until(grace, || child.try_wait().ok().flatten().is_some());
    let _ = child.kill();
    let _ = child.wait();
}

/// SIGKILLs every process [`pids_under`] `dir` finds; returns their pids.
pub fn kill_under(dir: &Path) -> Vec<u32> {
    let pids = pids_under(dir);
    for &pid in &pids {
        kill(pid, libc::SIGKILL);
    }
    pids
}

/// Waits until `cond` holds (`true`) or `timeout` passes (`false`),
/// checking every 50 ms.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_returns_stdout_or_stderr_and_is_bounded() {
        assert_eq!(run("sh", &["-c", "echo out"]).unwrap(), "out\n");
        let e = run("sh", &["-c", "echo bad >&2; exit 3"])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("`sh -c echo bad >&2; exit 3` failed") && e.ends_with(": bad"),
            "{e}"
        );
        let started = Instant::now();
        let e = run_with_timeout("sleep", &["10"], Duration::from_millis(200)).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(run("/nonexistent/tool", &[])
            .unwrap_err()
            .to_string()
            .contains("cannot run"));
    }

    #[test]
    fn finds_a_process_by_its_command_line_and_never_broadly() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("marker");
        let mut child = Command::new("sleep")
            .arg("30")
            .env("X", &marker) // not on the command line: not found
            .spawn()
            .unwrap();
        assert!(!pids_under(dir.path()).contains(&child.id()));
        child.kill().unwrap();
        child.wait().unwrap();
        // `tail -f <dir>/marker`: the path is an argument (one process: a
        // shell would fork children that carry its command line for a
        // moment).
        std::fs::write(&marker, "").unwrap();
        let mut child = Command::new("tail").arg("-f").arg(&marker).spawn().unwrap();
        assert!(wait_until(Duration::from_secs(5), || pids_under(dir.path()) == [child.id()]));
        assert!(pids_under(Path::new("/")).is_empty(), "never every process");
        assert_eq!(kill_under(dir.path()), [child.id()]);
        child.wait().unwrap();
        assert!(!pid_alive(child.id()));
    }
}
