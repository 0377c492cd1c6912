//! `evac report` opened in a real headless Chromium (Debian's `chromium`),
//! driven over the DevTools protocol: the page loads with no console error,
//! no failed request and no exception, and its charts have content.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tungstenite::{Message, WebSocket};

/// Every wait of this test ends by then.
const TIMEOUT: Duration = Duration::from_secs(60);

fn chromium_available() -> Result<(), String> {
    match Command::new("chromium").arg("--version").output() {
        Ok(out) if out.status.success() => Ok(()),
        Ok(out) => Err(format!("`chromium --version` failed: {}", out.status)),
        Err(e) => Err(format!(
            "chromium is not installed ({e}); apt-get install chromium"
        )),
    }
}

/// A headless Chromium of our own, killed (by its pid) when dropped.
struct Browser {
    child: Child,
    _profile: tempfile::TempDir,
    ws: WebSocket<TcpStream>,
    next_id: u64,
    session: String,
    /// Console errors, exceptions and failed loads seen so far.
    errors: Vec<String>,
    load_fired: bool,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Browser {
    fn launch() -> Self {
        let profile = tempfile::tempdir().unwrap();
        let mut child = Command::new("chromium")
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--hide-scrollbars",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
                "--window-size=1400,1000",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("chromium starts");
        // It prints where its DevTools endpoint listens on stderr.
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(url) = line.strip_prefix("DevTools listening on ") {
                    let _ = tx.send(url.trim().to_owned());
                }
            }
        });
        let url = match rx.recv_timeout(TIMEOUT) {
            Ok(url) => url,
            Err(_) => {
                let _ = child.kill();
                panic!("chromium did not print its DevTools address within {TIMEOUT:?}");
            }
        };
        let authority = url
            .strip_prefix("ws://")
            .and_then(|rest| rest.split('/').next())
            .expect("a ws:// address");
        let addr: SocketAddr = authority.parse().expect("a numeric address");
        let stream = TcpStream::connect_timeout(&addr, TIMEOUT).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let (ws, _) = tungstenite::client(url.as_str(), stream).expect("websocket handshake");
        let mut browser = Browser {
            child,
            _profile: profile,
            ws,
            next_id: 0,
            session: String::new(),
            errors: Vec::new(),
            load_fired: false,
        };
        let target = browser.call(None, "Target.createTarget", json!({"url": "about:blank"}));
        let target_id = target["targetId"].as_str().unwrap().to_owned();
        let attached = browser.call(
            None,
            "Target.attachToTarget",
            json!({"targetId": target_id, "flatten": true}),
        );
        browser.session = attached["sessionId"].as_str().unwrap().to_owned();
        for domain in ["Runtime.enable", "Log.enable", "Page.enable", "Network.enable"] {
            browser.page_call(domain, json!({}));
        }
        browser
    }

    /// Sends a command and waits for its answer, noting events meanwhile.
    fn call(&mut self, session: Option<&str>, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut message = json!({"id": id, "method": method, "params": params});
        if let Some(session) = session {
            message["sessionId"] = json!(session);
        }
        self.ws
            .send(Message::text(message.to_string()))
            .expect("send to chromium");
        let deadline = Instant::now() + TIMEOUT;
        loop {
            assert!(
                Instant::now() < deadline,
                "no answer to {method} within {TIMEOUT:?}"
            );
            let Some(reply) = self.receive() else { continue };
            if reply["id"] == json!(id) {
                assert!(reply.get("error").is_none(), "{method} failed: {reply}");
                return reply["result"].clone();
            }
        }
    }

    fn page_call(&mut self, method: &str, params: Value) -> Value {
        let session = self.session.clone();
        self.call(Some(&session), method, params)
    }

    /// One message, events recorded; `None` on a read timeout.
    fn receive(&mut self) -> Option<Value> {
        let message = match self.ws.read() {
            Ok(Message::Text(text)) => serde_json::from_str::<Value>(&text).unwrap(),
            Ok(_) => return None,
            Err(tungstenite::Error::Io(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return None
            }
            Err(e) => panic!("reading from chromium: {e}"),
        };
        let params = &message["params"];
        match message["method"].as_str() {
            Some("Runtime.consoleAPICalled")
                if matches!(params["type"].as_str(), Some("error" | "assert")) =>
            {
                self.errors.push(format!("console.error: {}", params["args"]));
            }
            Some("Runtime.exceptionThrown") => {
                self.errors
                    .push(format!("exception: {}", params["exceptionDetails"]));
            }
            Some("Log.entryAdded") if params["entry"]["level"] == "error" => {
                self.errors.push(format!("log: {}", params["entry"]["text"]));
            }
            Some("Network.loadingFailed") => {
                self.errors.push(format!("failed load: {}", params["errorText"]));
            }
            Some("Page.loadEventFired") => self.load_fired = true,
            _ => {}
        }
        Some(message)
    }

    /// Opens `path` and waits for its load event, and a moment more for
    /// late console messages.
    fn open(&mut self, path: &Path) {
        self.load_fired = false;
        let url = format!("file://{}", path.canonicalize().unwrap().display());
        self.page_call("Page.navigate", json!({"url": url}));
        let deadline = Instant::now() + TIMEOUT;
        while !self.load_fired {
            assert!(Instant::now() < deadline, "{url} did not load within {TIMEOUT:?}");
            self.receive();
        }
        // A round trip after the load: events queued before it are read.
        self.eval("1");
    }

    /// Evaluates a JavaScript expression in the page; its JSON value.
    fn eval(&mut self, expression: &str) -> Value {
        let reply = self.page_call(
            "Runtime.evaluate",
            json!({"expression": expression, "returnByValue": true}),
        );
        assert!(reply.get("exceptionDetails").is_none(), "{expression}: {reply}");
        reply["result"]["value"].clone()
    }
}

