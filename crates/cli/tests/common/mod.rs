//! What the `evac` binary's tests share: running it as a user does.

#![allow(dead_code)] // each test file uses some of these

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// The `evac` binary under test, with backtraces on should it panic.
pub fn evac_command() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_evac"));
    command.env("RUST_BACKTRACE", "1");
    command
}

/// A path as an argument of `evac` (the tests' paths are UTF-8).
pub fn arg(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 path")
}

/// `evac ARGS`, run to its end.
pub fn evac(args: &[&str]) -> Output {
    evac_command().args(args).output().expect("evac runs")
}

/// A scenario moving one 4 GiB VM, `web`, from `src` to `dst` (10 Gbps
/// NICs) over a 1 Gbps WAN. `controller`, a `[controller]` table or
/// nothing, stands after `[network]`: without one, `src`'s `nic` is on line
/// 7 and `web`'s `memory` on line 15.
pub fn web_scenario(controller: &str) -> String {
    format!(
        "name = \"s\"\n[network]\nwan_bandwidth = \"1 Gbps\"\n{controller}{hosts}\
         [[vm]]\nname = \"web\"\nhost = \"src\"\nmemory = \"4 GiB\"\n",
        hosts = evac_testkit::src_dst_toml("10 Gbps")
    )
}

/// A stream's bytes as text.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A child process killed and reaped when dropped, so a failing test
/// leaves no `evac` behind.
pub struct KillOnDrop(pub Child);

impl KillOnDrop {
    /// Waits for `evac` to end (at most 60 s: it is ending when this is
    /// called) and checks it exited with 0.
    #[track_caller]
    pub fn assert_exits_successfully(&mut self) {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(status) = self.0.try_wait().unwrap() {
                break status;
            }
            assert!(std::time::Instant::now() < deadline, "evac still runs after 60 s");
            std::thread::sleep(Duration::from_millis(50));
        };
        assert!(status.success(), "{status}");
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `evac run INVENTORY --quiet --metrics 127.0.0.1:0 EXTRA...`, its stderr
/// echoed to the test's: the running `evac` and the `host:port` its metrics
/// are served at (waiting up to 30 s for the line that says it).
pub fn run_with_metrics(inventory: &Path, extra: &[&str]) -> (KillOnDrop, String) {
    let mut evac = KillOnDrop(
        evac_command()
            .arg("run")
            .arg(inventory)
            .args(["--quiet", "--metrics", "127.0.0.1:0"])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("evac runs"),
    );
    let stderr = evac.0.stderr.take().expect("piped");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("evac: {line}");
            if let Some(url) = line.strip_prefix("metrics at http://") {
                let _ = tx.send(url.trim_end_matches("/metrics").to_owned());
            }
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("evac prints the metrics address");
    (evac, addr)
}

/// `evac run --quiet --resume INVENTORY --json JSON`, run to its end.
pub fn run_resumed(inventory: &Path, json: &Path) -> Output {
    evac_command()
        .args(["run", "--quiet", "--resume"])
        .arg(inventory)
        .arg("--json")
        .arg(json)
        .output()
        .expect("evac runs")
}

/// One scrape: every sample line, `name{labels}` to value.
pub fn scrape(addr: &str) -> std::collections::HashMap<String, f64> {
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: evac\r\n\r\n")
        .unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            Some((name.to_owned(), value.parse().ok()?))
        })
        .collect()
}

/// A JSON file `evac` wrote (`--json`, a plan), parsed.
#[track_caller]
pub fn read_json(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The entries of a journal (JSON lines), those that parse; none when the
/// file is not there yet.
pub fn journal_lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}
