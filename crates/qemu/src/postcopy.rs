//! Postcopy on QEMU: whether a guest's RAM allows it, and the switch.
//!
//! Postcopy resumes the guest at the destination after one short pause and
//! fetches its remaining pages on demand (the destination traps the guest's
//! first touch of each missing page with userfaultfd). QEMU must have the
//! `postcopy-ram` capability on both ends before `migrate`;
//! `migrate-start-postcopy` then switches. evac never does it for a guest
//! whose RAM is a file or is shared (`memory-backend-file`, `share=on`):
//! another process may map those pages, and QEMU's support for such RAM
//! depends on the file system; the lab's VMs are of that kind.

use evac_qmp::Qmp;
use serde::Deserialize;

/// One entry of `qom-list /objects`.
#[derive(Debug, Deserialize)]
struct ObjectProperty {
    name: String,
    #[serde(rename = "type")]
    kind: String,
}

/// One entry of `query-memdev` (the fields evac reads).
#[derive(Debug, Deserialize)]
struct Memdev {
    id: Option<String>,
    #[serde(default)]
    share: bool,
}

/// Why the guest behind `src` cannot be moved by postcopy (its RAM is
/// file-backed or shared, or that cannot be told), or `None` when it can.
pub(crate) async fn refusal(src: &Qmp, vm: &str) -> Option<String> {
    let objects: Vec<ObjectProperty> = match src
        .execute_as("qom-list", Some(serde_json::json!({ "path": "/objects" })))
        .await
    {
        Ok(objects) => objects,
        Err(e) => {
            return Some(format!(
                "vm {vm}: postcopy refused: cannot list its memory backends (qom-list /objects: {e})"
            ))
        }
    };
    let memdevs: Vec<Memdev> = match src.execute_as("query-memdev", None).await {
        Ok(memdevs) => memdevs,
        Err(e) => {
            return Some(format!(
                "vm {vm}: postcopy refused: cannot list its memory backends (query-memdev: {e})"
            ))
        }
    };
    refusal_of(vm, &objects, &memdevs)
}

fn refusal_of(vm: &str, objects: &[ObjectProperty], memdevs: &[Memdev]) -> Option<String> {
    if let Some(file) = objects.iter().find(|o| o.kind == "child<memory-backend-file>") {
        return Some(format!(
            "vm {vm}: postcopy refused: its RAM `{}` is file-backed (memory-backend-file); \
             postcopy needs anonymous RAM (memory-backend-ram)",
            file.name
        ));
    }
    if let Some(shared) = memdevs.iter().find(|m| m.share) {
        return Some(format!(
            "vm {vm}: postcopy refused: its RAM `{}` is shared (share=on); postcopy needs \
             private anonymous RAM",
            shared.id.as_deref().unwrap_or("?")
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse<T: serde::de::DeserializeOwned>(json: &str) -> T {
        serde_json::from_str(json).unwrap()
    }

    /// Replies as QEMU 7.2 gives them for the lab's two kinds of VM.
    #[test]
    fn refuses_file_backed_or_shared_ram_only() {
        let file_objects: Vec<ObjectProperty> =
            parse(r#"[{"name":"type","type":"string"},{"name":"mem","type":"child<memory-backend-file>"}]"#);
        let ram_objects: Vec<ObjectProperty> =
            parse(r#"[{"name":"type","type":"string"},{"name":"mem","type":"child<memory-backend-ram>"}]"#);
        let shared: Vec<Memdev> = parse(
            r#"[{"id":"mem","size":134217728,"merge":true,"dump":true,"prealloc":false,"share":true,"host-nodes":[],"policy":"default"}]"#,
        );
        let private: Vec<Memdev> = parse(
            r#"[{"id":"mem","size":134217728,"merge":true,"dump":true,"prealloc":false,"share":false,"host-nodes":[],"policy":"default"}]"#,
        );
        let why = refusal_of("vm-1", &file_objects, &private).expect("file-backed RAM is refused");
        assert!(
            why.contains("vm-1") && why.contains("file-backed") && why.contains("`mem`"),
            "{why}"
        );
        let why = refusal_of("vm-1", &ram_objects, &shared).expect("shared RAM is refused");
        assert!(why.contains("shared"), "{why}");
        assert_eq!(refusal_of("vm-1", &ram_objects, &private), None);
        // A machine without memory backends (plain `-m`): anonymous RAM.
        assert_eq!(refusal_of("vm-1", &[], &[]), None);
    }
}
