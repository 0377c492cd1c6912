//! The moving-deadline benchmark (docs/planner.md, "Power that changes"):
//! scenarios whose hosts' power-offs move during the evacuation, announced
//! at a time drawn from the seed, and how much priority `deadline` saves
//! against the published policies run with the scenario's settings and
//! against itself told the final power-offs from the start.
//!
//! ```text
//! cargo run --release -p evac-sim --example moving_deadlines -- [SEEDS]
//! ```
//!
//! The bases are the planner benchmark's fleets: a tuning half (the
//! embedded default, the NIC-bound fleet) and a held-out half (many small
//! VMs, few large VMs, slow destinations) that nothing was tuned on. Each
//! base gets `SEEDS` (default 6) draws of each family:
//!
//! - `earlier`: each host with a power-off is told, at 10-50 % of it, that
//!   the power goes at 30-90 % of the time that was left (a UPS that drains
//!   faster under load); a host without one is told, half the time, of a
//!   cut-off 2-10 min after the news (the facility moves the cut-off);
//! - `later`: each power-off moves later, by 30-200 %, or is gone (a
//!   generator starts) one time in three;
//! - `mixed`: each host draws `earlier` or `later`;
//! - `twice`: earlier first, then later (the battery estimate drops, then
//!   recovers as load falls).
//!
//! Prints one row per half and family, then the scenarios where `deadline`
//! saves less than the best published policy, and those where it saves less
//! than 90 % of what it saves told the final power-offs from the start.

use std::path::Path;
use std::time::Duration;

use evac_controller::{Controller, PolicyKind};
use evac_model::{Fleet, PowerChange, Site};
use evac_scenario::Scenario;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const FAMILIES: [&str; 4] = ["earlier", "later", "mixed", "twice"];
const PUBLISHED: [PolicyKind; 5] = [
    PolicyKind::Sequential,
    PolicyKind::Parallel,
    PolicyKind::Static,
    PolicyKind::AimdLocal,
    PolicyKind::AimdGlobal,
];

fn main() {
    let seeds: u64 = std::env::args()
        .nth(1)
        .map_or(6, |s| s.parse().expect("SEEDS is a count"));
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let load = |p: &str| Scenario::from_path(&root.join(p)).unwrap_or_else(|e| panic!("{e}"));
    let halves = [
        (
            "tuning",
            vec![
                ("default".to_owned(), Scenario::embedded_default()),
                ("nic-bound".to_owned(), load("examples/planner/nic-bound.toml")),
            ],
        ),
        (
            "held-out",
            vec![
                ("many-small".to_owned(), load("examples/planner/many-small.toml")),
                ("few-large".to_owned(), load("examples/planner/few-large.toml")),
                (
                    "slow-destinations".to_owned(),
                    load("examples/planner/disaster/slow-destinations.toml"),
                ),
            ],
        ),
    ];
    println!("| half | family | scenarios | `deadline` | best published | final power-offs known | behind published | worst vs known |");
    println!("|---|---|---:|---:|---:|---:|---:|---:|");
    let mut behind = Vec::new();
    let mut below = Vec::new();
    for (half, bases) in &halves {
        for family in FAMILIES {
            let mut row = Row::default();
            for (base, scenario) in bases {
                for seed in 0..seeds {
                    let mut rng = ChaCha8Rng::seed_from_u64(seed * 1000 + family_index(family));
                    let mut fleet = scenario.fleet.clone();
                    draw(&mut fleet, family, &mut rng);
                    let outcome = score(scenario, &fleet);
                    row.add(&outcome);
                    if outcome.deadline < outcome.published {
                        behind.push(format!(
                            "{half} {family} {base} seed {seed}: deadline {} < {} ({})",
                            outcome.deadline, outcome.published, outcome.best_published
                        ));
                    }
                    if (outcome.deadline as f64) < 0.9 * outcome.known as f64 {
                        below.push(format!(
                            "{half} {family} {base} seed {seed}: deadline {} against {} known from the start",
                            outcome.deadline, outcome.known
                        ));
                    }
                }
            }
            println!(
                "| {half} | {family} | {} | {} | {} | {} | {} | {:.3} |",
                row.scenarios, row.deadline, row.published, row.known, row.behind, row.worst
            );
        }
    }
    println!("\nBehind the best published policy:");
    for line in behind {
        println!("- {line}");
    }
    println!("\nBelow 90 % of the priority saved with the final power-offs known from the start:");
    for line in below {
        println!("- {line}");
    }
}

