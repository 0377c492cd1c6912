//! Writes a scenario of N VMs each written out as its own `[[vm]]` table, on
//! standard output: the shape of an export from a real inventory, and the
//! input of the loader's memory figures in docs/scale.md.
//!
//! ```text
//! cargo run --release -p evac-scenario --example explicit_fleet -- 1000000 > /tmp/explicit-1m.toml
//! /usr/bin/time -v evac simulate /tmp/explicit-1m.toml --policy sequential
//! ```
//!
//! N / 50 source hosts (10 Gbps NICs), N / 500 destinations (25 Gbps, 4 TiB
//! of room each), a WAN of 10 Gbps per 10,000 VMs, a horizon of 7 s per VM
//! (`sequential` needs about 5.8: one connection of 16 MiB per 20 ms); VM `i` has 1 to 8 GiB of
//! memory (`i` mod 8, plus one) on source host `i mod sources`, so the file
//! is about 48 bytes per VM and its content the same on every machine.

use std::io::{BufWriter, Write as _};

fn main() -> std::io::Result<()> {
    let vms: u64 = match std::env::args().nth(1).map(|a| a.replace('_', "").parse()) {
        Some(Ok(n)) if n >= 500 => n,
        _ => {
            eprintln!("usage: explicit_fleet VMS   (at least 500, e.g. 1000000)");
            std::process::exit(2);
        }
    };
    let sources = vms / 50;
    let destinations = vms / 500;
    let mut out = BufWriter::new(std::io::stdout().lock());
    writeln!(
        out,
        "# {vms} VMs as explicit [[vm]] tables: written by\n\
         #   cargo run --release -p evac-scenario --example explicit_fleet -- {vms}\n\
         name = \"{vms} explicit VMs\"\n\n[network]\nwan_bandwidth = \"{vms} Mbps\"\n\
         wan_rtt = \"20 ms\"\ntcp_window = \"16 MiB\"\n\n[controller]\nperiod = \"10 s\"\nhorizon = \"{} s\"",
        vms * 7
    )?;
    for i in 1..=sources {
        write!(
            out,
            "\n[[host]]\nname = \"src-{i}\"\nsite = \"source\"\nnic = \"10 Gbps\"\n"
        )?;
    }
    for i in 1..=destinations {
        write!(
            out,
            "\n[[host]]\nname = \"dst-{i}\"\nsite = \"destination\"\nnic = \"25 Gbps\"\nmemory = \"4 TiB\"\n"
        )?;
    }
    for i in 0..vms {
        write!(
            out,
            "\n[[vm]]\nname = \"vm-{}\"\nhost = \"src-{}\"\nmemory = \"{} GiB\"\n",
            i + 1,
            i % sources + 1,
            i % 8 + 1
        )?;
    }
    out.flush()
}
