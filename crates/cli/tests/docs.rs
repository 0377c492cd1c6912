//! Docs that cannot drift: every field the code accepts is in
//! docs/format.md, with the default the code has; the file `evac init`
//! writes shows every scenario field; every relative link of README.md and
//! docs/*.md leads to a file (and heading) inside the repo.
//!
//! The fields come from the code, not from a list kept here: each table of
//! each format is handed to `evac` with a key it cannot know, and serde's
//! refusal lists the keys the table accepts (`unknown field `zz`, expected
//! one of ...`). A default is checked by loading a scenario with the
//! documented value written out and without the field: the two must be
//! equal. The result's fields are the keys of a real `--json` result.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use evac_scenario::Scenario;

mod common;
use common::evac_command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("the repo")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `evac ARGS... FILE` on `text` written to a temporary file: stderr.
fn evac_on(args: &[&str], text: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("probe.toml");
    std::fs::write(&file, text).unwrap();
    let out = evac_command()
        .args(args)
        .arg(&file)
        .env("EVAC_STATE_DIR", dir.path())
        .output()
        .expect("evac runs");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The names serde lists after `expected` in a refusal of an unknown key,
/// backticked (`expected one of `a`, `b``) or not (a grid's factors).
fn accepted(args: &[&str], text: &str) -> BTreeSet<String> {
    let stderr = evac_on(args, text);
    let Some((_, listed)) = stderr.split_once("expected") else {
        panic!("evac {args:?} did not list the accepted keys of:\n{text}\nit said: {stderr}");
    };
    let listed = listed.lines().next().unwrap_or_default();
    let names: BTreeSet<String> = if listed.contains('`') {
        listed.split('`').skip(1).step_by(2).map(str::to_owned).collect()
    } else {
        listed
            .trim_start_matches(" one of")
            .split(',')
            .map(|name| name.trim().to_owned())
            .filter(|name| !name.is_empty())
            .collect()
    };
    assert!(!names.is_empty(), "no names in: {stderr}");
    names
}

/// The named fields of a struct in a source file (`pub name: Type` or
/// `name: Type`), those flattened into it left out: for the keys a
/// backend's `[migration]` adds to the model's parameters (its `...Own`
/// struct), which serde's refusal of an unknown key does not list.
fn struct_fields(source: &Path, name: &str) -> BTreeSet<String> {
    let text = read(source);
    let start = text
        .find(&format!("struct {name} {{"))
        .unwrap_or_else(|| panic!("no struct {name} in {}", source.display()));
    let body = &text[start..];
    let body = &body[..body.find("\n}").expect("the struct's end")];
    let mut fields = BTreeSet::new();
    let mut flattened = false;
    for line in body.lines().skip(1).map(str::trim) {
        if line.starts_with("#[serde(flatten") {
            flattened = true;
            continue;
        }
        if line.starts_with("//") || line.starts_with("#[") || line.is_empty() {
            continue;
        }
        let line = line.trim_start_matches("pub(crate) ").trim_start_matches("pub ");
        if let Some((field, _)) = line.split_once(':') {
            if !std::mem::take(&mut flattened) {
                fields.insert(field.trim().to_owned());
            }
        }
    }
    assert!(!fields.is_empty(), "no fields in struct {name}");
    fields
}

/// One row of a table of docs/format.md.
#[derive(Debug)]
struct Row {
    names: Vec<String>,
    default: Option<String>,
    /// The whole row, as written.
    text: String,
}

/// A `## ` section of docs/format.md: its rows by the table they describe
/// (`""` for the top level, `network`, `controller.aimd`, `host`, ...), and
/// every table name it mentions (`[controller]`, `[[vm]]`).
#[derive(Debug, Default)]
struct Section {
    tables: BTreeMap<String, Vec<Row>>,
    mentioned: BTreeSet<String>,
}

impl Section {
    /// Every name the section documents: its rows' and its tables'.
    fn names(&self) -> BTreeSet<String> {
        let rows = self
            .tables
            .values()
            .flatten()
            .flat_map(|row| row.names.iter().cloned());
        rows.chain(self.mentioned.iter().cloned()).collect()
    }

    /// The row documenting `field` of `table`.
    fn row(&self, table: &str, field: &str) -> Option<&Row> {
        self.tables
            .get(table)?
            .iter()
            .find(|row| row.names.iter().any(|name| name == field))
    }
}

/// The backticked pieces of `text`.
fn backticked(text: &str) -> impl Iterator<Item = &str> {
    text.split('`').skip(1).step_by(2)
}

/// `[[vm]]` -> `vm`, `[controller.aimd]` -> `controller.aimd`, `vms[]` -> `vms`.
fn bare(name: &str) -> String {
    name.trim_start_matches('[')
        .trim_end_matches(']')
        .trim_end_matches('[')
        .to_owned()
}

/// docs/format.md, by `## ` heading.
fn format_doc() -> BTreeMap<String, Section> {
    let text = read(&repo().join("docs/format.md"));
    let mut sections: BTreeMap<String, Section> = BTreeMap::new();
    let mut heading = String::new();
    // The table the next rows describe: from the last heading or the last
    // paragraph that starts with one (`[controller.aimd]` (...):).
    let mut table = String::new();
    let mut columns: Vec<String> = Vec::new();
    for line in text.lines() {
        if let Some(title) = line.strip_prefix("## ") {
            heading = title.to_owned();
            table.clear();
            continue;
        }
        let section = sections.entry(heading.clone()).or_default();
        for name in backticked(line).filter(|name| name.starts_with('[')) {
            section.mentioned.insert(bare(name));
        }
        if let Some(title) = line.strip_prefix("### ") {
            table = backticked(title)
                .find(|name| name.starts_with('['))
                .map(bare)
                .unwrap_or_default();
            continue;
        }
        if line.starts_with("`[") {
            table = backticked(line).next().map(bare).unwrap_or_default();
            continue;
        }
        let Some(cells) = line.strip_prefix('|') else {
            columns.clear();
            continue;
        };
        let cells: Vec<String> = cells
            .split(" | ")
            .map(|c| c.trim().trim_end_matches('|').trim().to_owned())
            .collect();
        if columns.is_empty() {
            columns = cells;
            continue;
        }
        if cells.first().is_some_and(|c| c.starts_with("---")) {
            continue;
        }
        let default = columns
            .iter()
            .position(|c| c == "default")
            .and_then(|i| cells.get(i).cloned());
        let names = backticked(&cells[0])
            .flat_map(|cell| cell.split(", "))
            .map(bare)
            .collect();
        section.tables.entry(table.clone()).or_default().push(Row {
            names,
            default,
            text: line.to_owned(),
        });
    }
    sections
}

/// The section whose heading has every one of `words` (any case).
fn section<'s>(doc: &'s BTreeMap<String, Section>, words: &[&str]) -> &'s Section {
    doc.iter()
        .find(|(heading, _)| {
            let heading = heading.to_lowercase();
            words.iter().all(|word| heading.contains(&word.to_lowercase()))
        })
        .map(|(_, section)| section)
        .unwrap_or_else(|| panic!("docs/format.md has no `## ` heading with {words:?}"))
}

