//! The attempt's task, from its start to its end: it waits for the hosts'
//! slots, starts the migration, follows its job (progress, the handle's
//! requests, a switch to postcopy, a stall), finds the domain where it
//! landed and explains a failure by the hosts' limits. Apart from the
//! handle (`super::handle`), which the run loop holds and only sends to it.

use crate::client::{self, ClientError, Conn};
use crate::limits;
use evac_controller::Retune;
use evac_model::{BitsPerSec, Bytes};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

use super::{AttemptCtx, AttemptResult, Control, Shared};
use crate::backend::{Gate, Landed, CALL_TIMEOUT, POLL, STAGGER};

pub(super) async fn run_attempt(
    mut ctx: AttemptCtx,
    mut control: mpsc::UnboundedReceiver<Control>,
    shared: Arc<Mutex<Shared>>,
) -> AttemptResult {
    shared.lock().expect("not poisoned").begun = Some(Instant::now());
    // An adopted migration runs already: it waits for nothing.
    let (_slots, mut startup_slots) = if ctx.adopt_only {
        (Vec::new(), Vec::new())
    } else {
        match wait_for_slots(&mut ctx, &mut control, &shared).await {
            Ok(slots) => slots,
            Err(result) => return result,
        }
    };
    let (source, destination) = (ctx.source_spec.clone(), ctx.destination_spec.clone());
    let result = attempt(ctx, &mut control, &shared, &mut startup_slots).await;
    match result {
        AttemptResult::Failed { reason, bytes } => AttemptResult::Failed {
            reason: match limits::explain(&reason, &source, &destination) {
                Some(limit) => format!("{reason} ({limit})"),
                None => reason,
            },
            bytes,
        },
        done => done,
    }
}

/// Waits (reported as starting) until the attempt's hosts have a slot for
/// it: a migration out of its source, one into its destination, and where
/// ssh is in the way, a connection set up to each. Retunes and a switch to
/// offline that come meanwhile change what will be started; a cancel (or
/// the run loop dropping the handle) ends the attempt before it began.
pub(super) async fn wait_for_slots(
    ctx: &mut AttemptCtx,
    control: &mut mpsc::UnboundedReceiver<Control>,
    shared: &Arc<Mutex<Shared>>,
) -> Result<(Vec<OwnedSemaphorePermit>, Vec<OwnedSemaphorePermit>), AttemptResult> {
    // Always the source's before the destination's: no two attempts can
    // each hold what the other waits for.
    let semaphores = |pick: fn(&Gate) -> &Option<Arc<Semaphore>>| -> Vec<Arc<Semaphore>> {
        [&ctx.source_gate, &ctx.destination_gate]
            .into_iter()
            .filter_map(|g| pick(g).clone())
            .collect()
    };
    let wanted = [semaphores(|g| &g.migrations), semaphores(|g| &g.startups)];
    let mut held: [Vec<OwnedSemaphorePermit>; 2] = [Vec::new(), Vec::new()];
    for (kind, list) in wanted.into_iter().enumerate() {
        for semaphore in list {
            let permit = loop {
                tokio::select! {
                    permit = semaphore.clone().acquire_owned() => break permit.expect("never closed"),
                    request = control.recv() => match request {
                        Some(Control::Retune(Retune::MaxBandwidth(b))) => {
                            ctx.request.max_bandwidth = b.map(BitsPerSec::to_bytes_per_sec);
                        }
                        Some(Control::Retune(Retune::DowntimeLimit(d))) => ctx.request.downtime_limit = d,
                        Some(Control::Retune(Retune::AutoConverge(on))) => ctx.request.auto_converge = on,
                        Some(Control::Offline) => {
                            ctx.request.offline = true;
                            let mut s = shared.lock().expect("not poisoned");
                            s.paused_by_us = true;
                            s.paused_at = Some(Instant::now());
                        }
                        Some(Control::Postcopy(reply)) => {
                            let _ = reply.send(Err("not started yet (waiting for a host's limit)".into()));
                        }
                        Some(Control::Cancel) | None => {
                            return Err(AttemptResult::Failed {
                                reason: "cancelled before it started (it was waiting for a host's limit)".into(),
                                bytes: Bytes::ZERO,
                            })
                        }
                    },
                }
            };
            held[kind].push(permit);
        }
    }
    let [slots, startups] = held;
    Ok((slots, startups))
}

