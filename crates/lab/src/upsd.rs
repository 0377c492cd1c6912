//! A real UPS daemon on this machine: Network UPS Tools' `upsd` serving one
//! UPS played by the `dummy-ups` driver, whose values the test sets as it
//! goes ([`LabUps::set`]), so that tests (the NUT client's, a lab
//! evacuation's) see a UPS whose battery drains on cue.
//!
//! The values are `dummy-ups`'s definition file (`<name>.dev`, one
//! `variable: value` per line, as `upsc` prints them):
//!
//! ```text
//! ups.status: OB
//! battery.runtime: 900
//! ```
//!
//! The driver reads it again whenever its timestamp changes (NUT 2.8's
//! `dummy-once` mode, polled every second here): [`LabUps::set`] replaces
//! the file and waits until `upsd` serves the new status. Why not a `.seq`
//! script of `TIMER` lines: its clock starts when the driver does, and
//! `upsd` says `WAIT` for the first seconds, so a script's first steps
//! pass unseen, and a test could not say when the battery drains.
//!
//! Everything lives in a directory of its own (configuration and state:
//! `NUT_CONFPATH`, `NUT_STATEPATH`); `upsd` listens on 127.0.0.1 only, on a
//! free port. Both processes run in the foreground as children of this one
//! and are killed by their pids when the [`LabUps`] is dropped, a
//! failing test's included. Debian's packages are `nut-server` and
//! `nut-client`; `upsd` and the drivers are run from `/lib/nut` directly
//! (`/usr/sbin/upsd` is a wrapper that wants a system-wide `nut.conf`).

use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// Where Debian's nut-server puts its daemon and drivers.
pub const NUT_DIR: &str = "/lib/nut";

/// How long a started `upsd` may take to serve the script's first values.
const READY_WITHIN: Duration = Duration::from_secs(15);

/// `Err(reason)` when a scripted UPS cannot be started here: NUT's
/// `upsd` and `dummy-ups` are missing, or this is not root (the daemons
/// drop to a user given on their command line, which only root can).
pub fn nut_available() -> Result<(), String> {
    for program in ["upsd", "dummy-ups"] {
        if !Path::new(NUT_DIR).join(program).exists() {
            return Err(format!(
                "{NUT_DIR}/{program} is missing: apt-get install --no-install-recommends nut-server nut-client"
            ));
        }
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err("a scripted UPS (NUT's upsd and dummy-ups) needs root".into());
    }
    Ok(())
}

/// A `upsd` serving one UPS on 127.0.0.1 whose values the test sets;
/// stopped when dropped.
#[derive(Debug)]
pub struct LabUps {
    name: String,
    port: u16,
    dir: PathBuf,
    driver: Option<Child>,
    upsd: Option<Child>,
}

