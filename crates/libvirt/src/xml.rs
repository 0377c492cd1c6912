//! What the backend reads from a domain's XML: its local disks, its
//! network interfaces, its machine type, and whether its memory can be
//! moved by postcopy.

/// A disk that lives on the host itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalDisk {
    /// The guest's name for it (`vda`), which libvirt's block calls take.
    pub target: String,
    /// Its source on the host.
    pub path: String,
}

impl std::fmt::Display for LocalDisk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.target, self.path)
    }
}

/// The domain's disks that live on the host itself
/// (`vda: /var/lib/libvirt/images/x.qcow2`), and the host-side device names
/// of its interfaces.
///
/// A disk is shared when it is a network disk (`type='network'`: Ceph RBD,
/// iSCSI, NBD...) or when its source path lies under one of
/// `shared_storage` (e.g. an NFS mount every host has); an empty CD-ROM has
/// nothing to copy. Every other disk is local.
pub fn devices(xml: &str, shared_storage: &[String]) -> Result<(Vec<LocalDisk>, Vec<String>), String> {
    let doc = roxmltree::Document::parse(xml).map_err(|e| format!("cannot parse its XML: {e}"))?;
    let Some(devices) = doc.root_element().children().find(|n| n.has_tag_name("devices")) else {
        return Ok((Vec::new(), Vec::new()));
    };
    let mut local = Vec::new();
    let mut interfaces = Vec::new();
    for node in devices.children().filter(|n| n.is_element()) {
        if node.has_tag_name("disk") {
            if node.attribute("type") == Some("network") {
                continue;
            }
            let source = node.children().find(|n| n.has_tag_name("source"));
            let path = source.and_then(|s| {
                s.attribute("file")
                    .or_else(|| s.attribute("dev"))
                    .or_else(|| s.attribute("dir"))
                    .or_else(|| s.attribute("volume"))
            });
            let Some(path) = path else {
                continue; // no medium
            };
            if shared_storage.iter().any(|prefix| under(path, prefix)) {
                continue;
            }
            let target = node
                .children()
                .find(|n| n.has_tag_name("target"))
                .and_then(|t| t.attribute("dev"))
                .unwrap_or(path);
            local.push(LocalDisk {
                target: target.to_owned(),
                path: path.to_owned(),
            });
        } else if node.has_tag_name("interface") {
            if let Some(dev) = node
                .children()
                .find(|n| n.has_tag_name("target"))
                .and_then(|t| t.attribute("dev"))
            {
                interfaces.push(dev.to_owned());
            }
        }
    }
    Ok((local, interfaces))
}

/// Whether `path` is `prefix` or inside it (a path-component match, so
/// `/mnt/nfs2` is not under `/mnt/nfs`).
/// The machine type of `<os><type machine='...'>` (`pc-q35-7.2`), if the
/// XML parses and names one.
pub fn machine(xml: &str) -> Option<String> {
    let doc = roxmltree::Document::parse(xml).ok()?;
    let os = doc.root_element().children().find(|n| n.has_tag_name("os"))?;
    let kind = os.children().find(|n| n.has_tag_name("type"))?;
    kind.attribute("machine").map(str::to_owned)
}

/// What a probe domain copies from a fleet domain of its host so that
/// its destination starts the same QEMU: the domain type (`kvm`), the
/// architecture and machine type of `<os><type>`, and the emulator.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Platform {
    pub kind: Option<String>,
    pub arch: Option<String>,
    pub machine: Option<String>,
    pub emulator: Option<String>,
}

/// The [`Platform`] of a domain's XML (`None` if it does not parse).
pub fn platform(xml: &str) -> Option<Platform> {
    let doc = roxmltree::Document::parse(xml).ok()?;
    let root = doc.root_element();
    let os_type = root
        .children()
        .find(|n| n.has_tag_name("os"))
        .and_then(|os| os.children().find(|n| n.has_tag_name("type")));
    let emulator = root
        .children()
        .find(|n| n.has_tag_name("devices"))
        .and_then(|d| d.children().find(|n| n.has_tag_name("emulator")))
        .and_then(|e| e.text())
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty());
    Some(Platform {
        kind: root.attribute("type").map(str::to_owned),
        arch: os_type.and_then(|t| t.attribute("arch")).map(str::to_owned),
        machine: os_type.and_then(|t| t.attribute("machine")).map(str::to_owned),
        emulator,
    })
}

