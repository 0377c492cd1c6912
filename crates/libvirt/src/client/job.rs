//! libvirt's job statistics turned into evac's quantities: the progress of
//! a migration in flight ([`JobProgress`], from the source) and the record of
//! a completed one ([`CompletedMigration`], from the destination). Apart so
//! that the units (libvirt counts pages and milliseconds) convert in one place.

use std::time::Duration;

use evac_model::{Bytes, BytesPerSec};
use virt::domain::Domain;

use super::{call, ClientError, Conn};

/// libvirt's record of a domain's last completed migration, read on the
/// host it arrived at.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CompletedMigration {
    pub bytes: Bytes,
    pub elapsed: Duration,
    pub downtime: Duration,
}

/// The completed-job statistics of `domain` on the host at `uri`.
pub async fn completed_migration(
    uri: &str,
    domain: &str,
    timeout: Duration,
) -> Result<CompletedMigration, ClientError> {
    let (uri, domain) = (uri.to_owned(), domain.to_owned());
    call(timeout, move || {
        let conn = Conn::open_blocking(&uri)?;
        let dom = Domain::lookup_by_name(&conn.0, &domain)?;
        let s = crate::raw::completed_job_stats(&dom)?;
        Ok(CompletedMigration {
            bytes: Bytes(s.data_processed),
            elapsed: Duration::from_millis(s.time_elapsed_ms),
            downtime: Duration::from_millis(s.downtime_ms),
        })
    })
    .await
}

/// Progress of a migration, from the source's job stats.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct JobProgress {
    /// Whether a job runs at all (false once it ended).
    pub active: bool,
    pub processed: Bytes,
    pub remaining: Bytes,
    pub total: Bytes,
    /// Bytes per second the guest dirties.
    pub dirty_rate: BytesPerSec,
    pub iteration: u64,
}

pub(super) fn job_progress(stats: &crate::raw::JobStats) -> JobProgress {
    let page = if stats.page_size == 0 {
        4096
    } else {
        stats.page_size
    };
    JobProgress {
        active: stats.job_type != 0,
        processed: Bytes(stats.data_processed),
        remaining: Bytes(stats.data_remaining),
        total: Bytes(stats.data_total),
        // libvirt reports pages per second.
        dirty_rate: BytesPerSec(stats.dirty_rate_pages as f64 * page as f64),
        iteration: stats.iteration,
    }
}
