//! One scenario for several policies on one key, run against every store: a request
//! passes only if every policy lets it, and a refusal spends nothing under the others.

use tower_ratelimit::{Algorithm, Decisions, Outcome, Policies, Policy, Quota};

/// `"burst"`: token bucket, 3 at once, one more per minute; `"daily"`: fixed window, 2 per
/// day; `"rolling"`: sliding window, 5 per day. Nothing refills within a test.
pub fn policies() -> Policies {
    let policy = |name, quota, algorithm| Policy::new(name, quota, algorithm).unwrap();
    Policies::new([
        policy(
            "burst",
            Quota::per_hour(60).burst(3),
            Algorithm::TokenBucket,
        ),
        policy("daily", Quota::per_day(2), Algorithm::FixedWindow),
        policy("rolling", Quota::per_day(5), Algorithm::SlidingWindow),
    ])
    .unwrap()
}

/// A request's cost, the policies it must violate, the summary outcome (`allow`, `deny`
/// or `too-costly`) and what each policy has left afterwards.
pub const STEPS: [(u64, &[&str], &str, [u64; 3]); 6] = [
    (1, &[], "allow", [2, 1, 4]),
    (1, &[], "allow", [1, 0, 3]),
    // "daily" refuses; "burst" and "rolling" are not charged.
    (1, &["daily"], "deny", [1, 0, 3]),
    (2, &["burst", "daily"], "deny", [1, 0, 3]),
    // More than two bursts: refused as never passing, and "rolling" merely denies.
    (4, &["burst", "daily", "rolling"], "too-costly", [1, 0, 3]),
    (0, &[], "allow", [1, 0, 3]),
];

/// `Ok` if `decisions` are what step `step` of [`STEPS`] expects.
pub fn check(step: usize, policies: &Policies, decisions: &Decisions) -> Result<(), String> {
    let (_, violated, summary, remaining) = STEPS[step];
    let actual_violated: Vec<&str> = decisions
        .violated()
        .map(|index| policies[index].name())
        .collect();
    let actual_summary = match decisions.summary().outcome {
        Outcome::Allowed => "allow",
        Outcome::Denied { .. } => "deny",
        Outcome::CostExceedsBurst => "too-costly",
        Outcome::Delayed { .. } => "delay",
        _ => "unknown",
    };
    let actual_remaining: Vec<u64> = decisions.iter().map(|d| d.remaining).collect();
    if (&*actual_violated, actual_summary, &*actual_remaining)
        == (violated, summary, &remaining[..])
    {
        Ok(())
    } else {
        Err(format!(
            "step {}: expected {violated:?} {summary} {remaining:?}, \
             got {actual_violated:?} {actual_summary} {actual_remaining:?}",
            step + 1
        ))
    }
}
