//! Whether this machine holds a lab, checked before anything is built.
//!
//! A lab of hundreds of VMs runs into the machine's limits one by one: the
//! memory the destination copies fill, the disk the source VMs' RAM files
//! take, the file descriptors of the process running evac (a QMP
//! connection to each source and each destination QEMU), the kernel's
//! threads and network namespaces. Found half way through a build (a
//! QEMU that cannot start, `EMFILE` in the run loop, the OOM killer) each
//! looks like a bug of evac; checked up front, each is one clear sentence
//! naming the limit, what the lab needs and what the machine has.
//!
//! The per-VM costs below were measured on this project's lab machine
//! (Debian 12, QEMU 7.2; `docs/lab.md`, "The lab at fleet size").

use std::path::Path;

use evac_model::Bytes;

/// What one lab QEMU (source or destination) costs besides its guest RAM:
/// its own private memory (measured 15 MiB resident, idle, for a 32 MiB
/// guest under this lab's KVM; rounded up for migration buffers).
pub const QEMU_OVERHEAD: Bytes = Bytes(20 << 20);

/// Memory left for everything else (the run loop, the delay line, other
/// processes).
pub const MEMORY_RESERVE: Bytes = Bytes(1 << 30);

/// Disk left free beside the VMs' RAM files.
pub const DISK_RESERVE: Bytes = Bytes(1 << 30);

/// File descriptors of the process running the lab and evac, per VM: a QMP
/// connection to its source and to its destination QEMU, the destination's
/// log while it starts, and margin.
pub const FDS_PER_VM: u64 = 6;

/// File descriptors besides the VMs' (the runtime, the journal, the delay
/// line's TUN devices, libraries).
pub const FDS_BASE: u64 = 256;

/// Threads of one lab QEMU at most (5 idle; a migration adds its own and
/// the destination's receiving ones).
pub const THREADS_PER_QEMU: u64 = 10;

/// The lab's topology numbers hosts `10.214.<i>.2`.
pub const MAX_HOSTS: usize = 250;

/// What a lab needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Needs {
    pub vms: usize,
    pub hosts: usize,
    /// The VMs' guest RAM, summed.
    pub vm_memory: Bytes,
}

/// What this machine has (read by [`Machine::here`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Machine {
    /// `MemAvailable` of `/proc/meminfo`.
    pub memory_available: Bytes,
    /// Free space where the lab writes its RAM files.
    pub disk_free: Bytes,
    /// This process's hard limit of open files (`RLIMIT_NOFILE`): the soft
    /// one is raised to it ([`raise_fd_limit`]).
    pub fd_hard_limit: u64,
    /// `kernel.threads-max` minus the threads that run now.
    pub threads_free: u64,
    /// `user.max_net_namespaces` minus the namespaces that exist now.
    pub netns_free: u64,
}

fn gib(b: Bytes) -> String {
    format!("{:.1} GiB", b.0 as f64 / (1u64 << 30) as f64)
}

/// `Err` with one line per limit the lab would pass: the limit, what the
/// lab needs, what the machine has, and what to change.
pub fn check(needs: &Needs, machine: &Machine) -> Result<(), String> {
    let n = needs.vms as u64;
    let mut problems = Vec::new();
    if needs.hosts > MAX_HOSTS {
        problems.push(format!(
            "hosts: the lab numbers at most {MAX_HOSTS} hosts, the file has {}",
            needs.hosts
        ));
    }
    // Each VM's copy at its destination is resident (anonymous memory, no
    // swap here); its source's RAM file is page cache, which the kernel can
    // write back and drop.
    let memory = Bytes(needs.vm_memory.0 + 2 * n * QEMU_OVERHEAD.0 + MEMORY_RESERVE.0);
    if memory.0 > machine.memory_available.0 {
        problems.push(format!(
            "memory: {} VMs need {} ({} of guest RAM at their destinations, {} per QEMU, {} in reserve), \
             the machine has {} available (MemAvailable): fewer or smaller VMs",
            needs.vms,
            gib(memory),
            gib(needs.vm_memory),
            Bytes(QEMU_OVERHEAD.0),
            gib(MEMORY_RESERVE),
            gib(machine.memory_available)
        ));
    }
    let disk = Bytes(needs.vm_memory.0 + DISK_RESERVE.0);
    if disk.0 > machine.disk_free.0 {
        problems.push(format!(
            "disk: the VMs' RAM files need {} (with {} free beside), {} is free there",
            gib(disk),
            gib(DISK_RESERVE),
            gib(machine.disk_free)
        ));
    }
    let fds = FDS_BASE + FDS_PER_VM * n;
    if fds > machine.fd_hard_limit {
        problems.push(format!(
            "open files: {} VMs need {fds} file descriptors in this process, its hard limit \
             (RLIMIT_NOFILE) is {}: raise it (`ulimit -Hn`, `LimitNOFILE=`)",
            needs.vms, machine.fd_hard_limit
        ));
    }
    let threads = 2 * n * THREADS_PER_QEMU;
    if threads > machine.threads_free {
        problems.push(format!(
            "threads: {} QEMUs (sources and destinations) need up to {threads} threads, the kernel \
             has room for {} more (sysctl kernel.threads-max)",
            2 * n,
            machine.threads_free
        ));
    }
    // A namespace per host and one router per site.
    let netns = needs.hosts as u64 + 2;
    if netns > machine.netns_free {
        problems.push(format!(
            "network namespaces: the lab needs {netns}, the kernel allows {} more \
             (sysctl user.max_net_namespaces)",
            machine.netns_free
        ));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "this machine cannot hold the lab:\n  {}",
            problems.join("\n  ")
        ))
    }
}

