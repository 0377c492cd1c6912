//! Power that changes while a run runs: the news comes from outside the
//! loop, as [`PowerUpdate`]s on a channel ([`crate::RunOptions::power`]),
//! and the loop applies each at once (not at the next tick): journaled,
//! logged, in the live metrics and the result's decisions, and told to the
//! controller through `Observations::power_changes`, which re-plans.
//!
//! Two sources feed it, each a task of its own:
//!
//! - [`watch_inventory`]: the operator edits the inventory's
//!   `power_off_at` values; the file is read again when it changes (its
//!   length, modification time and contents are compared every poll) and
//!   on SIGHUP, as daemons reload. The reading and checking are the
//!   backend's (a closure): only power-offs may change during a run, any
//!   other change is refused with one line, and a file caught half-written
//!   is refused until it reads whole.
//! - [`poll_ups`]: hosts that name a NUT UPS (`ups = "ups1@10.0.0.5:3493"`)
//!   take their power-off from it, read every poll within a bounded wait
//!   (see `evac_nut`): on line power none, on battery now + runtime -
//!   `ups_margin`, on low battery now; "now" is when the UPS's answer
//!   changed (the same answer again moves nothing), and a move of less than
//!   [`NEWS_GRAIN`] or 5 % of the time left is no news (a real UPS's
//!   estimate wobbles with the load). A `upsd` that does not answer is a
//!   warning (once until it answers again), and the last deadline stands.
//!
//! Either sends only what changed; the loop ignores what changes nothing.

use std::path::PathBuf;
use std::time::Duration;

use evac_model::wall_clock::{self, PowerOffAt, Timestamp};
use evac_nut::{PowerOff, UpsAddress};
use tokio::sync::mpsc;

use crate::Log;

/// News of a host's power: as of now, it loses power at `power_off_at`
/// (`None`: not at all). A duration counts from the run's start, as in the
/// inventory; the loop resolves it against its own start.
#[derive(Debug, Clone, PartialEq)]
pub struct PowerUpdate {
    pub host: String,
    pub power_off_at: Option<PowerOffAt>,
    /// Who says so, for the log, the journal and the decisions: "the
    /// inventory run.toml", "UPS ups1@10.0.0.5:3493 (on battery, 900 s left)".
    pub by: String,
}

/// How many updates may wait for the loop; a source that gets ahead waits.
pub const FEED_DEPTH: usize = 256;

/// The channel a run's power news goes through: the sender for the
/// sources, the receiver for [`crate::RunOptions::power`].
pub fn feed() -> (mpsc::Sender<PowerUpdate>, mpsc::Receiver<PowerUpdate>) {
    mpsc::channel(FEED_DEPTH)
}

/// An inventory read again: each source host's power-off as written, and
/// the one-line refusal of any other change.
#[derive(Debug, Clone, PartialEq)]
pub struct Reread {
    pub power_offs: Vec<(String, Option<PowerOffAt>)>,
    /// Set when the file changed beyond its power-offs: those changes are
    /// not applied (the power-offs still are).
    pub refused: Option<String>,
}

/// Watches the inventory at `path`: every `poll`, and whenever `hup`
/// receives (the CLI forwards SIGHUP to it), reads it with `reread` when
/// it changed, and sends each power-off that differs from the last sent
/// (at first, the ones `initial` gives). On SIGHUP it reads the file in
/// any case and sends every power-off it holds (the loop ignores those
/// that change nothing): so a resumed run, which keeps the changes its
/// journal holds, takes up a file edited while evac was stopped. Ends
/// when the run drops the feed's receiver.
pub async fn watch_inventory<R>(
    path: PathBuf,
    poll: Duration,
    initial: Vec<(String, Option<PowerOffAt>)>,
    mut reread: R,
    mut hup: mpsc::Receiver<()>,
    tx: mpsc::Sender<PowerUpdate>,
    log: Log,
) where
    R: FnMut(&str) -> Result<Reread, String> + Send,
{
    let mut known = initial;
    // Read at the first poll whatever it holds: an edit made between the
    // run's reading of the file and this task's start is news too.
    let mut seen = None;
    // The last refusal said, so that a file left bad is not refused every poll.
    let mut said: Option<String> = None;
    let mut interval = tokio::time::interval(poll);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut hup_open = true;
    loop {
        let forced = tokio::select! {
            _ = interval.tick() => false,
            got = hup.recv(), if hup_open => {
                hup_open = got.is_some();
                got.is_some()
            }
            () = tx.closed() => return,
        };
        if forced {
            log(&format!("evac: SIGHUP: reading {} again", path.display()));
        }
        let now = stamp(&path);
        if !forced && now == seen {
            continue;
        }
        seen = now;
        let name = path.display().to_string();
        let text = match crate::inventory::read(&path) {
            Ok(text) => text,
            Err(e) => {
                say_once(&log, &mut said, format!("{e}: the power-offs stay as they were"));
                continue;
            }
        };
        let read = match reread(&text) {
            Ok(read) => read,
            Err(e) => {
                say_once(&log, &mut said, format!("{e}; the power-offs stay as they were"));
                continue;
            }
        };
        said = None;
        if let Some(refused) = read.refused {
            log(&format!("evac: {refused}"));
        }
        for (host, power_off_at) in read.power_offs {
            let before = known.iter().find(|(h, _)| *h == host).map(|(_, at)| *at);
            if before == Some(power_off_at) && !forced {
                continue;
            }
            known.retain(|(h, _)| *h != host);
            known.push((host.clone(), power_off_at));
            let update = PowerUpdate {
                host,
                power_off_at,
                by: format!("the inventory {name}"),
            };
            if tx.send(update).await.is_err() {
                return;
            }
        }
    }
}