impl LabUps {
    /// Starts UPS `name` with `values` (a `.dev` file's text, with a
    /// `ups.status`) under `dir` (made if need be), and waits until `upsd`
    /// serves them.
    pub fn start(dir: &Path, name: &str, values: &str) -> Result<LabUps> {
        if !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            bail!("UPS name `{name}`: letters, digits, `-` and `_` only");
        }
        let (etc, state) = (dir.join("etc"), dir.join("state"));
        for d in [&etc, &state] {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
        }
        let port = free_port()?;
        let write = |file: &str, text: String| {
            let path = etc.join(file);
            std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))
        };
        write(
            "ups.conf",
            format!(
                "[{name}]\n  driver = dummy-ups\n  port = {name}.dev\n  mode = dummy-once\n  \
                 pollinterval = 1\n  desc = \"evac lab\"\n"
            ),
        )?;
        write(&format!("{name}.dev"), values.to_owned())?;
        write("upsd.conf", format!("LISTEN 127.0.0.1 {port}\n"))?;
        write("upsd.users", String::new())?;
        let mut ups = LabUps {
            name: name.to_owned(),
            port,
            dir: dir.to_owned(),
            driver: None,
            upsd: None,
        };
        ups.driver = Some(ups.spawn("dummy-ups", &["-a", name])?);
        ups.upsd = Some(ups.spawn("upsd", &[])?);
        ups.wait_for(&status_of(values)?)?;
        Ok(ups)
    }

    /// Replaces the UPS's values (a `.dev` file's text, with a
    /// `ups.status`) and waits until `upsd` serves the new status.
    pub fn set(&mut self, values: &str) -> Result<()> {
        let want = status_of(values)?;
        let etc = self.dir.join("etc");
        let (new, path) = (
            etc.join(format!("{}.dev.new", self.name)),
            etc.join(format!("{}.dev", self.name)),
        );
        // Renamed into place: the driver never reads half a file.
        std::fs::write(&new, values).with_context(|| format!("writing {}", new.display()))?;
        std::fs::rename(&new, &path).with_context(|| format!("replacing {}", path.display()))?;
        self.wait_for(&want)
    }

    /// `name@127.0.0.1:port`, as an inventory's `ups` names it.
    pub fn address(&self) -> String {
        format!("{}@127.0.0.1:{}", self.name, self.port)
    }

    /// The TCP port `upsd` listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Stops the driver, leaving `upsd` up: it then answers
    /// `ERR DRIVER-NOT-CONNECTED` (or serves stale data for a while).
    pub fn stop_driver(&mut self) {
        stop(&mut self.driver);
    }

    /// Stops `upsd` (and the driver): nothing listens on the port any more.
    pub fn stop_upsd(&mut self) {
        stop(&mut self.upsd);
        stop(&mut self.driver);
    }

    fn spawn(&self, program: &str, args: &[&str]) -> Result<Child> {
        let log = self.dir.join(format!("{program}.log"));
        let out = std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        Command::new(Path::new(NUT_DIR).join(program))
            .args(args)
            .args(["-F", "-u", "root"])
            .env("NUT_CONFPATH", self.dir.join("etc"))
            .env("NUT_STATEPATH", self.dir.join("state"))
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("starting {NUT_DIR}/{program}"))
    }

    /// Until `upsd` answers `ups.status` `want`, at most [`READY_WITHIN`].
    fn wait_for(&mut self, want: &str) -> Result<()> {
        let want = format!("VAR {} ups.status \"{want}\"", self.name);
        let deadline = Instant::now() + READY_WITHIN;
        let mut last = String::from("nothing");
        while Instant::now() < deadline {
            for (what, child) in [("dummy-ups", &mut self.driver), ("upsd", &mut self.upsd)] {
                if let Some(status) = child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                    bail!(
                        "{what} exited ({status}) before serving the UPS; its log: {}",
                        self.dir.join(format!("{what}.log")).display()
                    );
                }
            }
            match self.get("ups.status") {
                Ok(answer) if answer == want => return Ok(()),
                Ok(answer) => last = answer,
                Err(e) => last = e.to_string(),
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!(
            "upsd on 127.0.0.1:{} did not serve `{want}` within {} s (last: {last}); logs in {}",
            self.port,
            READY_WITHIN.as_secs(),
            self.dir.display()
        )
    }

    /// One `GET VAR` answer line, each step bounded.
    pub fn get(&self, var: &str) -> Result<String> {
        let wait = Duration::from_secs(2);
        let address = (Ipv4Addr::LOCALHOST, self.port).into();
        let mut stream = TcpStream::connect_timeout(&address, wait)?;
        stream.set_read_timeout(Some(wait))?;
        stream.set_write_timeout(Some(wait))?;
        writeln!(stream, "GET VAR {} {var}", self.name)?;
        let mut line = String::new();
        BufReader::new(std::io::Read::take(&stream, 1024)).read_line(&mut line)?;
        let _ = writeln!(stream, "LOGOUT");
        Ok(line.trim_end().to_owned())
    }
}

/// The `ups.status` line's value in `values`.
fn status_of(values: &str) -> Result<String> {
    values
        .lines()
        .find_map(|l| l.trim().strip_prefix("ups.status:"))
        .map(|v| v.trim().to_owned())
        .context("the UPS's values need a `ups.status: ...` line")
}

impl Drop for LabUps {
    fn drop(&mut self) {
        self.stop_upsd();
    }
}

/// SIGTERM, then SIGKILL if it has not exited within 2 s; reaped.
fn stop(child: &mut Option<Child>) {
    let Some(mut child) = child.take() else {
        return;
    };
    if let Ok(pid) = i32::try_from(child.id()) {
        // SAFETY: kill on our own child's pid, not yet reaped.
        unsafe { libc::kill(pid, libc::SIGTERM) };
    }
    let until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < until {
        if matches!(child.try_wait(), Ok(Some(_))) {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// A TCP port free on 127.0.0.1 now (the kernel's pick).
fn free_port() -> Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("finding a free port")?;
    Ok(listener.local_addr()?.port())
}
