//! The live display of `evac run` on standard error: one overall bar (VMs
//! done of total, WAN throughput, elapsed time) and one line per migration
//! in flight. indicatif hides it by itself when stderr is not a terminal.

use std::time::Duration;

use evac_controller::Phase;
use evac_model::{BitsPerSec, Bytes};
use evac_run::{FlightProgress, RunProgress};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

pub struct Display {
    multi: MultiProgress,
    overall: ProgressBar,
    /// One bar per migration in flight, by VM name, in display order.
    flights: Vec<(String, ProgressBar)>,
    /// The run's last snapshot came.
    finished: bool,
    /// The widest `vm → destination` so far: the bars line up.
    prefix_width: usize,
}

impl Display {
    /// Draws on stderr, or nowhere when stderr is not a terminal.
    pub fn stderr() -> Display {
        Display::new(ProgressDrawTarget::stderr())
    }

    pub fn new(target: ProgressDrawTarget) -> Display {
        let multi = MultiProgress::with_draw_target(target);
        let overall = multi.add(ProgressBar::new(0).with_style(overall_style()));
        overall.set_prefix("starting");
        overall.set_message("connecting to the VMs");
        if !multi.is_hidden() {
            // The spinner shows liveness between control periods.
            overall.enable_steady_tick(Duration::from_millis(120));
        }
        Display {
            multi,
            overall,
            flights: Vec::new(),
            finished: false,
            prefix_width: 0,
        }
    }

    /// Prints lines above the bars (or plainly when they are hidden), from
    /// anywhere (another task, the library's log).
    pub fn printer(&self) -> impl Fn(&str) + Send + Sync + 'static {
        let multi = self.multi.clone();
        move |line: &str| multi.suspend(|| crate::output::say(line))
    }

    pub fn update(&mut self, progress: &RunProgress) {
        self.finished = progress.finished;
        self.overall.set_length(progress.total as u64);
        self.overall
            .set_position((progress.migrated + progress.lost) as u64);
        let state = match (progress.finished, progress.stopping) {
            (true, true) => "stopped",
            (true, false) => "done",
            (false, true) => "cancelling",
            (false, false) => "evacuating",
        };
        self.overall
            .set_prefix(format!("{state} {}", clock(progress.elapsed)));
        self.overall.set_message(overall_message(progress));

        // Bars of migrations that ended go; new ones come after the others.
        self.flights.retain(|(vm, bar)| {
            let alive = progress.migrations.iter().any(|m| &m.vm == vm);
            if !alive {
                bar.finish_and_clear();
                self.multi.remove(bar);
            }
            alive
        });
        for flight in &progress.migrations {
            let bar = match self.flights.iter().find(|(vm, _)| vm == &flight.vm) {
                Some((_, bar)) => bar.clone(),
                None => {
                    let bar = self.multi.add(ProgressBar::new(0).with_style(flight_style()));
                    self.flights.push((flight.vm.clone(), bar.clone()));
                    bar
                }
            };
            let prefix = format!("{} → {}", flight.vm, flight.destination);
            self.prefix_width = self.prefix_width.max(prefix.chars().count());
            bar.set_prefix(format!("{prefix:<0$}", self.prefix_width));
            bar.set_length(flight.memory.0);
            bar.set_position(flight.bytes_sent.0.min(flight.memory.0));
            bar.set_message(flight_message(flight));
        }
    }

    /// Clears the per-migration lines and leaves the overall bar's last
    /// state, if the run got to its end (else clears it too: an error follows).
    pub fn finish(&mut self) {
        for (_, bar) in self.flights.drain(..) {
            bar.finish_and_clear();
            self.multi.remove(&bar);
        }
        if self.finished {
            self.overall.finish();
        } else {
            self.overall.finish_and_clear();
        }
    }
}

fn overall_style() -> ProgressStyle {
    ProgressStyle::with_template(
        "{spinner:.green} {prefix:.bold} [{bar:20.cyan/blue}] {pos}/{len} VMs | {msg}",
    )
    .expect("a valid template")
    .progress_chars("=> ")
}

fn flight_style() -> ProgressStyle {
    ProgressStyle::with_template("  {prefix} [{bar:25.yellow/blue}] {msg}")
        .expect("a valid template")
        .progress_chars("=> ")
}

/// `WAN 38.2 Mbps | 2 migrated, 0 lost, 1 in flight, 3 waiting` (the
/// elapsed time is in the prefix).
pub fn overall_message(p: &RunProgress) -> String {
    let mut text = format!(
        "WAN {} | {} migrated, {} lost",
        rate(p.wan_throughput),
        p.migrated,
        p.lost
    );
    if !p.finished {
        text += &format!(", {} in flight, {} waiting", p.in_flight, p.waiting);
    }
    text
}

