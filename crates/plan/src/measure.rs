//! Reading the live fleet over QMP: memory and dirty rate per VM.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use evac_model::{Bytes, BytesPerSec};
use evac_qemu::Inventory;
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

/// Every QMP exchange but the sample's own wait ends within this.
const EXCHANGE: Duration = Duration::from_secs(10);

/// Measures every VM of `inventory` at once: its dirty rate over `sample`,
/// then the pages it dirties over `long` (whole seconds, at least 1: QEMU
/// 7.2's unit) for its working set.
pub async fn measure(inventory: &Inventory, sample: Duration, long: Duration) -> Result<Vec<Measured>> {
    let seconds = sample.as_secs().max(1);
    let long = long.as_secs().max(seconds);
    let tasks: Vec<_> = inventory
        .vms
        .iter()
        .map(|vm| {
            let (name, qmp, stated) = (vm.name.clone(), vm.qmp.clone(), vm.memory);
            tokio::spawn(async move {
                one(&qmp, stated, seconds, long)
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

async fn one(address: &str, stated: Option<Bytes>, seconds: u64, long: u64) -> Result<Measured> {
    let qmp = tokio::time::timeout(EXCHANGE, Qmp::connect(address))
        .await
        .context("connecting timed out")??;
    qmp.set_timeout(EXCHANGE);
    let memory = match stated {
        Some(memory) => memory,
        None => Bytes(qmp.query_memory_size_summary().await?.base_memory),
    };
    let rate = sample(&qmp, seconds).await?;
    let mut working_set = memory;
    if long > seconds && rate > 0 {
        // Pages dirtied at least once over the long sample; a guest that
        // writes new pages all along would reach rate x long.
        let dirtied = sample(&qmp, long).await? * long;
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

/// One `calc-dirty-rate` of `seconds`: the rate in MiB/s.
async fn sample(qmp: &Qmp, seconds: u64) -> Result<u64> {
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
