//! Reading the live fleet without migrating: memory and dirty rate per VM,
//! over QMP (QEMU inventories) or through libvirt (libvirt inventories,
//! with the `libvirt` feature). Both ask QEMU for the same measurement
//! (`calc-dirty-rate` in dirty-bitmap mode) and turn it into a
//! [`Measured`] by the same rule ([`measure_vm`]).

use std::future::Future;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use evac_model::{Bytes, BytesPerSec};
use evac_qmp::Qmp;
use serde_json::json;

/// What QEMU told us about one VM.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Measured {
    pub memory: Bytes,
    pub dirty_rate: BytesPerSec,
    /// The memory the guest keeps rewriting: what a long sample found
    /// dirtied when that was clearly less than the rate allows (the guest
    /// went over the same pages again), else its whole memory.
    pub working_set: Bytes,
}

/// Every exchange with QEMU or libvirt but the sample's own wait ends
/// within this.
pub const EXCHANGE: Duration = Duration::from_secs(10);

/// The sample lengths in whole seconds (QEMU 7.2's unit): the rate's (at
/// least 1) and the working set's (at least the rate's).
pub fn sample_seconds(sample: Duration, long: Duration) -> (u64, u64) {
    let seconds = sample.as_secs().max(1);
    (seconds, long.as_secs().max(seconds))
}

/// One VM of `memory`: its dirty rate over a sample of `seconds`, then the
/// pages it dirties over `long` seconds for its working set. `sample(s)`
/// is the backend's measurement over `s` seconds, in whole MiB/s as QEMU
/// reports it.
pub async fn measure_vm<F, Fut>(memory: Bytes, seconds: u64, long: u64, mut sample: F) -> Result<Measured>
where
    F: FnMut(u64) -> Fut,
    Fut: Future<Output = Result<u64>>,
{
    let rate = sample(seconds).await?;
    let mut working_set = memory;
    if long > seconds && rate > 0 {
        // Pages dirtied at least once over the long sample; a guest that
        // writes new pages all along would reach rate x long.
        let dirtied = sample(long).await? * long;
        if (dirtied as f64) < 0.8 * (rate * long) as f64 {
            working_set = Bytes((dirtied << 20).max(1 << 20)).min(memory);
        }
    }
    Ok(Measured {
        memory,
        // QEMU's "MB/s" is 2^20 bytes per second.
        dirty_rate: BytesPerSec(rate as f64 * 1_048_576.0),
        working_set,
    })
}

/// Measures every VM of a QEMU `inventory` at once over QMP (see
/// [`measure_vm`]); memory from `query-memory-size-summary` unless the
/// inventory states it.
pub async fn qemu(
    inventory: &evac_qemu::Inventory,
    sample: Duration,
    long: Duration,
) -> Result<Vec<Measured>> {
    let (seconds, long) = sample_seconds(sample, long);
    let tasks: Vec<_> = inventory
        .vms
        .iter()
        .map(|vm| {
            let (name, qmp, stated) = (vm.name.clone(), vm.qmp.clone(), vm.memory);
            tokio::spawn(async move {
                qemu_vm(&qmp, stated, seconds, long)
                    .await
                    .with_context(|| format!("vm `{name}` (QMP {qmp})"))
            })
        })
        .collect();
    let mut out = Vec::with_capacity(tasks.len());
    for task in tasks {
        out.push(task.await.context("a measuring task panicked")??);
    }
    Ok(out)
}

async fn qemu_vm(address: &str, stated: Option<Bytes>, seconds: u64, long: u64) -> Result<Measured> {
    let qmp = tokio::time::timeout(EXCHANGE, Qmp::connect(address))
        .await
        .context("connecting timed out")??;
    qmp.set_timeout(EXCHANGE);
    let memory = match stated {
        Some(memory) => memory,
        None => Bytes(qmp.query_memory_size_summary().await?.base_memory),
    };
    let qmp = &qmp;
    measure_vm(memory, seconds, long, |s| qmp_sample(qmp, s)).await
}

/// One `calc-dirty-rate` of `seconds`: the rate in MiB/s.
async fn qmp_sample(qmp: &Qmp, seconds: u64) -> Result<u64> {
    qmp.execute(
        "calc-dirty-rate",
        Some(json!({"calc-time": seconds, "mode": "dirty-bitmap"})),
    )
    .await
    .context("calc-dirty-rate")?;
    // The sample takes `seconds`; QEMU then needs a moment to publish it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(seconds) + EXCHANGE;
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    loop {
        let reply = qmp
            .execute("query-dirty-rate", None)
            .await
            .context("query-dirty-rate")?;
        match reply["status"].as_str() {
            Some("measured") => {
                return reply["dirty-rate"]
                    .as_u64()
                    .context("query-dirty-rate: no `dirty-rate` in a measured reply");
            }
            Some("measuring") | Some("unstarted") => {}
            other => bail!("query-dirty-rate: unexpected status {other:?}"),
        }
        if tokio::time::Instant::now() > deadline {
            bail!(
                "query-dirty-rate: no result {}s after the sample ended",
                EXCHANGE.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Measures every domain of a libvirt fleet at once (see [`measure_vm`]):
/// `backend` has found them ([`evac_libvirt::LibvirtBackend::connect`], the
/// discovery `evac run` makes), memory is the domain's.
#[cfg(feature = "libvirt")]
pub async fn libvirt(
    backend: &evac_libvirt::LibvirtBackend,
    sample: Duration,
    long: Duration,
) -> Result<Vec<Measured>> {
    use evac_run::Backend as _;
    let (seconds, long) = sample_seconds(sample, long);
    let fleet = backend.fleet();
    let tasks: Vec<_> = fleet
        .vms
        .iter()
        .map(|vm| {
            let conn = backend.connection(vm.host).clone();
            let (name, memory) = (vm.name.clone(), vm.memory);
            let host = fleet.host(vm.host).name.clone();
            tokio::spawn(async move {
                measure_vm(memory, seconds, long, |s| {
                    let (conn, name) = (conn.clone(), name.clone());
                    async move {
                        let s = u32::try_from(s).context("a sample of more than 2^32 s")?;
                        Ok(evac_libvirt::client::dirty_rate(&conn, &name, s, EXCHANGE).await?)
                    }
                })
                .await
                .with_context(|| format!("domain `{name}` on host `{host}`"))
            })
        })
        .collect();
    let mut out = Vec::with_capacity(tasks.len());
    for task in tasks {
        out.push(task.await.context("a measuring task panicked")??);
    }
    Ok(out)
}