fn say_once(log: &Log, said: &mut Option<String>, line: String) {
    if said.as_deref() != Some(line.as_str()) {
        log(&format!("evac: {line}"));
        *said = Some(line);
    }
}

/// What says a file changed: its length, modification time and contents
/// (a hash: an edit within the mtime's grain, or one that keeps the
/// length, is still seen). `None` when it cannot be read.
fn stamp(path: &std::path::Path) -> Option<(u64, Option<std::time::SystemTime>, u64)> {
    use std::hash::{Hash, Hasher};
    let meta = std::fs::metadata(path).ok()?;
    if meta.len() > crate::inventory::MAX_INVENTORY_BYTES {
        return Some((meta.len(), meta.modified().ok(), 0));
    }
    let bytes = std::fs::read(path).ok()?;
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut hasher);
    Some((meta.len(), meta.modified().ok(), hasher.finish()))
}

/// The least move of a UPS's deadline that is news (see [`poll_ups`]).
pub const NEWS_GRAIN: Duration = Duration::from_secs(10);

/// A source host whose power-off its UPS tells.
#[derive(Debug, Clone, PartialEq)]
pub struct UpsHost {
    pub host: String,
    pub ups: UpsAddress,
    /// Taken off the battery's runtime.
    pub margin: Duration,
}