/// `38.0 MiB / 64.0 MiB  38.2 Mbps  round 1 precopy`
pub fn flight_message(f: &FlightProgress) -> String {
    let phase = match f.phase {
        Phase::Precopy => "precopy",
        Phase::StopAndCopy => "stop-and-copy",
        Phase::Offline => "offline",
        Phase::Postcopy => "postcopy",
    };
    let mut text = if f.bytes_sent == Bytes::ZERO {
        format!("starting ({} to send)", size(f.memory))
    } else {
        format!(
            "{} / {}  {}  round {} {phase}",
            size(f.bytes_sent),
            size(f.memory),
            rate(f.rate),
            f.round
        )
    };
    if f.attempt > 1 {
        text += &format!("  (attempt {})", f.attempt);
    }
    text
}

/// Three significant digits at most: `120 Mbps`, `38.2 Mbps`, `1.25 Gbps`.
fn rate(rate: BitsPerSec) -> String {
    let units = [(1e9, "Gbps"), (1e6, "Mbps"), (1e3, "Kbps")];
    let (scale, unit) = units
        .into_iter()
        .find(|(scale, _)| rate.0 >= *scale)
        .unwrap_or((1.0, "bps"));
    format!("{} {unit}", three_digits(rate.0 / scale))
}

/// `35.8 MiB`, `128 MiB`, `1.50 GiB`.
fn size(bytes: Bytes) -> String {
    let units = [
        (1u64 << 40, "TiB"),
        (1 << 30, "GiB"),
        (1 << 20, "MiB"),
        (1 << 10, "KiB"),
    ];
    match units.into_iter().find(|(scale, _)| bytes.0 >= *scale) {
        Some((scale, unit)) => format!("{} {unit}", three_digits(bytes.0 as f64 / scale as f64)),
        None => format!("{} B", bytes.0),
    }
}

fn three_digits(x: f64) -> String {
    if x >= 99.95 {
        format!("{x:.0}")
    } else if x >= 9.995 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}

/// `mm:ss`, or `h:mm:ss` past an hour.
fn clock(elapsed: Duration) -> String {
    let secs = elapsed.as_secs();
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    if h > 0 {
        format!("{h}:{m:02}:{s:02}")
    } else {
        format!("{m:02}:{s:02}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flight() -> FlightProgress {
        FlightProgress {
            vm: "web-1".into(),
            destination: "dst-1".into(),
            attempt: 1,
            phase: Phase::Precopy,
            round: 2,
            bytes_sent: Bytes(48 << 20),
            bytes_remaining: Bytes(16 << 20),
            memory: Bytes(64 << 20),
            rate: BitsPerSec::mbps(38.5),
            dirty_rate: Default::default(),
        }
    }

    #[test]
    fn messages_say_counts_rate_and_time() {
        let p = RunProgress {
            elapsed: Duration::from_secs(72),
            total: 6,
            migrated: 2,
            lost: 0,
            in_flight: 1,
            waiting: 3,
            wan_throughput: BitsPerSec::mbps(38.5),
            migrations: vec![flight()],
            ..RunProgress::default()
        };
        let text = overall_message(&p);
        assert_eq!(text, "WAN 38.5 Mbps | 2 migrated, 0 lost, 1 in flight, 3 waiting");
        assert_eq!(clock(p.elapsed), "01:12");
        let text = flight_message(&flight());
        assert_eq!(text, "48.0 MiB / 64.0 MiB  38.5 Mbps  round 2 precopy");
        assert_eq!(rate(BitsPerSec(360.894e6)), "361 Mbps");
        assert_eq!(rate(BitsPerSec(1.25e9)), "1.25 Gbps");
        assert_eq!(size(Bytes(128 << 20)), "128 MiB");
        assert_eq!(size(Bytes(512)), "512 B");
        assert_eq!(clock(Duration::from_secs(3725)), "1:02:05");
    }

    #[test]
    fn bars_follow_the_migrations_in_flight() {
        let mut display = Display::new(ProgressDrawTarget::hidden());
        let mut p = RunProgress {
            total: 2,
            in_flight: 1,
            waiting: 1,
            migrations: vec![flight()],
            ..RunProgress::default()
        };
        display.update(&p);
        assert_eq!(display.flights.len(), 1);
        assert_eq!(display.flights[0].1.position(), 48 << 20);
        p.migrated = 1;
        p.in_flight = 0;
        p.migrations.clear();
        display.update(&p);
        assert!(display.flights.is_empty());
        assert_eq!(display.overall.position(), 1);
        p.finished = true;
        display.update(&p);
        display.finish();
        assert!(display.overall.is_finished());
    }
}
