//! The reference-case tables, run against the in-process store on a manual clock.

mod support;

use std::time::Duration;

use support::cases::{parse, Case};
use tower_ratelimit::clock::ManualClock;
use tower_ratelimit::store::{MemoryStore, Store};
use tower_ratelimit::{Algorithm, Policy};

fn run(case: &Case, algorithm: Algorithm) -> Result<(), String> {
    let clock = ManualClock::new();
    let store = MemoryStore::with_clock(clock.clone());
    let policy = Policy::new("default", case.quota, algorithm).map_err(|e| e.to_string())?;
    let mut elapsed = Duration::ZERO;
    for (i, step) in case.steps.iter().enumerate() {
        clock.advance(step.at - elapsed);
        elapsed = step.at;
        let decision = store
            .decide(&"key", step.cost, &policy)
            .into_inner()
            .map_err(|e| e.to_string())?;
        step.expected
            .check(&decision)
            .map_err(|e| format!("step {} (at {:?}, cost {}): {e}", i + 1, step.at, step.cost))?;
    }
    Ok(())
}

#[test]
fn token_bucket_table() {
    let cases = parse(include_str!("cases/token_bucket.txt"));
    assert!(cases.len() >= 25, "{} cases", cases.len());
    let failures: Vec<String> = cases
        .iter()
        .filter_map(|case| {
            run(case, Algorithm::TokenBucket)
                .err()
                .map(|e| format!("{}: {e}", case.name))
        })
        .collect();
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}
