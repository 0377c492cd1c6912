//! What the backend and `evac plan` read of the fleet through libvirt: the
//! running domains and their facts, their interfaces' traffic, their dirty
//! rate, a peek into their memory, their machine type. Apart from the
//! migrations (`super::migration`): these calls only read.

use std::sync::Arc;
use std::time::Duration;

use evac_model::Bytes;
use virt::domain::Domain;

use super::{call, ClientError, Conn};

/// A domain as the backend needs to know it.
#[derive(Debug, Clone, PartialEq)]
pub struct DomainFacts {
    pub name: String,
    pub memory: Bytes,
    /// Disks backed by something on the host itself (see
    /// [`crate::xml::devices`]).
    pub local_disks: Vec<crate::xml::LocalDisk>,
    /// The host storage those disks occupy (libvirt's block allocation):
    /// what a non-shared-disk migration copies.
    pub local_disk_bytes: Bytes,
    /// The host-side device names of its network interfaces.
    pub interfaces: Vec<String>,
    /// Whether a job (a migration) is running on it now.
    pub job_running: bool,
}

/// Why domain `domain` of the daemon at `uri` cannot be moved by postcopy,
/// if it cannot ([`crate::xml::postcopy_obstacle`] of its definition).
pub async fn postcopy_obstacle(
    uri: &str,
    domain: &str,
    timeout: Duration,
) -> Result<Option<String>, ClientError> {
    let (uri, domain) = (uri.to_owned(), domain.to_owned());
    let xml = call(timeout, move || {
        let conn = Conn::open_blocking(&uri)?;
        let dom = Domain::lookup_by_name(&conn.0, &domain)?;
        Ok(dom.get_xml_desc(0)?)
    })
    .await?;
    crate::xml::postcopy_obstacle(&xml).map_err(ClientError::Libvirt)
}

