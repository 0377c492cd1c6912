//! Reading the `[[vm]]` tables apart is an optimisation: whatever the
//! text, it must give what reading the whole document gives, the same
//! scenario or the same refusal, word for word.

use std::path::Path;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::*;

/// Both ways, when the text can be split at all; `None` when it cannot.
fn both(text: &str) -> Option<(String, String)> {
    let split = split::split(text)?;
    let show = |result: Result<Scenario, ScenarioError>| match result {
        Ok(scenario) => format!("{scenario:?}"),
        Err(error) => format!("refused: {error}"),
    };
    Some((
        show(load_with(text, "x.toml", Some(split), Timestamp::now())),
        show(load_with(text, "x.toml", None, Timestamp::now())),
    ))
}

/// Every scenario of the repo that has `[[vm]]` tables.
fn seeds() -> Vec<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut texts = Vec::new();
    for dir in ["scenarios", "crates/fuzz/corpus", "crates/lab/labs", "examples"] {
        let mut paths: Vec<_> = std::fs::read_dir(root.join(dir))
            .unwrap_or_else(|e| panic!("{dir}: {e}"))
            .map(|entry| entry.unwrap().path())
            .filter(|path| path.extension().is_some_and(|ext| ext == "toml"))
            .collect();
        paths.sort();
        for path in paths {
            let text = std::fs::read_to_string(&path).unwrap();
            if text.contains("[[vm]]") {
                texts.push(text);
            }
        }
    }
    assert!(
        texts.len() >= 8,
        "only {} scenarios with [[vm]] found",
        texts.len()
    );
    texts
}

/// Lines that make TOML (and the splitter) work: headers, strings,
/// brackets, keys named `vm`, bad values.
const PIECES: &[&str] = &[
    "[[vm]]",
    "[[vm]]\nname = \"z\"\nhost = \"src-1\"\nmemory = \"1 GiB\"",
    "[[ vm ]] # a comment",
    "[vm]",
    "[vm.disk]",
    "vm = 1",
    "vm.x = 2",
    "\"vm\" = 3",
    "[[vm_group]]",
    "[[host]]",
    "[network]",
    "[controller]",
    "[migration]",
    "\"\"\"",
    "'''",
    "x = \"\"\"",
    "x = [",
    "]",
    "[1, 2],",
    "name = \"dup\"",
    "name = \"web-1\"",
    "memory = \"4 GB/s\"",
    "memory = 4",
    "colour = \"blue\"",
    "host = \"nowhere\"",
    "priority = -1",
    "seed = 1",
    "name = = 1",
    "# [[vm]]",
    "wan_bandwidth = \"1 Gbps\"",
    "s = \"\\\"[[vm]]\"",
    "",
];

fn mutate(text: &str, rng: &mut ChaCha8Rng) -> String {
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    for _ in 0..rng.gen_range(1..=3) {
        let at = rng.gen_range(0..=lines.len());
        match rng.gen_range(0..5) {
            0 | 1 => lines.insert(at, PIECES[rng.gen_range(0..PIECES.len())].to_owned()),
            2 if at < lines.len() => {
                lines.remove(at);
            }
            3 if at < lines.len() => {
                let line = lines[at].clone();
                lines.insert(rng.gen_range(0..=lines.len()), line);
            }
            _ if at < lines.len() => {
                // A character put into a line.
                let line = &mut lines[at];
                let cut = rng.gen_range(0..=line.len());
                if line.is_char_boundary(cut) {
                    let c = ['"', '[', ']', '=', '#', '\'', 'x', '0'][rng.gen_range(0..8)];
                    line.insert(cut, c);
                }
            }
            _ => {}
        }
    }
    lines.join("\n") + "\n"
}

#[test]
fn a_sub_table_before_its_table_is_read() {
    // Refused as "not valid TOML" before the locator read toml_edit's
    // spans itself.
    let text = "[controller.aimd]\nmax_window = 3\n[controller]\npolicy = \"aimd-global\"\n\
                [network]\nwan_bandwidth = \"1 Gbps\"\n\
                [[host]]\nname = \"s\"\nsite = \"source\"\nnic = \"1 Gbps\"\n\
                [[host]]\nname = \"d\"\nsite = \"destination\"\nnic = \"1 Gbps\"\n";
    let scenario = load(text, "x.toml").expect("a valid scenario");
    assert_eq!(scenario.controller.aimd.max_window, 3);
    let error = load(&text.replace("max_window = 3", "max_window = 0"), "x.toml").unwrap_err();
    assert!(
        error
            .to_string()
            .starts_with("x.toml:2: field `aimd.max_window` of [controller]: "),
        "{error}"
    );
}

/// Mutations per scenario; `EVAC_SPLIT_MUTATIONS` for a longer run.
fn mutations() -> usize {
    std::env::var("EVAC_SPLIT_MUTATIONS").map_or(250, |n| n.parse().expect("a count"))
}

#[test]
fn reading_apart_gives_what_reading_whole_gives() {
    let mutations = mutations();
    let mut rng = ChaCha8Rng::seed_from_u64(18);
    let (mut compared, mut refused) = (0, 0);
    for seed in seeds() {
        let (apart, whole) = both(&seed).expect("a scenario with [[vm]] tables splits");
        assert_eq!(apart, whole);
        for _ in 0..mutations {
            let text = mutate(&seed, &mut rng);
            if let Some((apart, whole)) = both(&text) {
                assert_eq!(apart, whole, "on:\n{text}");
                compared += 1;
                refused += usize::from(whole.starts_with("refused"));
            }
        }
    }
    // Both kinds of outcome were compared, many times.
    eprintln!("{compared} compared, {refused} refused");
    assert!(
        compared > 2000 && refused > 1000 && compared - refused > 300,
        "{compared} compared, {refused} refused"
    );
}