/// The attempt proper, once its hosts have room for it.
pub(super) async fn attempt(
    ctx: AttemptCtx,
    control: &mut mpsc::UnboundedReceiver<Control>,
    shared: &Arc<Mutex<Shared>>,
    startup_slots: &mut Vec<OwnedSemaphorePermit>,
) -> AttemptResult {
    let domain = ctx.request.domain.clone();
    // Why a switch to postcopy would be refused (`None`: ready for it).
    let mut postcopy_refused: Option<String> = None;
    {
        let mut next = ctx.next_start.lock().await;
        let at = (*next).max(tokio::time::Instant::now());
        *next = at + STAGGER;
        drop(next);
        tokio::time::sleep_until(at).await;
    }
    if ctx.request.offline {
        let mut s = shared.lock().expect("not poisoned");
        s.paused_by_us = true;
        s.paused_at = Some(Instant::now());
    }
    let started = if ctx.adopt_only {
        if let Some((landed, completed)) = find_running(&ctx, &domain).await {
            (ctx.log)(&format!(
                "{domain}: the earlier evac's migration completed: runs on {}",
                landed.host
            ));
            return AttemptResult::Completed {
                landed,
                bytes: Bytes(completed.map_or(0, |c| c.data_processed)),
                rounds: completed.map_or(0, |c| c.iteration as u32),
                downtime: completed.map(|c| Duration::from_millis(c.downtime_ms)),
            };
        }
        match client::Migration::find(&ctx.source_uri, &domain, CALL_TIMEOUT).await {
            Ok(Some(m)) => Ok(m),
            Ok(None) => {
                return AttemptResult::Failed {
                    reason: "the earlier evac's migration is not running (the domain is still on its source)"
                        .into(),
                    bytes: Bytes::ZERO,
                }
            }
            Err(e) => Err(e),
        }
    } else {
        let mut request = ctx.request.clone();
        if request.postcopy {
            match client::postcopy_obstacle(&ctx.source_uri, &domain, CALL_TIMEOUT).await {
                Ok(None) => {}
                Ok(Some(why)) if ctx.auto_postcopy => {
                    return AttemptResult::Failed {
                        reason: format!("postcopy refused: {why}; postcopy needs anonymous, private memory"),
                        bytes: Bytes::ZERO,
                    }
                }
                Ok(Some(why)) => {
                    // Started without it: a later switch is refused.
                    postcopy_refused = Some(format!("postcopy refused: {why}"));
                    request.postcopy = false;
                }
                Err(e) => {
                    postcopy_refused = Some(format!(
                        "postcopy refused: cannot read the domain's definition: {e}"
                    ));
                    request.postcopy = false;
                }
            }
        } else {
            postcopy_refused = Some(
                "postcopy unavailable: the migration was not started ready for it ([migration] allow_postcopy is off)"
                    .into(),
            );
        }
        client::Migration::start(&ctx.source_uri, request, CALL_TIMEOUT).await
    };
    let mut migration = match started {
        Ok(m) => m,
        Err(e) => {
            // Gone from its source: an earlier evac may have moved it.
            if let Some((landed, _)) = find_running(&ctx, &domain).await {
                (ctx.log)(&format!("{domain}: already runs on {}", landed.host));
                return AttemptResult::Completed {
                    landed,
                    bytes: Bytes::ZERO,
                    rounds: 0,
                    downtime: None,
                };
            }
            return AttemptResult::Failed {
                reason: format!("cannot start: {e}"),
                bytes: Bytes::ZERO,
            };
        }
    };
    if migration.adopted() {
        (ctx.log)(&format!("{domain}: adopted the migration already running"));
    }
    shared.lock().expect("not poisoned").mark(|s| &mut s.called);
    let mut cancelled = false;
    let mut counted = 0u64;
    let mut last: Option<(Instant, u64)> = None;
    let mut ticker = tokio::time::interval(POLL);
    let ended = migration.ended();
    loop {
        tokio::select! {
            // The migrate call returned: its end is seen now, not at the
            // next poll.
            () = ended.wait() => break,
            request = control.recv() => match request {
                Some(Control::Retune(change)) => {
                    let r = match change {
                        Retune::MaxBandwidth(b) => {
                            migration.set_max_speed(b.map(BitsPerSec::to_bytes_per_sec), CALL_TIMEOUT).await
                        }
                        Retune::DowntimeLimit(d) => migration.set_max_downtime(d, CALL_TIMEOUT).await,
                        Retune::AutoConverge(_) => {
                            (ctx.log)(&format!("{domain}: auto-converge is fixed when a libvirt migration starts"));
                            Ok(())
                        }
                    };
                    if let Err(e) = r {
                        (ctx.log)(&format!("{domain}: retune {change:?}: {e}"));
                    }
                }
                Some(Control::Offline) => match migration.suspend(CALL_TIMEOUT).await {
                    Ok(()) => {
                        let mut s = shared.lock().expect("not poisoned");
                        s.paused_by_us = true;
                        s.paused_at = Some(Instant::now());
                    }
                    Err(e) => (ctx.log)(&format!("{domain}: pausing for offline: {e}")),
                },
                Some(Control::Postcopy(reply)) => {
                    let _ = reply.send(switch_to_postcopy(&migration, postcopy_refused.as_deref(), shared).await);
                }
                Some(Control::Cancel) => {
                    cancelled = true;
                    if let Err(e) = migration.abort(CALL_TIMEOUT).await {
                        (ctx.log)(&format!("{domain}: abort: {e}"));
                    }
                }
                // The handle is gone: the loop no longer wants this one.
                None => {
                    cancelled = true;
                    let _ = migration.abort(CALL_TIMEOUT).await;
                    let _ = migration.wait(Duration::from_secs(60)).await;
                    break;
                }
            },
            _ = ticker.tick() => {
                if migration.poll_done().is_some() {
                    break;
                }
                if let Ok(p) = migration.progress(CALL_TIMEOUT).await {
                    if p.active {
                        let now = Instant::now();
                        let rate = match last {
                            Some((t, b)) if now > t => {
                                BitsPerSec(p.processed.0.saturating_sub(b) as f64 * 8.0 / (now - t).as_secs_f64())
                            }
                            _ => BitsPerSec(0.0),
                        };
                        last = Some((now, p.processed.0));
                        count(&ctx, &mut counted, p.processed.0);
                        if p.total.0 > 0 {
                            // Bytes flow: its ssh connections are up.
                            startup_slots.clear();
                        }
                        let switch_now = {
                            let mut s = shared.lock().expect("not poisoned");
                            if p.total.0 > 0 {
                                s.mark(|s| &mut s.bytes_seen);
                            }
                            s.progress = Some(p);
                            s.rate = rate;
                            // The first pass over memory is done: libvirt
                            // counts iterations from 1.
                            ctx.auto_postcopy && !s.in_postcopy && p.iteration >= 2
                        };
                        if switch_now {
                            if let Err(e) = switch_to_postcopy(&migration, postcopy_refused.as_deref(), shared).await {
                                (ctx.log)(&format!("{domain}: switching to postcopy: {e}"));
                            }
                        }
                    }
                }
            }
        }
    }
    let outcome = migration.wait(Duration::from_secs(5)).await;
    shared.lock().expect("not poisoned").mark(|s| &mut s.returned);
    let progress = shared.lock().expect("not poisoned").progress.unwrap_or_default();
    let (paused_by_us, paused_at) = {
        let s = shared.lock().expect("not poisoned");
        (s.paused_by_us, s.paused_at)
    };
    match outcome {
        Ok(()) => match find_running(&ctx, &domain).await {
            Some((landed, completed)) => {
                let stages = {
                    let mut s = shared.lock().expect("not poisoned");
                    s.mark(|s| &mut s.found);
                    s.stages
                };
                if std::env::var_os("EVAC_LIBVIRT_STAGES").is_some() {
                    (ctx.log)(&format!("{domain}: {}", stages.describe()));
                }
                // The destination's record of the migration; without it,
                // what was left at the last reading went at the end.
                let (bytes, rounds, downtime) = match completed {
                    Some(c) => (
                        c.data_processed,
                        c.iteration.max(progress.iteration),
                        Some(Duration::from_millis(c.downtime_ms)),
                    ),
                    None => (
                        progress.processed.0 + progress.remaining.0,
                        progress.iteration,
                        None,
                    ),
                };
                count(&ctx, &mut counted, bytes);
                let mut downtime = downtime;
                if paused_by_us {
                    resume_at(&ctx, &landed).await;
                    downtime = paused_at.map(|t| t.elapsed()).or(downtime);
                }
                AttemptResult::Completed {
                    landed,
                    bytes: Bytes(bytes),
                    rounds: rounds as u32,
                    downtime,
                }
            }
            None => AttemptResult::Failed {
                reason: "libvirt reported success but no destination runs the domain".into(),
                bytes: progress.processed,
            },
        },
        Err(e) => {
            if paused_by_us {
                if let Err(e) = migration.resume_if_paused(CALL_TIMEOUT).await {
                    (ctx.log)(&format!("{domain}: resuming on its source: {e}"));
                }
            }
            AttemptResult::Failed {
                reason: if cancelled {
                    "cancelled".into()
                } else {
                    e.to_string()
                },
                bytes: progress.processed,
            }
        }
    }
}