/// `text` with XML's five special characters escaped.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('\'', "&apos;")
        .replace('"', "&quot;")
}

/// The smallest domain that still starts a QEMU like the fleet's: `mib`
/// MiB of anonymous memory, one vCPU, no disk, no network, no USB, no
/// balloon; what `platform` does not say, libvirt chooses (its default
/// machine and emulator for the host's architecture).
pub fn probe_domain(name: &str, mib: u64, platform: &Platform) -> String {
    let attr = |key: &str, value: &Option<String>| {
        value
            .as_deref()
            .map_or_else(String::new, |v| format!(" {key}='{}'", escape(v)))
    };
    let emulator = platform
        .emulator
        .as_deref()
        .map_or_else(String::new, |e| format!("<emulator>{}</emulator>", escape(e)));
    format!(
        "<domain type='{kind}'><name>{name}</name><memory unit='MiB'>{mib}</memory><vcpu>1</vcpu>\
         <os><type{arch}{machine}>hvm</type></os>\
         <devices>{emulator}<controller type='usb' model='none'/><memballoon model='none'/></devices>\
         </domain>",
        kind = escape(platform.kind.as_deref().unwrap_or("kvm")),
        name = escape(name),
        arch = attr("arch", &platform.arch),
        machine = attr("machine", &platform.machine),
    )
}