/// Reads every host's UPS every `poll` (each UPS once per poll, all at
/// once, each within `wait`), and sends each power-off that changed, as a
/// time on the wall clock. Ends when the run drops the feed's receiver.
pub async fn poll_ups(
    hosts: Vec<UpsHost>,
    poll: Duration,
    wait: Duration,
    tx: mpsc::Sender<PowerUpdate>,
    log: Log,
) {
    let mut upses: Vec<UpsAddress> = Vec::new();
    for host in &hosts {
        if !upses.contains(&host.ups) {
            upses.push(host.ups.clone());
        }
    }
    // Per host, the last power-off sent, from `origin` (`None` until the
    // first reading).
    let mut sent: Vec<Option<Option<Duration>>> = vec![None; hosts.len()];
    let origin = Timestamp::now();
    // Per UPS, whether its last read failed (warned once until it answers),
    // and its last reading.
    let mut failing = vec![false; upses.len()];
    let mut last: Vec<Option<evac_nut::Reading>> = vec![None; upses.len()];
    let mut interval = tokio::time::interval(poll);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            () = tx.closed() => return,
        }
        let readings =
            futures_util::future::join_all(upses.iter().map(|ups| evac_nut::read(ups, wait))).await;
        // Read after the answers: a deadline counts from when it was said.
        let now = wall_clock::until(origin, Timestamp::now());
        for (((ups, reading), failing), last) in upses
            .iter()
            .zip(readings)
            .zip(failing.iter_mut())
            .zip(last.iter_mut())
        {
            let reading = match reading {
                Ok(reading) => {
                    if *failing {
                        log(&format!("evac: UPS {ups} answers again"));
                    }
                    *failing = false;
                    // The same status and runtime as last time say nothing
                    // new: the deadline they gave stands (a runtime that
                    // does not fall is not a battery that lasts for ever).
                    if last.as_ref() == Some(&reading) {
                        continue;
                    }
                    *last = Some(reading.clone());
                    reading
                }
                Err(e) => {
                    if !*failing {
                        log(&format!(
                            "evac: warning: {e}; the last power-off of its hosts stands"
                        ));
                    }
                    *failing = true;
                    continue;
                }
            };
            for (host, sent) in hosts.iter().zip(sent.iter_mut()).filter(|(h, _)| h.ups == *ups) {
                let power_off_at = match reading.power_off(now, host.margin) {
                    PowerOff::None => None,
                    PowerOff::At(at) => Some(at),
                    PowerOff::Unknown => continue,
                };
                // On battery the deadline moves with every estimate of the
                // runtime (a constant one moves it a poll later each poll):
                // a change under NEWS_GRAIN, or 5 % of the time left, is
                // no news, so that the controller re-plans on news only.
                let close = match (*sent, power_off_at) {
                    (Some(Some(a)), Some(b)) => {
                        a.abs_diff(b) < NEWS_GRAIN.max(a.saturating_sub(now).mul_f64(0.05))
                    }
                    (Some(a), b) => a == b,
                    (None, _) => false,
                };
                if close {
                    continue;
                }
                *sent = Some(power_off_at);
                let state = match (&reading.power, reading.runtime) {
                    (evac_nut::Power::Battery, Some(runtime)) => {
                        format!("on battery, {:.0} s left", runtime.as_secs_f64())
                    }
                    (power, _) => power.to_string(),
                };
                let update = PowerUpdate {
                    host: host.host.clone(),
                    power_off_at: power_off_at.map(|at| PowerOffAt::Time(wall_clock::after(origin, at))),
                    by: format!("UPS {ups} ({state})"),
                };
                if tx.send(update).await.is_err() {
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {

    use super::*;

    /// A stand-in for a backend's inventory: `host = duration` lines, and
    /// any other line is a setting that may not change during a run.
    fn reread(baseline: String) -> impl FnMut(&str) -> Result<Reread, String> + Send {
        let settings = |text: &str| -> Vec<String> {
            text.lines()
                .filter(|l| !l.contains('='))
                .map(str::to_owned)
                .collect()
        };
        move |text: &str| {
            if text.contains("half") {
                return Err("inventory.toml:2: not TOML".to_owned());
            }
            let mut power_offs = Vec::new();
            for line in text.lines().filter(|l| l.contains('=')) {
                let (host, at) = line.split_once('=').unwrap();
                power_offs.push((
                    host.trim().to_owned(),
                    Some(at.trim().parse().map_err(|e| format!("{e}"))?),
                ));
            }
            let refused = (settings(text) != settings(&baseline)).then(|| "a setting changed".to_owned());
            Ok(Reread { power_offs, refused })
        }
    }

    async fn next(rx: &mut mpsc::Receiver<PowerUpdate>) -> PowerUpdate {
        tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("an update within 5 s")
            .expect("the watcher runs")
    }

    #[tokio::test]
    async fn an_edit_a_bad_file_a_refused_setting_and_sighup() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("inventory.toml");
        let first = "setting\nsrc-1 = 10 min\nsrc-2 = 20 min\n";
        std::fs::write(&path, first).unwrap();
        let initial = vec![
            (
                "src-1".to_owned(),
                Some(PowerOffAt::FromStart(Duration::from_secs(600))),
            ),
            (
                "src-2".to_owned(),
                Some(PowerOffAt::FromStart(Duration::from_secs(1200))),
            ),
        ];
        let (log, lines) = crate::log_kept();
        let (tx, mut rx) = feed();
        let (hup_tx, hup_rx) = mpsc::channel(1);
        let poll = Duration::from_millis(50);
        let task = tokio::spawn(watch_inventory(
            path.clone(),
            poll,
            initial,
            reread(first.to_owned()),
            hup_rx,
            tx,
            log,
        ));
        // One host's power-off moved: that one only.
        std::fs::write(&path, "setting\nsrc-1 = 2026-12-06T14:30:00Z\nsrc-2 = 20 min\n").unwrap();
        let update = next(&mut rx).await;
        assert_eq!(update.host, "src-1");
        assert_eq!(
            update.power_off_at,
            Some(PowerOffAt::Time("2026-12-06T14:30:00Z".parse().unwrap()))
        );
        assert!(update.by.contains("inventory.toml"), "{}", update.by);
        // Caught half-written: said once, nothing sent.
        std::fs::write(&path, "half").unwrap();
        tokio::time::sleep(poll * 4).await;
        std::fs::write(&path, "half ").unwrap();
        tokio::time::sleep(poll * 4).await;
        assert!(rx.try_recv().is_err());
        let said = lines
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains("not TOML"))
            .count();
        assert_eq!(said, 1, "{:?}", lines.lock().unwrap());
        // A setting changed with a power-off: the power-off goes, the
        // setting is refused in one line.
        std::fs::write(
            &path,
            "other setting\nsrc-1 = 2026-12-06T14:30:00Z\nsrc-2 = 5 min\n",
        )
        .unwrap();
        let update = next(&mut rx).await;
        assert_eq!(
            (update.host.as_str(), update.power_off_at),
            ("src-2", Some(PowerOffAt::FromStart(Duration::from_secs(300))))
        );
        assert!(lines
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("a setting changed")));
        // SIGHUP: the file as it is, every power-off again.
        hup_tx.send(()).await.unwrap();
        let hosts = [next(&mut rx).await.host, next(&mut rx).await.host];
        assert_eq!(hosts, ["src-1", "src-2"]);
        assert!(lines
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("SIGHUP: reading")));
        // The run over (its receiver dropped), the watcher ends.
        drop(rx);
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .unwrap()
            .unwrap();
    }
}
