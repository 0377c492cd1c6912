//! The bounded fuzz run: mutated scenarios, grids and inventories for
//! `EVAC_FUZZ_SECS` seconds (default 10; `.ci/run` gives 90), from the
//! seed `EVAC_FUZZ_SEED` (default: the clock, printed). Fails on the first
//! input that panics, hangs or runs out of the memory limit, saving it.

use std::time::{Duration, Instant};

use evac_fuzz::{corpus, corpus_dir, run_case, Counting, Failure, Mutator, Target, Verdict};

#[global_allocator]
static ALLOC: Counting = Counting;

/// A case that runs longer than this is a hang (the slowest legitimate
/// case, a million-VM group loaded in a debug build, takes seconds).
const CASE_TIMEOUT: Duration = Duration::from_secs(60);
/// The most memory the run may hold at once.
const MEMORY_LIMIT: usize = 3 << 30;

fn env_u64(key: &str) -> Option<u64> {
    std::env::var(key).ok().and_then(|v| v.parse().ok())
}

#[test]
fn every_corpus_file_loads_or_is_refused_without_panic() {
    Counting::set_limit(MEMORY_LIMIT);
    let dir = corpus_dir();
    let mut seeds = corpus(&dir).unwrap();
    assert!(seeds.len() >= 20, "the corpus is in {}", dir.display());
    // Inputs the fuzzer found, too slow to mutate (a million-VM base).
    seeds.extend(corpus(&dir.join("regressions")).unwrap());
    // The repo's own files load as they are: the corpus is valid at its root.
    for seed in &seeds {
        let target = Target::of(&seed.name);
        let verdict = run_case(target, seed.text.clone(), dir.clone(), CASE_TIMEOUT)
            .unwrap_or_else(|failure| panic!("{}: {failure:?}", seed.name));
        let hostile = seed.name.contains("hostile");
        assert_eq!(verdict == Verdict::Refused, hostile, "{}: {verdict:?}", seed.name);
    }
}

#[test]
fn mutated_inputs_never_panic_hang_or_exhaust_memory() {
    Counting::set_limit(MEMORY_LIMIT);
    let budget = Duration::from_secs(env_u64("EVAC_FUZZ_SECS").unwrap_or(10));
    let seed = env_u64("EVAC_FUZZ_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
    });
    eprintln!("fuzzing for {} s from EVAC_FUZZ_SEED={seed}", budget.as_secs());
    let dir = corpus_dir();
    let seeds = corpus(&dir).unwrap();
    let mut mutator = Mutator::new(seed);
    let started = Instant::now();
    let (mut cases, mut used, mut refused) = (0u64, 0u64, 0u64);
    while started.elapsed() < budget {
        let (index, text) = mutator.mutate(&seeds);
        // Mostly the seed's own loader; one case in four another's.
        let own = Target::of(&seeds[index].name);
        let target = if (cases ^ index as u64) & 3 == 0 {
            Target::ALL[cases as usize % Target::ALL.len()]
        } else {
            own
        };
        match run_case(target, text.clone(), dir.clone(), CASE_TIMEOUT) {
            Ok(Verdict::Refused) => refused += 1,
            Ok(_) => used += 1,
            Err(failure) => {
                let saved = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
                    .join(format!("fuzz-failure-{seed}-{cases}.toml"));
                let _ = std::fs::write(&saved, &text);
                let what = match failure {
                    Failure::Panic(message) => format!("panicked: {message}"),
                    Failure::Hang(after) => format!("did not end within {} s", after.as_secs()),
                };
                panic!(
                    "case {cases} (EVAC_FUZZ_SEED={seed}, {target:?} of a mutated {}) {what}; input saved to {}",
                    seeds[index].name,
                    saved.display()
                );
            }
        }
        cases += 1;
    }
    eprintln!(
        "{cases} cases in {:.1} s: {used} loaded, {refused} refused; peak memory {} MiB",
        started.elapsed().as_secs_f64(),
        Counting::peak() >> 20
    );
    assert!(cases > 0);
}