fn under(path: &str, prefix: &str) -> bool {
    let prefix = prefix.trim_end_matches('/');
    path == prefix
        || path
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// Why a domain's memory cannot be moved by postcopy, or `None`: memory
/// backed by a file (`<memoryBacking><source type='file'/>`, or a QEMU
/// `memory-backend-file` passed through `<qemu:commandline>`) or shared
/// (`<access mode='shared'/>`). QEMU 7.2 cannot register such memory for
/// postcopy's page faults ("userfault register: Invalid argument"): the
/// switch fails with the source paused and, measured in the lab
/// (libvirt-lab notes), its discard punches holes in the backing file.
pub fn postcopy_obstacle(xml: &str) -> Result<Option<String>, String> {
    let doc = roxmltree::Document::parse(xml).map_err(|e| format!("cannot parse its XML: {e}"))?;
    for node in doc.descendants().filter(|n| n.is_element()) {
        let parent_is = |tag: &str| node.parent_element().is_some_and(|p| p.has_tag_name(tag));
        if node.has_tag_name("source") && parent_is("memoryBacking") && node.attribute("type") == Some("file")
        {
            return Ok(Some(
                "its memory is backed by a file (<memoryBacking><source type='file'/>)".into(),
            ));
        }
        if node.has_tag_name("access")
            && parent_is("memoryBacking")
            && node.attribute("mode") == Some("shared")
        {
            return Ok(Some(
                "its memory is shared (<memoryBacking><access mode='shared'/>)".into(),
            ));
        }
        if node.tag_name().name() == "arg"
            && node
                .attribute("value")
                .is_some_and(|v| v.starts_with("memory-backend-file"))
        {
            return Ok(Some(
                "its memory is a QEMU memory-backend-file (<qemu:commandline>)".into(),
            ));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_probe_domain_copies_the_platform_and_nothing_else() {
        let fleet = "<domain type='kvm' id='3'><name>web</name><memory unit='KiB'>65536</memory>\
            <os><type arch='x86_64' machine='pc-q35-7.2'>hvm</type><loader type='rom'>/x.rom</loader></os>\
            <devices><emulator>/usr/bin/qemu-system-x86_64</emulator>\
            <disk type='file' device='disk'><source file='/var/lib/x.img'/><target dev='vda'/></disk>\
            </devices></domain>";
        let platform = platform(fleet).unwrap();
        assert_eq!(
            platform,
            Platform {
                kind: Some("kvm".into()),
                arch: Some("x86_64".into()),
                machine: Some("pc-q35-7.2".into()),
                emulator: Some("/usr/bin/qemu-system-x86_64".into()),
            }
        );
        let probe = probe_domain("evac-probe-m-1-0", 16, &platform);
        // It parses, and has the platform, 16 MiB and no disk or loader.
        let again = super::platform(&probe).unwrap();
        assert_eq!(again, platform);
        assert!(probe.contains("<memory unit='MiB'>16</memory>"), "{probe}");
        assert_eq!(devices(&probe, &[]).unwrap(), (Vec::new(), Vec::new()));
        assert!(!probe.contains("loader"), "{probe}");
        // Nothing known: libvirt's defaults, and a name that cannot break out.
        let bare = probe_domain("a'b<c", 16, &Platform::default());
        assert!(
            bare.starts_with("<domain type='kvm'><name>a&apos;b&lt;c</name>"),
            "{bare}"
        );
        assert!(bare.contains("<os><type>hvm</type></os>"), "{bare}");
        assert!(roxmltree::Document::parse(&bare).is_ok());
    }

    #[test]
    fn the_machine_type_is_read() {
        let xml = "<domain><os><type arch='x86_64' machine='pc-q35-7.2'>hvm</type></os></domain>";
        assert_eq!(machine(xml).as_deref(), Some("pc-q35-7.2"));
        assert_eq!(machine("<domain><os/></domain>"), None);
        assert_eq!(machine("not xml"), None);
    }

    const XML: &str = "<domain type='kvm'><name>web</name><devices>\
        <disk type='file' device='disk'><source file='/var/lib/libvirt/images/web.qcow2'/><target dev='vda'/></disk>\
        <disk type='file' device='disk'><source file='/mnt/nfs/web-data.qcow2'/><target dev='vdb'/></disk>\
        <disk type='file' device='disk'><source file='/mnt/nfs2/x.raw'/><target dev='vdd'/></disk>\
        <disk type='network' device='disk'><source protocol='rbd' name='pool/web'/><target dev='vdc'/></disk>\
        <disk type='file' device='cdrom'><target dev='sda'/></disk>\
        <interface type='bridge'><source bridge='br0'/><target dev='vnet3'/></interface>\
        <interface type='user'/>\
        </devices></domain>";

    #[test]
    fn local_disks_are_the_ones_outside_shared_storage() {
        let (local, ifaces) = devices(XML, &["/mnt/nfs/".to_owned()]).unwrap();
        let local: Vec<String> = local.iter().map(ToString::to_string).collect();
        assert_eq!(
            local,
            vec!["vda: /var/lib/libvirt/images/web.qcow2", "vdd: /mnt/nfs2/x.raw"]
        );
        assert_eq!(ifaces, vec!["vnet3"]);
        let (local, _) = devices(XML, &[]).unwrap();
        assert_eq!(local.len(), 3);
    }

    #[test]
    fn bad_xml_is_an_error() {
        assert!(devices("<domain>", &[]).unwrap_err().contains("cannot parse"));
        assert_eq!(devices("<domain/>", &[]).unwrap(), (vec![], vec![]));
    }

    #[test]
    fn postcopy_is_refused_for_file_backed_or_shared_memory() {
        let anonymous = "<domain><memory unit='MiB'>128</memory><devices/></domain>";
        assert_eq!(postcopy_obstacle(anonymous), Ok(None));
        let file = "<domain><memoryBacking><source type='file'/></memoryBacking></domain>";
        assert!(postcopy_obstacle(file)
            .unwrap()
            .unwrap()
            .contains("backed by a file"));
        let shared = "<domain><memoryBacking><access mode='shared'/></memoryBacking></domain>";
        assert!(postcopy_obstacle(shared).unwrap().unwrap().contains("shared"));
        // The lab's domains: RAM mapped from a file through QEMU's arguments.
        let lab = "<domain xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'><qemu:commandline>\
                   <qemu:arg value='-object'/><qemu:arg value='memory-backend-file,id=evacram,size=32M,mem-path=/x,share=off'/>\
                   </qemu:commandline></domain>";
        assert!(postcopy_obstacle(lab)
            .unwrap()
            .unwrap()
            .contains("memory-backend-file"));
        assert!(postcopy_obstacle("<domain").is_err());
    }
}
