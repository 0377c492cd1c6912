//! Tests of what every inventory shares: the common refusals pointed at
//! their entries, lines found by entry or key, parse errors placed.

use super::*;
use evac_model::wall_clock::PowerOffAt;
use evac_model::Site;

fn host(name: &str, site: Site) -> HostView<'_> {
    HostView {
        name,
        site,
        migration_address: (site == Site::Destination).then_some("10.0.0.2"),
        power_off_at: None,
        ups: false,
        ups_margin: false,
    }
}

fn refused(hosts: &[HostView<'_>], vms: &[VmView<'_>]) -> Refusal {
    check_hosts_and_vms(hosts, vms).unwrap_err()
}

#[test]
fn each_common_refusal_points_at_its_entry() {
    let (a, b) = (host("a", Site::Source), host("b", Site::Destination));
    assert!(check_hosts_and_vms(&[a, b], &[]).is_ok());
    let r = refused(&[a, b, host("a", Site::Destination)], &[]);
    assert_eq!(r.at, At::Entry("a".into()));
    assert!(r.message.contains("listed twice"), "{r:?}");
    let r = refused(
        &[
            a,
            HostView {
                migration_address: None,
                ..b
            },
        ],
        &[],
    );
    assert!(r.message.contains("migration_address"), "{r:?}");
    let late = HostView {
        power_off_at: Some(PowerOffAt::FromStart(std::time::Duration::from_secs(60))),
        ..b
    };
    assert!(refused(&[a, late], &[]).message.contains("power_off_at"));
    let vm = |host, destination| VmView {
        name: "v",
        host,
        destination,
    };
    assert!(refused(&[a, b], &[vm(Some("b"), None)])
        .message
        .contains("not a source host"));
    assert!(refused(&[a, b], &[vm(Some("z"), None)])
        .message
        .contains("no host is named `z`"));
    assert!(refused(&[a, b], &[vm(None, Some("a"))])
        .message
        .contains("no destination host `a`"));
    let r = refused(&[a, b], &[vm(None, None), vm(None, None)]);
    assert_eq!(r.at, At::Entry("v".into()));
    assert_eq!(refused(&[a], &[]).at, At::File);
    assert!(refused(&[b], &[]).message.contains("\"source\""));
}

#[test]
fn lines_are_found_by_entry_name_or_key() {
    let text = "name = \"run\"\nbackend = \"x\"\n[[host]]\nname = \"a1\"\n[[host]]\nname = \"a\"\n";
    assert_eq!(line_of(text, &At::Entry("a".into())), 6);
    assert_eq!(line_of(text, &At::Entry("a1".into())), 4);
    assert_eq!(line_of(text, &At::Key("backend")), 2);
    assert_eq!(line_of(text, &At::Entry("zz".into())), 0);
    assert_eq!(line_of(text, &At::File), 0);
    let e = Refusal::new(At::Entry("a".into()), "bad").into_error(text, Path::new("f.toml"));
    assert_eq!(e.to_string(), "f.toml:6: bad");
    let e = Refusal::new(At::File, "bad").into_error(text, Path::new("f.toml"));
    assert_eq!(e.to_string(), "f.toml: bad");
}

#[test]
fn parse_errors_name_line_column_and_field() {
    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct T {
        host: Vec<H>,
    }
    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct H {
        nic: evac_model::BitsPerSec,
    }
    let text = "[[host]]\nnic = \"1 Gbps\"\n[[host]]\nnic = \"1 GiB\"\n";
    let e = parse::<T>(text, Path::new("f.toml")).unwrap_err().to_string();
    assert!(e.starts_with("f.toml:4:7: field `host[1].nic`"), "{e}");
}