impl Machine {
    /// Reads this machine's limits; `dir` is where the RAM files go (its
    /// nearest existing ancestor is measured).
    pub fn here(dir: &Path) -> std::io::Result<Machine> {
        let meminfo = std::fs::read_to_string("/proc/meminfo")?;
        let memory_available = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemAvailable:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kib| Bytes(kib << 10))
            .ok_or_else(|| std::io::Error::other("/proc/meminfo: no MemAvailable"))?;
        let mut at = dir;
        while !at.exists() {
            at = at.parent().unwrap_or(Path::new("/"));
        }
        let disk_free = statvfs_free(at)?;
        let fd_hard_limit = rlimit_nofile()?.1;
        let number = |path: &str| -> std::io::Result<u64> {
            std::fs::read_to_string(path)?
                .trim()
                .parse()
                .map_err(|e| std::io::Error::other(format!("{path}: {e}")))
        };
        let threads_now: u64 = std::fs::read_to_string("/proc/loadavg")?
            .split_whitespace()
            .nth(3)
            .and_then(|running_total| running_total.split('/').nth(1)?.parse().ok())
            .unwrap_or(0);
        let threads_free = number("/proc/sys/kernel/threads-max")?.saturating_sub(threads_now);
        let netns_now = std::fs::read_dir("/run/netns")
            .map(|d| d.count() as u64)
            .unwrap_or(0);
        let netns_free = number("/proc/sys/user/max_net_namespaces")?.saturating_sub(netns_now);
        Ok(Machine {
            memory_available,
            disk_free,
            fd_hard_limit,
            threads_free,
            netns_free,
        })
    }
}

fn statvfs_free(path: &Path) -> std::io::Result<Bytes> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(std::io::Error::other)?;
    // SAFETY: an all-zero statvfs is a valid value for statvfs(3) to fill.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a valid C string and a struct statvfs to fill.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(Bytes(st.f_bavail as u64 * st.f_frsize as u64))
}

/// This process's `RLIMIT_NOFILE`: (soft, hard).
fn rlimit_nofile() -> std::io::Result<(u64, u64)> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit(2) fills the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok((limit.rlim_cur, limit.rlim_max))
}

/// Raises this process's soft limit of open files to its hard limit (what
/// an unprivileged process may do itself): a lab of 200 VMs needs more than
/// the usual soft 1024. Returns the new soft limit.
pub fn raise_fd_limit() -> std::io::Result<u64> {
    let (soft, hard) = rlimit_nofile()?;
    if soft < hard {
        let limit = libc::rlimit {
            rlim_cur: hard,
            rlim_max: hard,
        };
        // SAFETY: setrlimit(2) reads the struct we pass.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(rlimit_nofile()?.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;
    const GIB: u64 = 1 << 30;

    fn roomy() -> Machine {
        Machine {
            memory_available: Bytes(64 * GIB),
            disk_free: Bytes(100 * GIB),
            fd_hard_limit: 1 << 20,
            threads_free: 100_000,
            netns_free: 10_000,
        }
    }

    fn fleet(vms: usize, hosts: usize, mib_each: u64) -> Needs {
        Needs {
            vms,
            hosts,
            vm_memory: Bytes(vms as u64 * mib_each * MIB),
        }
    }

    #[test]
    fn two_hundred_small_vms_fit_a_24_gib_machine() {
        // By hand: 200 x 32 MiB = 6400 MiB at the destinations, 400 QEMUs
        // x 20 MiB = 8000 MiB, 1024 MiB reserve: 15 424 MiB.
        let needs = fleet(200, 24, 32);
        let mut machine = roomy();
        machine.memory_available = Bytes(15_424 * MIB);
        assert_eq!(check(&needs, &machine), Ok(()));
        machine.memory_available = Bytes(15_423 * MIB);
        let e = check(&needs, &machine).unwrap_err();
        assert!(e.contains("memory: 200 VMs need 15.1 GiB"), "{e}");
        assert!(e.contains("15.1 GiB available (MemAvailable)"), "{e}");
    }

    #[test]
    fn each_limit_is_named_with_what_to_change() {
        let needs = fleet(200, 260, 64);
        let machine = Machine {
            memory_available: Bytes(GIB),
            disk_free: Bytes(GIB),
            fd_hard_limit: 1024,
            threads_free: 3000,
            netns_free: 100,
        };
        let e = check(&needs, &machine).unwrap_err();
        // 256 + 6 x 200 = 1456 descriptors; 2 x 200 x 10 = 4000 threads;
        // 260 hosts + 2 routers = 262 namespaces.
        for expected in [
            "hosts: the lab numbers at most 250 hosts, the file has 260",
            "memory: 200 VMs need",
            "disk: the VMs' RAM files need 13.5 GiB",
            "open files: 200 VMs need 1456 file descriptors",
            "ulimit -Hn",
            "threads: 400 QEMUs (sources and destinations) need up to 4000 threads",
            "kernel.threads-max",
            "network namespaces: the lab needs 262, the kernel allows 100 more",
        ] {
            assert!(e.contains(expected), "missing `{expected}` in:\n{e}");
        }
        assert_eq!(e.lines().count(), 7, "{e}");
    }

    #[test]
    fn this_machine_is_read() {
        let machine = Machine::here(Path::new("/nonexistent/lab/dir")).unwrap();
        assert!(
            machine.memory_available.0 > 0 && machine.disk_free.0 > 0,
            "{machine:?}"
        );
        assert!(machine.fd_hard_limit >= 1024, "{machine:?}");
        let soft = raise_fd_limit().unwrap();
        assert_eq!(soft, machine.fd_hard_limit);
    }
}
