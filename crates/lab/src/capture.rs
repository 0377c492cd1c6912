//! Packet captures inside a lab namespace: `tcpdump` on one interface
//! into a pcap file, stopped (by its pid) when the [`Capture`] is stopped
//! or dropped. The TLS tests read the file as bytes and look for a marker
//! the guest's RAM holds.

use std::io;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// `Err(reason)` when packets cannot be captured here.
pub fn tcpdump_available() -> Result<(), String> {
    crate::process::run("tcpdump", &["--version"])
        .map(|_| ())
        .map_err(|e| format!("`tcpdump` is missing ({e}): apt-get install tcpdump"))
}

/// A running `tcpdump`; stopped on drop.
#[derive(Debug)]
pub struct Capture {
    child: Option<Child>,
    pub file: PathBuf,
}

impl Capture {
    /// Captures the first `snaplen` bytes (0: all) of each packet matching `filter`
    /// (a pcap filter, e.g. `tcp`) on `dev` in network namespace `netns`,
    /// into `file`; returns once tcpdump listens.
    pub fn start(netns: &str, dev: &str, filter: &str, snaplen: u32, file: &Path) -> io::Result<Capture> {
        let log = std::fs::File::create(file.with_extension("tcpdump.log"))?;
        let _ = std::fs::remove_file(file);
        let child = {
            use std::os::unix::process::CommandExt;
            Command::new("ip")
                // A 64 MiB buffer (more than the tests' whole streams): the
                // kernel drops nothing while a loaded machine runs tcpdump late.
                .args([
                    "netns", "exec", netns, "tcpdump", "-i", dev, "-n", "-U", "-B", "65536", "-s",
                ])
                .arg(snaplen.to_string())
                .arg("-w")
                .arg(file)
                .arg(filter)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                // Its own group: a Ctrl-C at the terminal stops the test, not it alone.
                .process_group(0)
                .spawn()?
        };
        let mut capture = Capture {
            child: Some(child),
            file: file.to_owned(),
        };
        // tcpdump creates the file once its capture socket is open.
        let started = Instant::now();
        while !file.exists() {
            let exited = capture
                .child
                .as_mut()
                .is_some_and(|c| c.try_wait().ok().flatten().is_some());
            if exited || started.elapsed() > Duration::from_secs(10) {
                capture.stop();
                let log = std::fs::read_to_string(file.with_extension("tcpdump.log")).unwrap_or_default();
                return Err(io::Error::other(format!(
                    "tcpdump in {netns} on {dev} did not start: {}",
                    log.trim()
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(capture)
    }

    /// Stops the capture (SIGINT, then SIGKILL after 5 s) and returns the
    /// captured bytes (pcap).
    pub fn stop(&mut self) -> Vec<u8> {
        if let Some(child) = self.child.take() {
            // `ip netns exec` execs tcpdump: the pid is tcpdump's, and
            // SIGINT makes it write out what it holds.
            crate::process::stop(child, libc::SIGINT, Duration::from_secs(5));
        }
        std::fs::read(&self.file).unwrap_or_default()
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.stop();
    }
}

/// What a pcap file holds: packets, the bytes captured of them, and their
/// length on the wire (larger when snapped).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PcapTotals {
    pub packets: u64,
    pub captured_bytes: u64,
    pub wire_bytes: u64,
}

/// Reads the record headers of a classic pcap file (as tcpdump `-w`
/// writes it, either byte order); `None` when it is not one or a record
/// is cut short.
pub fn pcap_totals(pcap: &[u8]) -> Option<PcapTotals> {
    let magic = pcap.get(..4)?;
    let read: fn([u8; 4]) -> u32 = match magic {
        [0xd4, 0xc3, 0xb2, 0xa1] | [0x4d, 0x3c, 0xb2, 0xa1] => u32::from_le_bytes,
        [0xa1, 0xb2, 0xc3, 0xd4] | [0xa1, 0xb2, 0x3c, 0x4d] => u32::from_be_bytes,
        _ => return None,
    };
    let word = |at: usize| -> Option<u32> { Some(read(pcap.get(at..at + 4)?.try_into().ok()?)) };
    let mut totals = PcapTotals::default();
    let mut at = 24;
    while at < pcap.len() {
        let (captured, wire) = (word(at + 8)?, word(at + 12)?);
        at += 16 + captured as usize;
        if at > pcap.len() {
            return None;
        }
        totals.packets += 1;
        totals.captured_bytes += u64::from(captured);
        totals.wire_bytes += u64::from(wire);
    }
    Some(totals)
}

/// How many times `needle` occurs in `haystack` (overlapping ones too).
pub fn count_occurrences(haystack: &[u8], needle: &[u8]) -> usize {
    if needle.is_empty() || haystack.len() < needle.len() {
        return 0;
    }
    haystack.windows(needle.len()).filter(|w| *w == needle).count()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pcap written by hand: little-endian header, two records.
    #[test]
    fn totals_a_pcap_file() {
        let mut pcap = vec![0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0];
        pcap.extend([0u8; 16]);
        for (captured, wire) in [(3u32, 1500u32), (2, 2)] {
            pcap.extend([0u8; 8]);
            pcap.extend(captured.to_le_bytes());
            pcap.extend(wire.to_le_bytes());
            pcap.extend(vec![0xee; captured as usize]);
        }
        assert_eq!(
            pcap_totals(&pcap),
            Some(PcapTotals {
                packets: 2,
                captured_bytes: 5,
                wire_bytes: 1502
            })
        );
        assert_eq!(pcap_totals(&pcap[..pcap.len() - 1]), None);
        assert_eq!(pcap_totals(b"not a pcap file at all, no"), None);
    }

    #[test]
    fn counts_occurrences() {
        assert_eq!(super::count_occurrences(b"abcabcab", b"abc"), 2);
        assert_eq!(super::count_occurrences(b"aaaa", b"aa"), 3);
        assert_eq!(super::count_occurrences(b"ab", b"abc"), 0);
        assert_eq!(super::count_occurrences(b"ab", b""), 0);
    }
}
