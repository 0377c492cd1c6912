//! The few libvirt calls made through `virt::sys` (unsafe, kept small): the
//! safe wrappers of virt 0.4 either lack them (aborting a job) or are
//! unsound for them (`Domain::get_job_stats` builds a `Vec` from the null
//! pointer libvirt returns when no job runs, which aborts the process).

use std::ffi::CStr;

use virt::domain::Domain;
use virt::error::Error;
use virt::sys;

/// A domain's job statistics: the job type (0: none) and the unsigned
/// counters we read.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct JobStats {
    pub job_type: i32,
    pub data_processed: u64,
    pub data_remaining: u64,
    pub data_total: u64,
    /// Pages per second.
    pub dirty_rate_pages: u64,
    pub page_size: u64,
    pub iteration: u64,
    /// Milliseconds the guest did not run (completed jobs).
    pub downtime_ms: u64,
    /// Milliseconds since the job started (for a completed migration on
    /// its destination: its whole length).
    pub time_elapsed_ms: u64,
}

/// `virDomainGetJobStats` of the job running now, with the result freed by
/// libvirt's own allocator.
pub fn job_stats(dom: &Domain) -> Result<JobStats, Error> {
    job_stats_flags(dom, 0)
}

/// The statistics of the domain's last completed job (on a migration's
/// destination: the migration's bytes and downtime).
pub fn completed_job_stats(dom: &Domain) -> Result<JobStats, Error> {
    job_stats_flags(dom, sys::VIR_DOMAIN_JOB_STATS_COMPLETED)
}

fn job_stats_flags(dom: &Domain, flags: u32) -> Result<JobStats, Error> {
    let mut job_type: libc::c_int = 0;
    let mut params: sys::virTypedParameterPtr = std::ptr::null_mut();
    let mut nparams: libc::c_int = 0;
    // SAFETY: `dom` is a valid domain; libvirt allocates `params`.
    let ret =
        unsafe { sys::virDomainGetJobStats(dom.as_ptr(), &mut job_type, &mut params, &mut nparams, flags) };
    if ret < 0 {
        return Err(Error::last_error());
    }
    let get = |name: &CStr| -> u64 {
        let mut value: libc::c_ulonglong = 0;
        if params.is_null() {
            return 0;
        }
        // SAFETY: `params` holds `nparams` entries from libvirt; a missing
        // name leaves `value` untouched.
        let found = unsafe { sys::virTypedParamsGetULLong(params, nparams, name.as_ptr(), &mut value) };
        if found == 1 {
            value
        } else {
            0
        }
    };
    let stats = JobStats {
        job_type,
        data_processed: get(sys::VIR_DOMAIN_JOB_DATA_PROCESSED),
        data_remaining: get(sys::VIR_DOMAIN_JOB_DATA_REMAINING),
        data_total: get(sys::VIR_DOMAIN_JOB_DATA_TOTAL),
        dirty_rate_pages: get(sys::VIR_DOMAIN_JOB_MEMORY_DIRTY_RATE),
        page_size: get(sys::VIR_DOMAIN_JOB_MEMORY_PAGE_SIZE),
        iteration: get(sys::VIR_DOMAIN_JOB_MEMORY_ITERATION),
        downtime_ms: get(sys::VIR_DOMAIN_JOB_DOWNTIME),
        time_elapsed_ms: get(sys::VIR_DOMAIN_JOB_TIME_ELAPSED),
    };
    if !params.is_null() {
        // SAFETY: frees what virDomainGetJobStats allocated, once.
        unsafe { sys::virTypedParamsFree(params, nparams) };
    }
    Ok(stats)
}

/// `virDomainAbortJob`: the migration is cancelled, the domain keeps
/// running on its source.
pub fn abort_job(dom: &Domain) -> Result<(), Error> {
    // SAFETY: `dom` is a valid domain for the call.
    if unsafe { sys::virDomainAbortJob(dom.as_ptr()) } < 0 {
        return Err(Error::last_error());
    }
    Ok(())
}

/// `virDomainMigrateGetMaxDowntime`, in milliseconds.
pub fn max_downtime_ms(dom: &Domain) -> Result<u64, Error> {
    let mut ms: libc::c_ulonglong = 0;
    // SAFETY: `dom` is a valid domain; `ms` outlives the call.
    if unsafe { sys::virDomainMigrateGetMaxDowntime(dom.as_ptr(), &mut ms, 0) } < 0 {
        return Err(Error::last_error());
    }
    Ok(ms)
}