/// Each scenario table and the text that makes `evac simulate` list its
/// keys.
const SCENARIO_TABLES: [(&str, &str); 9] = [
    ("", "zz_unknown = 1\n"),
    ("network", "[network]\nzz_unknown = 1\n"),
    ("migration", "[migration]\nzz_unknown = 1\n"),
    ("controller", "[controller]\nzz_unknown = 1\n"),
    (
        "controller.aimd",
        "[controller]\n[controller.aimd]\nzz_unknown = 1\n",
    ),
    ("host", "[[host]]\nzz_unknown = 1\n"),
    ("vm", "[[vm]]\nzz_unknown = 1\n"),
    ("vm_group", "[[vm_group]]\nzz_unknown = 1\n"),
    (
        "network",
        "[network]\nwan_trace = [{ at = \"0 s\", bandwidth = \"1 Gbps\", zz_unknown = 1 }]\n",
    ),
];

/// What is missing, one line each, or nothing.
fn missing(what: &str, code: &BTreeSet<String>, documented: &BTreeSet<String>) -> Vec<String> {
    code.difference(documented)
        .map(|field| format!("{what}: `{field}` is not in docs/format.md"))
        .collect()
}

fn assert_none(problems: Vec<String>) {
    assert!(problems.is_empty(), "docs drifted:\n{}", problems.join("\n"));
}