/// The running domains of the host at `conn`. A domain that leaves the host
/// between the listing and the reading of its facts (a migration ending, a
/// guest shutting down) is left out: it is no longer running there, and the
/// caller asks again next period.
pub async fn running_domains(
    conn: &Arc<Conn>,
    shared_storage: &[String],
    timeout: Duration,
) -> Result<Vec<DomainFacts>, ClientError> {
    let conn = conn.clone();
    let shared = shared_storage.to_vec();
    call(timeout, move || {
        let doms = conn
            .0
            .list_all_domains(virt::sys::VIR_CONNECT_LIST_DOMAINS_ACTIVE)?;
        let mut out = Vec::new();
        for dom in doms {
            match domain_facts(&dom, &shared) {
                Ok(facts) => out.push(facts),
                Err(Read::Gone) => continue,
                Err(Read::Failed(e)) => return Err(e),
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    })
    .await
}

/// Why the facts of a listed domain could not be read.
enum Read {
    /// It left the host after it was listed.
    Gone,
    Failed(ClientError),
}

impl From<virt::error::Error> for Read {
    fn from(e: virt::error::Error) -> Self {
        if e.code() == virt::error::ErrorNumber::NoDomain {
            Read::Gone
        } else {
            Read::Failed(e.into())
        }
    }
}

fn domain_facts(dom: &Domain, shared: &[String]) -> Result<DomainFacts, Read> {
    let name = dom.get_name()?;
    let info = dom.get_info()?;
    let xml = dom.get_xml_desc(0)?;
    let (local_disks, interfaces) = crate::xml::devices(&xml, shared)
        .map_err(|e| Read::Failed(ClientError::Libvirt(format!("domain {name}: {e}"))))?;
    let mut local_disk_bytes = Bytes::ZERO;
    for disk in &local_disks {
        let info = dom
            .get_block_info(&disk.target, 0)
            .map_err(|e| match Read::from(e) {
                Read::Failed(e) => {
                    Read::Failed(ClientError::Libvirt(format!("domain {name}: disk {disk}: {e}")))
                }
                gone => gone,
            })?;
        local_disk_bytes += Bytes(info.allocation);
    }
    let job_running = crate::raw::job_stats(dom)
        .map(|j| j.job_type != 0)
        .unwrap_or(false);
    Ok(DomainFacts {
        name,
        // libvirt reports KiB.
        memory: Bytes(info.max_mem * 1024),
        local_disks,
        local_disk_bytes,
        interfaces,
        job_running,
    })
}

/// Per domain of `domains` (name, interface devices) still on the host at
/// `conn`, the bytes its interfaces transmitted (a domain gone meanwhile is
/// left out).
pub async fn guests_tx(
    conn: &Arc<Conn>,
    domains: Vec<(String, Vec<String>)>,
    timeout: Duration,
) -> Result<Vec<(String, Bytes)>, ClientError> {
    let conn = conn.clone();
    call(timeout, move || {
        let mut out = Vec::new();
        for (name, ifaces) in domains {
            let Ok(dom) = Domain::lookup_by_name(&conn.0, &name) else {
                continue;
            };
            let mut sum = 0u64;
            for iface in ifaces {
                if let Ok(stats) = dom.interface_stats(&iface) {
                    // libvirt reports a tap's counters as the guest sees
                    // them: tx is what the guest sent.
                    sum = sum.saturating_add(stats.tx_bytes.max(0) as u64);
                }
            }
            out.push((name, Bytes(sum)));
        }
        Ok(out)
    })
    .await
}

/// The pages `domain` on the host at `conn` dirties over `seconds`, in
/// whole MiB/s, as QEMU counts them (dirty-bitmap mode, every page written,
/// through `virDomainStartDirtyRateCalc` and the domain's `dirtyrate.*`
/// statistics). Each libvirt call is bounded by `timeout`; the result must
/// come within `timeout` of the sample's end.
pub async fn dirty_rate(
    conn: &Arc<Conn>,
    domain: &str,
    seconds: u32,
    timeout: Duration,
) -> Result<u64, ClientError> {
    let lookup = {
        let (conn, domain) = (conn.clone(), domain.to_owned());
        move || Domain::lookup_by_name(&conn.0, &domain)
    };
    let start = lookup.clone();
    // QEMU marks the calculation as measuring before the call returns: a
    // status of measured read after the sample is this sample's.
    call(timeout, move || {
        Ok(crate::raw::start_dirty_rate_calc(&start()?, seconds)?)
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(seconds.into())).await;
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let read = lookup.clone();
        let rate = call(timeout, move || Ok(crate::raw::dirty_rate(&read()?)?)).await?;
        if rate.status == virt::sys::VIR_DOMAIN_DIRTYRATE_MEASURED as i32 {
            return Ok(rate.mib_per_second);
        }
        if tokio::time::Instant::now() > deadline {
            return Err(ClientError::Timeout(timeout));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `size` bytes (at most 64 KiB) of the guest-physical memory of `domain`
/// on the host at `conn`, from `start` (`virDomainMemoryPeek`): `evac plan`
/// samples what the guest's memory holds. Read while the guest runs.
pub async fn peek(
    conn: &Arc<Conn>,
    domain: &str,
    start: u64,
    size: usize,
    timeout: Duration,
) -> Result<Vec<u8>, ClientError> {
    let (conn, domain) = (conn.clone(), domain.to_owned());
    call(timeout, move || {
        let dom = Domain::lookup_by_name(&conn.0, &domain)?;
        Ok(crate::raw::memory_peek(&dom, start, size)?)
    })
    .await
}

/// Whether `domain` on the host at `conn` is a `q35` machine (else `pc`):
/// where QEMU maps its RAM above 4 GiB depends on it.
pub async fn is_q35(conn: &Arc<Conn>, domain: &str, timeout: Duration) -> Result<bool, ClientError> {
    let (conn, domain) = (conn.clone(), domain.to_owned());
    call(timeout, move || {
        let dom = Domain::lookup_by_name(&conn.0, &domain)?;
        let xml = dom.get_xml_desc(0)?;
        Ok(crate::xml::machine(&xml).is_some_and(|m| m.contains("q35")))
    })
    .await
}