/// `virDomainMigrateStartPostCopy` on the source's domain of a migration
/// started with `VIR_MIGRATE_POSTCOPY`.
pub fn start_postcopy(dom: &Domain) -> Result<(), Error> {
    // SAFETY: `dom` is a valid domain for the call.
    if unsafe { sys::virDomainMigrateStartPostCopy(dom.as_ptr(), 0) } < 0 {
        return Err(Error::last_error());
    }
    Ok(())
}

/// `virDomainStartDirtyRateCalc` in dirty-bitmap mode: libvirt asks QEMU
/// to count every page the guest writes over the next `seconds` (QEMU's
/// `calc-dirty-rate`, the same measurement `evac plan` makes over QMP).
pub fn start_dirty_rate_calc(dom: &Domain, seconds: u32) -> Result<(), Error> {
    let seconds = libc::c_int::try_from(seconds).unwrap_or(libc::c_int::MAX);
    // SAFETY: `dom` is a valid domain for the call.
    let ret = unsafe {
        sys::virDomainStartDirtyRateCalc(dom.as_ptr(), seconds, sys::VIR_DOMAIN_DIRTYRATE_MODE_DIRTY_BITMAP)
    };
    if ret < 0 {
        return Err(Error::last_error());
    }
    Ok(())
}

/// The last dirty-rate calculation of a domain, from its `dirtyrate.*`
/// statistics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DirtyRate {
    /// `VIR_DOMAIN_DIRTYRATE_UNSTARTED` (0), `_MEASURING` (1) or
    /// `_MEASURED` (2).
    pub status: i32,
    /// What QEMU measured, in whole MiB/s (libvirt's "megabytes").
    pub mib_per_second: u64,
}

/// The domain's `dirtyrate.*` statistics (`virDomainListGetStats` of that
/// one domain), freed by libvirt's own allocator.
pub fn dirty_rate(dom: &Domain) -> Result<DirtyRate, Error> {
    let mut doms = [dom.as_ptr(), std::ptr::null_mut()];
    let mut records: *mut sys::virDomainStatsRecordPtr = std::ptr::null_mut();
    // SAFETY: `doms` is a null-terminated list of one valid domain;
    // libvirt allocates `records`.
    let n = unsafe {
        sys::virDomainListGetStats(
            doms.as_mut_ptr(),
            sys::VIR_DOMAIN_STATS_DIRTYRATE,
            &mut records,
            0,
        )
    };
    if n < 0 {
        return Err(Error::last_error());
    }
    let mut rate = DirtyRate::default();
    if n > 0 && !records.is_null() {
        // SAFETY: `records` holds `n` >= 1 records from libvirt.
        let record = unsafe { &**records };
        let mut status: libc::c_int = 0;
        let mut mib: libc::c_longlong = 0;
        // SAFETY: the record's `nparams` parameters; a missing name leaves
        // the value untouched.
        unsafe {
            sys::virTypedParamsGetInt(
                record.params,
                record.nparams,
                sys::VIR_DOMAIN_STATS_DIRTYRATE_CALC_STATUS.as_ptr(),
                &mut status,
            );
            sys::virTypedParamsGetLLong(
                record.params,
                record.nparams,
                sys::VIR_DOMAIN_STATS_DIRTYRATE_MEGABYTES_PER_SECOND.as_ptr(),
                &mut mib,
            );
        }
        rate = DirtyRate {
            status,
            mib_per_second: mib.max(0) as u64,
        };
    }
    if !records.is_null() {
        // SAFETY: frees what virDomainListGetStats allocated, once.
        unsafe { sys::virDomainStatsRecordListFree(records) };
    }
    Ok(rate)
}

/// `virDomainMemoryPeek` of guest-physical memory: `size` bytes (at most
/// 64 KiB, libvirt's limit) from `start`.
pub fn memory_peek(dom: &Domain, start: u64, size: usize) -> Result<Vec<u8>, Error> {
    let mut buffer = vec![0u8; size];
    // SAFETY: `dom` is valid; `buffer` holds `size` bytes for libvirt to
    // fill.
    let ret = unsafe {
        sys::virDomainMemoryPeek(
            dom.as_ptr(),
            start,
            size,
            buffer.as_mut_ptr().cast(),
            sys::VIR_MEMORY_PHYSICAL,
        )
    };
    if ret < 0 {
        return Err(Error::last_error());
    }
    Ok(buffer)
}