#[test]
fn every_scenario_field_is_documented_in_its_table() {
    let doc = format_doc();
    let scenario = section(&doc, &["scenario"]);
    let mut problems = Vec::new();
    for (table, probe) in SCENARIO_TABLES {
        let fields = accepted(&["simulate"], probe);
        let documented: BTreeSet<String> = if probe.contains("wan_trace") {
            // A trace point's fields are written in the `wan_trace` row.
            let row = scenario
                .row(table, "wan_trace")
                .map_or("", |row| row.text.as_str());
            fields
                .iter()
                .filter(|f| row.contains(&format!("{f} = ")) || row.contains(&format!("`{f}`")))
                .cloned()
                .collect()
        } else {
            let rows = scenario.tables.get(table).into_iter().flatten();
            let names = rows.flat_map(|row| row.names.iter().cloned());
            // A table within this one is documented by its own heading or
            // paragraph (`[controller.aimd]`).
            let tables = scenario.mentioned.iter().filter_map(|mentioned| {
                if table.is_empty() {
                    Some(mentioned.clone())
                } else {
                    mentioned.strip_prefix(&format!("{table}.")).map(str::to_owned)
                }
            });
            names.chain(tables).collect()
        };
        let name = if table.is_empty() {
            "scenario".into()
        } else {
            format!("scenario [{table}]")
        };
        problems.extend(missing(&name, &fields, &documented));
    }
    assert_none(problems);
}

/// A scenario with every table, small enough to load in a blink.
fn minimal() -> String {
    format!(
        "name = \"defaults\"
[network]
wan_bandwidth = \"1 Gbps\"
[migration]
[controller]
[controller.aimd]
{hosts}[[vm]]
name = \"v\"
host = \"src\"
memory = \"1 GiB\"
[[vm_group]]
prefix = \"g\"
count = 2
host = \"src\"
memory = \"1 GiB\"
",
        hosts = evac_testkit::src_dst_toml("10 Gbps")
    )
}

/// [`minimal`] with `field = value` in `table` (its first entry).
fn with_field(table: &str, field: &str, value: &str) -> String {
    let line = format!("{field} = {value}\n");
    if table.is_empty() {
        return format!("{line}{}", minimal());
    }
    let header = match table {
        "host" | "vm" | "vm_group" => format!("[[{table}]]\n"),
        _ => format!("[{table}]\n"),
    };
    minimal().replacen(&header, &format!("{header}{line}"), 1)
}