/// Switches `migration` to postcopy unless `refused` says why it cannot;
/// from then on the guest runs at its destination.
pub(super) async fn switch_to_postcopy(
    migration: &client::Migration,
    refused: Option<&str>,
    shared: &Arc<Mutex<Shared>>,
) -> Result<(), String> {
    if let Some(why) = refused {
        return Err(why.to_owned());
    }
    if shared.lock().expect("not poisoned").in_postcopy {
        return Ok(());
    }
    migration
        .start_postcopy(CALL_TIMEOUT)
        .await
        .map_err(|e| e.to_string())?;
    shared.lock().expect("not poisoned").in_postcopy = true;
    Ok(())
}

/// Adds what this attempt sent since it was last counted to its source
/// host's migration bytes.
pub(super) fn count(ctx: &AttemptCtx, counted: &mut u64, processed: u64) {
    if processed > *counted {
        ctx.migrated.lock().expect("not poisoned")[ctx.source_host] += processed - *counted;
        *counted = processed;
    }
}

/// The destination host `domain` runs on (running or paused), if any,
/// with the statistics of its last completed job there (the migration).
pub(super) async fn find_running(
    ctx: &AttemptCtx,
    domain: &str,
) -> Option<(Landed, Option<crate::raw::JobStats>)> {
    for (name, uri) in &ctx.destinations {
        let uri = uri.clone();
        let d = domain.to_owned();
        let found = client::call(CALL_TIMEOUT, move || {
            let conn = Conn::open_blocking(&uri)?;
            match virt::domain::Domain::lookup_by_name(&conn.0, &d) {
                Ok(dom) if dom.is_active().unwrap_or(false) => {
                    Ok(Some(crate::raw::completed_job_stats(&dom).ok()))
                }
                _ => Ok(None),
            }
        })
        .await;
        if let Ok(Some(stats)) = found {
            let landed = Landed {
                host: name.clone(),
                domain: domain.to_owned(),
            };
            return Some((landed, stats.filter(|s| s.data_processed > 0)));
        }
    }
    None
}

/// Resumes at its destination a guest we paused (offline), which libvirt
/// leaves paused there.
pub(super) async fn resume_at(ctx: &AttemptCtx, landed: &Landed) {
    let Some((_, uri)) = ctx.destinations.iter().find(|(n, _)| *n == landed.host) else {
        return;
    };
    let uri = uri.clone();
    let d = landed.domain.clone();
    let r: Result<(), ClientError> = client::call(CALL_TIMEOUT, move || {
        let conn = Conn::open_blocking(&uri)?;
        let dom = virt::domain::Domain::lookup_by_name(&conn.0, &d)?;
        if let Ok((state, _)) = dom.get_state() {
            if state == virt::sys::VIR_DOMAIN_PAUSED {
                dom.resume()?;
            }
        }
        Ok(())
    })
    .await;
    if let Err(e) = r {
        (ctx.log)(&format!("{}: resuming at {}: {e}", landed.domain, landed.host));
    }
}
