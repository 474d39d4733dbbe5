//! The reference-case tables, run against the in-process store on a manual clock.

mod support;

use std::time::Duration;

use support::cases::{parse, Case};
use support::multi;
use tower_ratelimit::clock::ManualClock;
use tower_ratelimit::store::{Change, MemoryStore, Store};
use tower_ratelimit::{Algorithm, Policies, Policy};

fn run(case: &Case, algorithm: Algorithm) -> Result<(), String> {
    let clock = ManualClock::new();
    let store = MemoryStore::with_clock(clock.clone());
    let policy: Policies = Policy::new("default", case.quota, algorithm)
        .map_err(|e| e.to_string())?
        .into();
    let mut elapsed = Duration::ZERO;
    for (i, step) in case.steps.iter().enumerate() {
        clock.advance(step.at - elapsed);
        elapsed = step.at;
        let decision = store
            .apply(&"key", step.change, &policy)
            .into_inner()
            .map_err(|e| e.to_string())?;
        step.expected
            .check(&decision[0])
            .map_err(|e| format!("step {} (at {:?}, {:?}): {e}", i + 1, step.at, step.change))?;
    }
    Ok(())
}

/// Runs every case of `table` with the algorithm `algorithm_for` picks for it.
fn check_table(table: &str, algorithm_for: impl Fn(&Case) -> Algorithm) {
    let cases = parse(table);
    let failures: Vec<String> = cases
        .iter()
        .filter_map(|case| {
            run(case, algorithm_for(case))
                .err()
                .map(|e| format!("{}: {e}", case.name))
        })
        .collect();
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

const TOKEN_BUCKET: &str = include_str!("cases/token_bucket.txt");

#[test]
fn token_bucket_table() {
    assert!(parse(TOKEN_BUCKET).len() >= 25);
    check_table(TOKEN_BUCKET, |_| Algorithm::TokenBucket);
}

#[test]
fn leaky_bucket_tables() {
    // The meter admits exactly what the token bucket admits.
    check_table(TOKEN_BUCKET, |_| Algorithm::LeakyBucket);
    check_table(include_str!("cases/leaky_bucket.txt"), |_| {
        Algorithm::LeakyBucket
    });
}

#[test]
fn shaper_table() {
    check_table(include_str!("cases/shaper.txt"), |case| {
        Algorithm::LeakyBucketShaper {
            max_delay: case.max_delay.expect("shaper cases set max-delay"),
        }
    });
}

#[test]
fn fixed_window_table() {
    check_table(include_str!("cases/fixed_window.txt"), |_| {
        Algorithm::FixedWindow
    });
}

#[test]
fn sliding_window_table() {
    check_table(include_str!("cases/sliding_window.txt"), |_| {
        Algorithm::SlidingWindow
    });
}

#[test]
fn several_policies_charge_all_or_nothing() {
    let store = MemoryStore::with_clock(ManualClock::new());
    let policies = multi::policies();
    for (step, (cost, ..)) in multi::STEPS.iter().enumerate() {
        let decisions = store
            .apply(&"key", Change::Charge(*cost), &policies)
            .into_inner()
            .unwrap();
        multi::check(step, &policies, &decisions).unwrap();
    }
}