#[test]
fn every_documented_scenario_default_is_the_codes() {
    let doc = format_doc();
    let scenario = section(&doc, &["scenario"]);
    let without = Scenario::from_toml_str(&minimal(), "d.toml").expect("the minimal scenario loads");
    let mut problems = Vec::new();
    let mut checked = 0;
    for (table, probe) in SCENARIO_TABLES.iter().filter(|(_, p)| !p.contains("wan_trace")) {
        for field in accepted(&["simulate"], probe) {
            let Some(row) = scenario.row(table, &field) else {
                continue;
            };
            let Some(default) = row.default.as_deref() else {
                continue;
            };
            // Only a default written as a value: `300 ms`, `"unlimited"`,
            // `0`; not "the file's name", "required" or "none".
            let Some(value) = default.strip_prefix('`').and_then(|d| d.split('`').next()) else {
                continue;
            };
            let written = [value.to_owned(), format!("\"{}\"", value.trim_matches('"'))];
            let loaded = written
                .iter()
                .find_map(|value| Scenario::from_toml_str(&with_field(table, &field, value), "d.toml").ok());
            match loaded {
                // The default another field's value (`working_set`: `memory`).
                None if scenario.row(table, value).is_some() => {}
                None => problems.push(format!(
                    "[{table}] {field}: the documented default `{value}` does not load"
                )),
                Some(with) if with != without => problems.push(format!(
                    "[{table}] {field}: the documented default `{value}` is not the code's \
                     (a scenario with it differs from one without the field)"
                )),
                Some(_) => checked += 1,
            }
        }
    }
    assert_none(problems);
    assert!(checked >= 15, "only {checked} defaults checked");
}

#[test]
fn every_grid_field_and_factor_is_documented() {
    let doc = format_doc();
    let grid = section(&doc, &["grid"]);
    let mut problems = missing("grid", &accepted(&["sweep"], "zz_unknown = 1\n"), &grid.names());
    let factors = accepted(&["sweep"], "[factors]\nzz_unknown = [1]\n");
    problems.extend(missing("grid [factors]", &factors, &grid.names()));
    assert_none(problems);
}

/// What docs/format.md's section `path` misses of a backend's inventory:
/// the keys evac accepts in each of `tables` (`""`: the top level) of a
/// file that starts with `head`, and the backend's own `[migration]` keys
/// (the fields of the struct `own.1` in `own.0`).
fn undocumented_inventory(
    label: &str,
    path: &[&str],
    head: &str,
    tables: &[&str],
    own: (&str, &str),
) -> Vec<String> {
    let doc = format_doc();
    let documented = section(&doc, path).names();
    let mut problems = Vec::new();
    for table in tables {
        let probe = match *table {
            "" => format!("{head}zz_unknown = 1\n"),
            table => format!("{head}{table}\nzz_unknown = 1\n"),
        };
        let what = format!("{label} inventory {table}");
        problems.extend(missing(&what, &accepted(&["run"], &probe), &documented));
    }
    let extra = struct_fields(&repo().join(own.0), own.1);
    problems.extend(missing(
        &format!("{label} inventory [migration]"),
        &extra,
        &documented,
    ));
    problems
}

#[test]
fn every_qemu_inventory_field_is_documented() {
    assert_none(undocumented_inventory(
        "QEMU",
        &["inventory", "qemu"],
        "name = \"x\"\n",
        &["", "[network]", "[[host]]", "[[vm]]"],
        ("crates/qemu/src/inventory.rs", "QemuOwn"),
    ));
}

#[test]
fn every_libvirt_inventory_field_is_documented() {
    assert_none(undocumented_inventory(
        "libvirt",
        &["inventory", "libvirt"],
        "name = \"x\"\nbackend = \"libvirt\"\n",
        &["", "[[host]]", "[[vm]]"],
        ("crates/libvirt/src/inventory.rs", "LibvirtOwn"),
    ));
}

/// Every key of a JSON value, objects in arrays included, by where it is:
/// `""` for the top, `vms[]`, `vms[].decisions[]`, ...
fn json_keys(value: &serde_json::Value, at: &str, keys: &mut BTreeMap<String, BTreeSet<String>>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, inner) in map {
                keys.entry(at.to_owned()).or_default().insert(key.clone());
                let inner_at = if at.is_empty() {
                    key.clone()
                } else {
                    format!("{at}.{key}")
                };
                json_keys(inner, &inner_at, keys);
            }
        }
        serde_json::Value::Array(items) => {
            for item in items {
                json_keys(item, &format!("{at}[]"), keys);
            }
        }
        _ => {}
    }
}

