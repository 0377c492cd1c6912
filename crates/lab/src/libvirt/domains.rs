//! The libvirt lab's domains: diskless guests whose RAM is a file of
//! random bytes or a marker (mapped privately), or anonymous RAM running
//! the dirtying guest (what postcopy can move); and what a test reads of
//! them (state, jobs, memory, their QEMUs).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use evac_libvirt::client;

use super::{io_err, Lab};
use crate::netns::pid_in_netns;
use crate::process::pids_where;
use crate::QBOOT;

impl Lab {
    /// How many domains of host `i` have a job running now (outgoing
    /// migrations, on a source).
    pub fn jobs_running(&self, i: usize) -> std::io::Result<usize> {
        self.ask(i, |conn| {
            let doms = conn
                .0
                .list_all_domains(virt::sys::VIR_CONNECT_LIST_DOMAINS_ACTIVE)?;
            Ok(doms
                .iter()
                .filter(|d| {
                    d.get_job_info()
                        .is_ok_and(|j| j.r#type != virt::sys::VIR_DOMAIN_JOB_NONE as i32)
                })
                .count())
        })
    }

    /// The pids of the QEMU processes running lab domains on host `i`
    /// (found by their name, which the lab gives, on their command line).
    pub fn qemu_pids(&self, i: usize) -> Vec<u32> {
        let host = &self.hosts[i];
        pids_where(|cmdline| {
            cmdline.contains("qemu-system") && cmdline.contains(&format!("guest={}", self.name))
        })
        .into_iter()
        .filter(|pid| pid_in_netns(*pid, &host.netns))
        .collect()
    }

    /// A RAM file of `mib` MiB in the lab's directory: random bytes, or
    /// `marker` repeated.
    pub fn ram_file(&self, name: &str, mib: u64, marker: Option<&[u8]>) -> std::io::Result<PathBuf> {
        let file = self.dir.join(format!("{name}.ram"));
        let mut out = std::io::BufWriter::new(std::fs::File::create(&file)?);
        let mut block = vec![0u8; 1 << 20];
        let mut random = std::fs::File::open("/dev/urandom")?;
        for _ in 0..mib {
            match marker {
                Some(m) if !m.is_empty() => {
                    for (i, b) in block.iter_mut().enumerate() {
                        *b = m[i % m.len()];
                    }
                }
                _ => std::io::Read::read_exact(&mut random, &mut block)?,
            }
            out.write_all(&block)?;
        }
        out.flush()?;
        Ok(file)
    }

    /// The name a lab domain gets: `<lab>-<name>` (how leftovers are found).
    pub fn domain_name(&self, name: &str) -> String {
        format!("{}-{name}", self.name)
    }

    /// The XML of a diskless lab domain of `mib` MiB whose RAM is mapped
    /// privately from `ram`.
    pub fn domain_xml(&self, name: &str, mib: u64, ram: &Path) -> String {
        format!(
            "<domain type='kvm' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>\
             <name>{name}</name><memory unit='MiB'>{mib}</memory><vcpu>1</vcpu>\
             <os><type arch='x86_64' machine='q35'>hvm</type><loader type='rom'>{QBOOT}</loader></os>\
             <devices><emulator>/usr/bin/qemu-system-x86_64</emulator>\
             <controller type='usb' model='none'/><memballoon model='none'/></devices>\
             <qemu:commandline><qemu:arg value='-object'/>\
             <qemu:arg value='memory-backend-file,id=evacram,size={mib}M,mem-path={ram},share=off'/>\
             <qemu:arg value='-machine'/><qemu:arg value='memory-backend=evacram'/></qemu:commandline>\
             </domain>",
            name = self.domain_name(name),
            ram = ram.display()
        )
    }

    /// Defines and starts a persistent lab domain on host `i`; returns its
    /// libvirt name.
    pub fn start_domain(&self, i: usize, name: &str, mib: u64, ram: &Path) -> std::io::Result<String> {
        self.start_domain_xml(i, name, self.domain_xml(name, mib, ram))
    }

    /// Starts `n` domains of `mib` MiB on host A named `<prefix><k>` (`k`
    /// from 0), their RAM one file of random bytes; their libvirt names in
    /// that order.
    ///
    /// # Panics
    ///
    /// When a domain does not start.
    pub fn start_domains(&self, prefix: &str, n: usize, mib: u64) -> Vec<String> {
        let ram = self.ram_file(prefix, mib, None).expect("the domains' RAM file");
        (0..n)
            .map(|k| {
                self.start_domain(0, &format!("{prefix}{k}"), mib, &ram)
                    .expect("a domain starts")
            })
            .collect()
    }

    /// Where host `i` keeps a local disk image `file`: its own
    /// `/var/lib/libvirt/images` (each daemon's mount namespace binds its
    /// own directory there), as (path on this machine, path the host sees).
    /// The same host path on two hosts is two files, as on real hosts.
    pub fn image_path(&self, i: usize, file: &str) -> std::io::Result<(PathBuf, PathBuf)> {
        let dir = self.hosts[i].dir.join("lib/images");
        std::fs::create_dir_all(&dir)?;
        Ok((dir.join(file), Path::new("/var/lib/libvirt/images").join(file)))
    }

    /// Like [`Lab::start_domain`], with a local raw disk (`vda`) at
    /// `disk`, a path as the host sees it (see [`Lab::image_path`]).
    pub fn start_domain_with_disk(
        &self,
        i: usize,
        name: &str,
        mib: u64,
        ram: &Path,
        disk: &Path,
    ) -> std::io::Result<String> {
        let xml = self.domain_xml(name, mib, ram).replace(
            "<controller type='usb' model='none'/>",
            &format!(
                "<disk type='file' device='disk'><driver name='qemu' type='raw'/>\
                 <source file='{}'/><target dev='vda' bus='virtio'/></disk>\
                 <controller type='usb' model='none'/>",
                disk.display()
            ),
        );
        self.start_domain_xml(i, name, xml)
    }

    fn start_domain_xml(&self, i: usize, name: &str, xml: String) -> std::io::Result<String> {
        let uri = self.hosts[i].uri();
        client::blocking(Duration::from_secs(30), move || {
            let conn = client::Conn::open_blocking(&uri)?;
            let dom = virt::domain::Domain::define_xml(&conn.0, &xml)?;
            dom.create()?;
            dom.get_name()
        })
        .map_err(|e| io_err(format!("cannot start domain {name}: {e}")))
    }

    /// Defines and starts on host `i` a domain of `mib` MiB of anonymous
    /// RAM (no backing file: what postcopy can move) running the lab's
    /// dirtying guest with its boot fill, as
    /// [`crate::Guest::FilledDirtying`]: at boot it writes
    /// [`crate::DIRTY_FILL_PATTERN`] at the start of every page from 1 MiB
    /// up, then dirties `working_set_mib` from 16 MiB on at `dirty_rate`.
    /// Returns its libvirt name.
    pub fn start_filled_dirtying_domain(
        &self,
        i: usize,
        name: &str,
        mib: u64,
        dirty_rate: evac_model::BytesPerSec,
        working_set_mib: u64,
    ) -> std::io::Result<String> {
        let image = crate::vm::dirty_guest_image(mib, dirty_rate, working_set_mib, true)?;
        let rom = self.dir.join(format!("{name}.rom"));
        std::fs::write(&rom, image)?;
        let xml = format!(
            "<domain type='kvm'><name>{name}</name><memory unit='MiB'>{mib}</memory><vcpu>1</vcpu>\
             <os><type arch='x86_64' machine='q35'>hvm</type><loader type='rom'>{rom}</loader></os>\
             <devices><emulator>/usr/bin/qemu-system-x86_64</emulator>\
             <controller type='usb' model='none'/><memballoon model='none'/></devices></domain>",
            name = self.domain_name(name),
            rom = rom.display()
        );
        self.start_domain_xml(i, name, xml)
    }

    /// The guest-physical dword at `addr` of domain `name` (its libvirt
    /// name) on host `i`, little-endian (`virDomainMemoryPeek`).
    pub fn peek_u32(&self, i: usize, name: &str, addr: u64) -> std::io::Result<u32> {
        let uri = self.hosts[i].uri();
        let name = name.to_owned();
        client::blocking(Duration::from_secs(10), move || {
            let conn = client::Conn::open_blocking(&uri)?;
            let dom = virt::domain::Domain::lookup_by_name(&conn.0, &name)?;
            let mut word = [0u8; 4];
            // SAFETY: a valid domain; libvirt writes 4 bytes into `word`.
            let ret = unsafe {
                virt::sys::virDomainMemoryPeek(
                    dom.as_ptr(),
                    addr as libc::c_ulonglong,
                    word.len(),
                    word.as_mut_ptr().cast(),
                    virt::sys::VIR_MEMORY_PHYSICAL,
                )
            };
            if ret < 0 {
                return Err(virt::error::Error::last_error());
            }
            Ok(u32::from_le_bytes(word))
        })
        .map_err(|e| io_err(format!("{}: peek at {addr:#x}: {e}", self.hosts[i].hostname)))
    }

    /// Names of the running domains of host `i`.
    pub fn running_domains(&self, i: usize) -> std::io::Result<Vec<String>> {
        self.ask(i, |conn| {
            let doms = conn
                .0
                .list_all_domains(virt::sys::VIR_CONNECT_LIST_DOMAINS_ACTIVE)?;
            let mut names = doms.iter().map(|d| d.get_name()).collect::<Result<Vec<_>, _>>()?;
            names.sort();
            Ok(names)
        })
    }

    /// Whether domain `name` on host `i` is in postcopy now: its source
    /// paused for postcopy (`VIR_DOMAIN_PAUSED_POSTCOPY`) or its
    /// destination running in it (`VIR_DOMAIN_RUNNING_POSTCOPY`), as libvirt
    /// reports the domain's state and its reason.
    pub fn in_postcopy(&self, i: usize, name: &str) -> std::io::Result<bool> {
        self.ask_domain(i, name, |dom| {
            let (state, reason) = dom.get_state()?;
            use virt::sys::*;
            Ok(
                (state == VIR_DOMAIN_PAUSED && reason == VIR_DOMAIN_PAUSED_POSTCOPY as i32)
                    || (state == VIR_DOMAIN_RUNNING && reason == VIR_DOMAIN_RUNNING_POSTCOPY as i32),
            )
        })
    }

    /// Whether domain `name` is paused on host `i`.
    pub fn is_paused(&self, i: usize, name: &str) -> std::io::Result<bool> {
        self.ask_domain(i, name, |dom| {
            Ok(dom.get_state()?.0 == virt::sys::VIR_DOMAIN_PAUSED)
        })
    }

    /// Asks host `i`'s daemon (a connection of its own, on a thread, at
    /// most 10 s): what the read-only checks above share; an error names the
    /// host.
    fn ask<T: Send + 'static>(
        &self,
        i: usize,
        question: impl FnOnce(&client::Conn) -> Result<T, virt::error::Error> + Send + 'static,
    ) -> std::io::Result<T> {
        let uri = self.hosts[i].uri();
        client::blocking(Duration::from_secs(10), move || {
            question(&client::Conn::open_blocking(&uri)?)
        })
        .map_err(|e| io_err(format!("{}: {e}", self.hosts[i].hostname)))
    }

    /// [`Lab::ask`] about domain `name` on host `i`.
    fn ask_domain<T: Send + 'static>(
        &self,
        i: usize,
        name: &str,
        question: impl FnOnce(&virt::domain::Domain) -> Result<T, virt::error::Error> + Send + 'static,
    ) -> std::io::Result<T> {
        let name = name.to_owned();
        self.ask(i, move |conn| {
            question(&virt::domain::Domain::lookup_by_name(&conn.0, &name)?)
        })
    }
}