fn evac(args: &[&str]) {
    let out = Command::new(env!("CARGO_BIN_EXE_evac"))
        .args(args)
        .output()
        .expect("evac runs");
    // 3: it ran, and some VM did not migrate (aimd-global loses some).
    assert!(
        matches!(out.status.code(), Some(0 | 3)),
        "evac {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn the_report_of_two_runs_renders_in_chromium_without_errors() {
    if evac_lab::skip_without(&[chromium_available]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("deadline.json");
    let b = dir.path().join("aimd-global.json");
    let html = dir.path().join("report.html");
    // The default scenario: two racks lose power; aimd-global loses VMs there.
    evac(&["simulate", "--policy", "deadline", "--json", a.to_str().unwrap()]);
    evac(&[
        "simulate",
        "--policy",
        "aimd-global",
        "--json",
        b.to_str().unwrap(),
    ]);
    evac(&[
        "report",
        a.to_str().unwrap(),
        b.to_str().unwrap(),
        "-o",
        html.to_str().unwrap(),
    ]);
    let (a, b) = (read_json(&a), read_json(&b));

    let mut browser = Browser::launch();
    browser.open(&html);
    assert_eq!(browser.errors, Vec::<String>::new(), "the page logged errors");

    // One Gantt chart per run, one row per VM of its result file.
    let rows = browser.eval(
        "Array.from(document.querySelectorAll('svg.gantt')).map(s => s.querySelectorAll('g.gantt-row').length)",
    );
    let vms = |r: &Value| r["vms"].as_array().unwrap().len();
    assert_eq!(rows, json!([vms(&a), vms(&b)]));
    // Every migrated VM has a bar the browser lays out with a width.
    let migrated = |r: &Value| {
        r["vms"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|vm| vm["outcome"] == "migrated")
            .count()
    };
    let bars = browser.eval(
        "Array.from(document.querySelectorAll('svg.gantt')).map(s => \
           Array.from(s.querySelectorAll('g.gantt-row[data-outcome=migrated] rect.bar.migrated')) \
             .filter(r => r.getBBox().width > 0 && r.getBoundingClientRect().height > 0).length)",
    );
    assert_eq!(bars, json!([migrated(&a), migrated(&b)]));
    let lost = vms(&b) - migrated(&b);
    assert!(
        lost > 0,
        "aimd-global was expected to lose VMs in the default scenario"
    );
    let marks = browser.eval(
        "document.querySelectorAll('svg.gantt')[1].querySelectorAll('g.gantt-row[data-outcome=lost] .mark.lost').length",
    );
    assert_eq!(marks, json!(lost));
    // VM names are text on the axis.
    let first = a["vms"][0]["name"].as_str().unwrap();
    let names = browser.eval(
        "Array.from(document.querySelectorAll('svg.gantt')[0].querySelectorAll('text.vm-name')).map(t => t.textContent)",
    );
    assert!(names.as_array().unwrap().contains(&json!(first)), "{names}");
    // A dashed line per distinct power-off instant in the scenario.
    let mut offs: Vec<f64> = a["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|h| h["power_off_s"].as_f64())
        .collect();
    offs.dedup();
    assert!(!offs.is_empty());
    let lines =
        browser.eval("document.querySelectorAll('svg.gantt')[0].querySelectorAll('line.power-off').length");
    assert_eq!(lines, json!(offs.len()));
    // The time series and the CDF: a curve per run, each with a drawn length.
    for class in ["throughput", "capacity", "in-flight", "cdf-curve"] {
        let lengths = browser.eval(&format!(
            "Array.from(document.querySelectorAll('path.{class}')).map(p => p.getTotalLength() > 10)"
        ));
        assert_eq!(lengths, json!([true, true]), "{class}");
    }
    // The summary names the lost VMs of the second run.
    let text = browser.eval("document.body.innerText");
    let lost_vm = b["vms"]
        .as_array()
        .unwrap()
        .iter()
        .find(|vm| vm["outcome"] == "lost")
        .unwrap()["name"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        text.as_str().unwrap().contains(&format!("{lost_vm} on ")),
        "{text}"
    );
    assert_eq!(browser.errors, Vec::<String>::new(), "the page logged errors");

    // The screenshots in docs/ come from here:
    // EVAC_REPORT_SCREENSHOTS=docs cargo test -p evac-cli --test report_browser
    if let Some(dir) = std::env::var_os("EVAC_REPORT_SCREENSHOTS") {
        // Relative to the workspace's root, where the command is typed.
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(dir);
        for (name, from, to) in [
            ("report-summary.png", "h1", "#gantt"),
            ("report-gantt.png", "#gantt", "#wan"),
            ("report-charts.png", "#wan", ""),
        ] {
            let clip = browser.eval(&format!(
                "(() => {{ const top = document.querySelector('{from}').getBoundingClientRect().top + scrollY - 8; \
                   const end = '{to}' ? document.querySelector('{to}').getBoundingClientRect().top + scrollY - 8 \
                                      : document.documentElement.scrollHeight; \
                   return {{x: 0, y: top, width: document.documentElement.clientWidth, height: end - top, scale: 1}}; }})()"
            ));
            let shot = browser.page_call(
                "Page.captureScreenshot",
                json!({"format": "png", "clip": clip, "captureBeyondViewport": true}),
            );
            use base64::Engine;
            let png = base64::engine::general_purpose::STANDARD
                .decode(shot["data"].as_str().unwrap())
                .unwrap();
            std::fs::write(dir.join(name), png).unwrap();
        }
    }
}

/// The harness itself: a page with a script error and a missing image is
/// caught, so the test above cannot pass by not listening.
#[test]
fn the_browser_harness_sees_console_errors_and_failed_loads() {
    if evac_lab::skip_without(&[chromium_available]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("broken.html");
    std::fs::write(
        &page,
        "<!DOCTYPE html><html><body><img src=\"missing.png\"><script>console.error('boom'); no_such_function();</script></body></html>",
    )
    .unwrap();
    let mut browser = Browser::launch();
    browser.open(&page);
    let errors = browser.errors.join("\n");
    assert!(errors.contains("boom"), "{errors}");
    assert!(errors.contains("no_such_function"), "{errors}");
    assert!(
        errors.contains("missing.png") || errors.contains("ERR_FILE_NOT_FOUND"),
        "{errors}"
    );
}