#[test]
fn every_result_field_is_documented() {
    // `deadline` on the two-site example: VMs migrated and given up,
    // decisions, hosts with and without a power-off.
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("result.json");
    let out = evac_command()
        .args(["simulate", "--policy", "deadline", "--json"])
        .arg(&json)
        .arg(repo().join("scenarios/two-site.toml"))
        .output()
        .expect("evac runs");
    assert!(
        matches!(out.status.code(), Some(0 | 3)),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let result: serde_json::Value = serde_json::from_str(&read(&json)).expect("JSON");
    let mut keys = BTreeMap::new();
    json_keys(&result, "", &mut keys);
    assert!(
        keys.contains_key("vms[]") && keys.contains_key("timeline[]"),
        "{keys:?}"
    );
    let doc = format_doc();
    let documented = section(&doc, &["result"]);
    let text: BTreeSet<String> = documented
        .tables
        .values()
        .flatten()
        .flat_map(|row| row.names.iter().cloned())
        .collect();
    let section_text = read(&repo().join("docs/format.md"));
    let section_text = &section_text[section_text.find("## Result").expect("## Result")..];
    let mut problems = Vec::new();
    for (at, fields) in &keys {
        for field in fields {
            let written = text.contains(field) || backticked(section_text).any(|name| name == field);
            if !written {
                problems.push(format!("result {at}: `{field}` is not in docs/format.md"));
            }
        }
    }
    assert_none(problems);
}

#[test]
fn the_file_evac_init_writes_shows_every_scenario_field() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("init.toml");
    let out = evac_command().arg("init").arg(&path).output().expect("evac runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // The keys of each table, written or commented out (`# setup_time = ...`).
    let mut shown: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut table = String::new();
    for line in read(&path).lines() {
        let line = line.trim_start_matches('#').trim();
        if line.starts_with('[') && !line.starts_with("[\"") {
            table = bare(line.split_whitespace().next().unwrap_or_default());
            continue;
        }
        if let Some((key, _)) = line.split_once('=') {
            let key = key.trim().trim_start_matches('{').trim();
            if !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                shown.entry(table.clone()).or_default().insert(key.to_owned());
            }
        }
    }
    let mut problems = Vec::new();
    for (table, probe) in SCENARIO_TABLES.iter().filter(|(_, p)| !p.contains("wan_trace")) {
        let fields = accepted(&["simulate"], probe);
        let tables: BTreeSet<&str> = shown.keys().map(String::as_str).collect();
        for field in fields {
            // A table is shown by its header.
            let nested = if table.is_empty() {
                field.clone()
            } else {
                format!("{table}.{field}")
            };
            let here = shown.get(*table).is_some_and(|keys| keys.contains(&field));
            if !here && !tables.contains(nested.as_str()) {
                problems.push(format!("`evac init`'s file: [{table}] `{field}` is not shown"));
            }
        }
    }
    assert!(problems.is_empty(), "docs drifted:\n{}", problems.join("\n"));
}

/// GitHub's anchor of a heading: lower case, punctuation dropped, spaces
/// to hyphens.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// The anchors of a markdown file's headings (outside code blocks).
fn anchors(text: &str) -> BTreeSet<String> {
    outside_code_blocks(text)
        .filter(|line| line.starts_with('#'))
        .map(|line| anchor(line.trim_start_matches('#')))
        .collect()
}

/// A markdown text's lines outside its fenced code blocks (the fences
/// left out too).
fn outside_code_blocks(text: &str) -> impl Iterator<Item = &str> {
    let mut fenced = false;
    text.lines().filter(move |line| {
        if line.starts_with("```") {
            fenced = !fenced;
            return false;
        }
        !fenced
    })
}

/// The targets of a markdown text's links, `[text](target)`, outside code.
fn links(text: &str) -> Vec<String> {
    let mut links = Vec::new();
    for line in outside_code_blocks(text) {
        // Inline code is not a link.
        let prose: String = line.split('`').step_by(2).collect::<Vec<_>>().join(" ");
        let mut rest = prose.as_str();
        while let Some(at) = rest.find("](") {
            rest = &rest[at + 2..];
            let end = rest.find(')').unwrap_or(rest.len());
            links.push(rest[..end].trim().to_owned());
            rest = &rest[end..];
        }
    }
    links
}