fn family_index(family: &str) -> u64 {
    FAMILIES.iter().position(|&f| f == family).unwrap() as u64
}

/// Gives every source host of `fleet` the family's announced changes.
fn draw(fleet: &mut Fleet, family: &str, rng: &mut ChaCha8Rng) {
    for host in fleet.hosts.iter_mut().filter(|h| h.site == Site::Source) {
        let kind = match family {
            "mixed" if rng.gen_bool(0.5) => "earlier",
            "mixed" => "later",
            other => other,
        };
        let original = host.power_off_at.map(|t| t.as_secs_f64());
        host.power_trace = match (kind, original) {
            ("earlier", Some(t)) => vec![earlier(t, rng)],
            ("earlier", None) if rng.gen_bool(0.5) => {
                let at = rng.gen_range(60.0..600.0);
                vec![change(at, Some(at + rng.gen_range(120.0..600.0)))]
            }
            ("later", Some(t)) => vec![later(t, rng)],
            ("twice", Some(t)) => {
                let first = earlier(t, rng);
                let at1 = first.at.as_secs_f64();
                let new1 = first.power_off_at.unwrap().as_secs_f64();
                // The recovery comes before the new cut-off, and moves it
                // back to between it and the original.
                let at2 = at1 + rng.gen_range(0.2..0.8) * (new1 - at1);
                let new2 = new1 + rng.gen_range(0.3..1.0) * (t - new1).max(60.0);
                vec![first, change(at2, Some(new2))]
            }
            _ => Vec::new(),
        };
    }
}

fn change(at: f64, power_off_at: Option<f64>) -> PowerChange {
    PowerChange {
        at: Duration::from_secs_f64(at),
        power_off_at: power_off_at.map(Duration::from_secs_f64),
    }
}

fn earlier(t: f64, rng: &mut ChaCha8Rng) -> PowerChange {
    let at = rng.gen_range(0.1..0.5) * t;
    change(at, Some(at + rng.gen_range(0.3..0.9) * (t - at)))
}

fn later(t: f64, rng: &mut ChaCha8Rng) -> PowerChange {
    let at = rng.gen_range(0.1..0.5) * t;
    if rng.gen_bool(1.0 / 3.0) {
        change(at, None)
    } else {
        change(at, Some(t * rng.gen_range(1.3..3.0)))
    }
}

/// The fleet with its final power-offs known from the start: the last
/// change's (a power-off announced in the past is the announcement's time).
fn known_from_start(fleet: &Fleet) -> Fleet {
    let mut fleet = fleet.clone();
    for host in &mut fleet.hosts {
        if let Some(last) = host.power_trace.last() {
            host.power_off_at = last.power_off_at.map(|t| t.max(last.at));
        }
        host.power_trace.clear();
    }
    fleet
}

#[derive(Debug)]
struct Outcome {
    deadline: u64,
    published: u64,
    best_published: &'static str,
    known: u64,
}

fn score(scenario: &Scenario, fleet: &Fleet) -> Outcome {
    let run = |fleet: &Fleet, policy: PolicyKind| {
        let mut config = scenario.controller.clone();
        config.policy = policy;
        let mut controller = evac_sim::evacuation(fleet, &scenario.network, scenario.migration, &config);
        let result = evac_sim::simulate_until(
            fleet,
            &scenario.network,
            config.period,
            config.horizon,
            &mut controller as &mut dyn Controller,
        );
        result.priority_saved
    };
    let (best_published, published) = PUBLISHED
        .iter()
        .map(|&p| (p.as_str(), run(fleet, p)))
        .max_by_key(|&(_, saved)| saved)
        .expect("policies");
    Outcome {
        deadline: run(fleet, PolicyKind::Deadline),
        published,
        best_published,
        known: run(&known_from_start(fleet), PolicyKind::Deadline),
    }
}

#[derive(Default)]
struct Row {
    scenarios: usize,
    deadline: u64,
    published: u64,
    known: u64,
    behind: usize,
    worst: f64,
}

impl Row {
    fn add(&mut self, outcome: &Outcome) {
        if self.scenarios == 0 {
            self.worst = f64::INFINITY;
        }
        self.scenarios += 1;
        self.deadline += outcome.deadline;
        self.published += outcome.published;
        self.known += outcome.known;
        self.behind += usize::from(outcome.deadline < outcome.published);
        if outcome.known > 0 {
            self.worst = self.worst.min(outcome.deadline as f64 / outcome.known as f64);
        }
    }
}