#[test]
fn every_relative_link_in_the_docs_resolves_inside_the_repo() {
    let root = repo();
    let mut files = vec![root.join("README.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "md"))
        .collect();
    docs.sort();
    files.extend(docs);
    let mut problems = Vec::new();
    let mut checked = 0;
    for file in &files {
        let text = read(file);
        let name = file.strip_prefix(&root).unwrap().display().to_string();
        for link in links(&text) {
            if link.contains("://") || link.starts_with("mailto:") {
                continue;
            }
            checked += 1;
            let (path, fragment) = link
                .split_once('#')
                .map_or((link.as_str(), None), |(p, f)| (p, Some(f)));
            let target = if path.is_empty() {
                file.clone()
            } else {
                match file.parent().unwrap().join(path).canonicalize() {
                    Ok(target) => target,
                    Err(_) => {
                        problems.push(format!("{name}: `{link}`: no such file"));
                        continue;
                    }
                }
            };
            if !target.starts_with(&root) {
                problems.push(format!("{name}: `{link}` leads outside the repo"));
                continue;
            }
            if let Some(fragment) = fragment {
                let is_markdown = target.extension().is_some_and(|ext| ext == "md");
                if is_markdown && !anchors(&read(&target)).contains(fragment) {
                    problems.push(format!("{name}: `{link}`: no heading `#{fragment}` there"));
                }
            }
        }
    }
    assert_none(problems);
    assert!(checked >= 10, "only {checked} links checked");
}

/// The repo paths a markdown text names in inline code, outside code
/// blocks: `crates/cli/tests/docs.rs`, `scenarios/two-site.toml` (relative,
/// with a directory and a file's extension; no placeholders).
fn named_paths(text: &str) -> Vec<String> {
    const EXTENSIONS: [&str; 9] = ["md", "rs", "toml", "json", "sh", "py", "yml", "png", "svg"];
    let mut paths = Vec::new();
    for line in outside_code_blocks(text) {
        for code in backticked(line) {
            let plain = code
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_-./".contains(c));
            let extension = code.rsplit_once('.').map_or("", |(_, ext)| ext);
            if plain && code.contains('/') && !code.starts_with('/') && EXTENSIONS.contains(&extension) {
                paths.push(code.to_owned());
            }
        }
    }
    paths
}

#[test]
fn every_repo_path_the_docs_name_exists() {
    let root = repo();
    let mut files = vec![root.join("README.md")];
    files.extend(
        std::fs::read_dir(root.join("docs"))
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .filter(|path| path.extension().is_some_and(|ext| ext == "md")),
    );
    let mut problems = Vec::new();
    let mut checked = 0;
    for file in &files {
        let name = file.strip_prefix(&root).unwrap().display().to_string();
        for path in named_paths(&read(file)) {
            checked += 1;
            let found = [root.join(&path), file.parent().unwrap().join(&path)]
                .iter()
                .any(|candidate| candidate.canonicalize().is_ok_and(|c| c.starts_with(&root)));
            if !found {
                problems.push(format!("{name}: `{path}` is not a file of the repo"));
            }
        }
    }
    assert_none(problems);
    assert!(checked >= 20, "only {checked} paths checked");
}

#[test]
fn the_link_checker_finds_what_it_should() {
    let text =
        "# Live metrics\n## Real fleets: `libvirt`\n[a](docs/x.md#live) `[no](link)`\n```\n[no](code)\n```\n";
    assert_eq!(links(text), ["docs/x.md#live"]);
    assert_eq!(
        anchors(text),
        BTreeSet::from(["live-metrics".to_owned(), "real-fleets-libvirt".to_owned()])
    );
}
