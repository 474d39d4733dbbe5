//! Parser for the reference-case tables in `tests/cases/`, shared by every store's tests.

use std::time::Duration;

use tower_ratelimit::store::Change;
use tower_ratelimit::{Decision, Outcome, Quota};

/// One scenario: a quota and the requests made against one fresh key.
#[derive(Debug)]
pub struct Case {
    pub name: String,
    pub quota: Quota,
    /// The shaper's queue bound (`max-delay <duration>`), for shaper tables.
    pub max_delay: Option<Duration>,
    pub steps: Vec<Step>,
}

/// A change at `at` (from the start of the case: a request of some cost, or a reset,
/// refund, penalty or block) and the decision it must get.
#[derive(Debug)]
pub struct Step {
    pub at: Duration,
    pub change: Change,
    pub expected: Expected,
}

impl Step {
    /// Whether the step leaves state behind when it gets `decision`.
    pub fn writes(&self, decision: &Decision) -> bool {
        match self.change {
            Change::Charge(cost) => cost > 0 && decision.is_allowed(),
            Change::Reset => false,
            _ => true,
        }
    }
}

impl Case {
    /// The same case with every duration (period, step times, expected times) multiplied
    /// by `factor`. GCRA is scale-free: counts are unchanged and times scale exactly.
    pub fn scaled(&self, factor: u32) -> Case {
        let quota = match self.quota.period() {
            Some(period) => {
                Quota::new(self.quota.limit(), period * factor).burst(self.quota.burst_size())
            }
            None => self.quota,
        };
        let scale = |time: Option<Duration>| time.map(|t| t * factor);
        let steps = self
            .steps
            .iter()
            .map(|step| Step {
                at: step.at * factor,
                change: match step.change {
                    Change::Block(duration) => Change::Block(duration * factor),
                    other => other,
                },
                expected: match step.expected {
                    Expected::Allow { remaining, reset } => Expected::Allow {
                        remaining,
                        reset: scale(reset),
                    },
                    Expected::Deny { remaining, retry } => Expected::Deny {
                        remaining,
                        retry: scale(retry),
                    },
                    Expected::Delay { remaining, wait } => Expected::Delay {
                        remaining,
                        wait: wait * factor,
                    },
                    Expected::TooCostly { remaining } => Expected::TooCostly { remaining },
                },
            })
            .collect();
        Case {
            name: self.name.clone(),
            quota,
            max_delay: self.max_delay.map(|delay| delay * factor),
            steps,
        }
    }
}

#[derive(Debug, PartialEq)]
pub enum Expected {
    Allow {
        remaining: u64,
        reset: Option<Duration>,
    },
    Delay {
        remaining: u64,
        wait: Duration,
    },
    Deny {
        remaining: u64,
        retry: Option<Duration>,
    },
    TooCostly {
        remaining: u64,
    },
}

impl Expected {
    /// `Ok` if `decision` is the expected one.
    pub fn check(&self, decision: &Decision) -> Result<(), String> {
        let actual = match decision.outcome {
            Outcome::Allowed => Expected::Allow {
                remaining: decision.remaining,
                reset: decision.reset,
            },
            Outcome::Delayed { wait } => Expected::Delay {
                remaining: decision.remaining,
                wait,
            },
            Outcome::Denied { retry_after } => Expected::Deny {
                remaining: decision.remaining,
                retry: retry_after,
            },
            Outcome::CostExceedsBurst => Expected::TooCostly {
                remaining: decision.remaining,
            },
            other => return Err(format!("an outcome the tables do not know: {other:?}")),
        };
        if &actual == self {
            Ok(())
        } else {
            Err(format!("expected {self:?}, got {actual:?}"))
        }
    }

    /// `Ok` if `decision` is the expected one made up to `late` after the planned time:
    /// the outcome and remaining quota exactly, and each time no more than `late` short.
    pub fn check_late(&self, decision: &Decision, late: Duration) -> Result<(), String> {
        let close = |expected: Option<Duration>, actual: Option<Duration>| match (expected, actual)
        {
            (Some(expected), Some(actual)) => actual <= expected && actual + late >= expected,
            (expected, actual) => expected == actual,
        };
        let matches = match (self, decision.outcome) {
            (Expected::Allow { remaining, reset }, Outcome::Allowed) => {
                *remaining == decision.remaining && close(*reset, decision.reset)
            }
            (Expected::Delay { remaining, wait }, Outcome::Delayed { wait: actual }) => {
                *remaining == decision.remaining && close(Some(*wait), Some(actual))
            }
            (Expected::Deny { remaining, retry }, Outcome::Denied { retry_after }) => {
                *remaining == decision.remaining && close(*retry, retry_after)
            }
            (Expected::TooCostly { remaining }, Outcome::CostExceedsBurst) => {
                *remaining == decision.remaining
            }
            _ => false,
        };
        if matches {
            Ok(())
        } else {
            Err(format!(
                "expected {self:?} (made up to {late:?} late), got {decision:?}"
            ))
        }
    }
}

/// Parses a table (see the header of `tests/cases/token_bucket.txt`).
pub fn parse(table: &str) -> Vec<Case> {
    let mut cases: Vec<Case> = Vec::new();
    for (number, line) in table.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let fail = |what: &str| -> ! { panic!("line {}: {what}: {line}", number + 1) };
        if let Some(name) = line.strip_prefix("case ") {
            cases.push(Case {
                name: name.to_owned(),
                quota: Quota::fixed(1),
                max_delay: None,
                steps: Vec::new(),
            });
            continue;
        }
        let case = cases.last_mut().unwrap_or_else(|| fail("no case yet"));
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["max-delay", delay] => case.max_delay = duration(delay),
            ["quota", "fixed", total] => case.quota = Quota::fixed(number_of(total)),
            ["quota", rate, rest @ ..] => {
                let (limit, period) = rate.split_once('/').unwrap_or_else(|| fail("rate"));
                let mut quota = Quota::new(number_of(limit), duration(period).unwrap());
                if let ["burst", burst] = rest {
                    quota = quota.burst(number_of(burst));
                }
                case.quota = quota;
            }
            ["at", at, rest @ ..] => case.steps.push(Step {
                at: duration(at).unwrap_or_else(|| fail("time")),
                change: match arrow(rest).0 {
                    ["cost", cost] => Change::Charge(number_of(cost)),
                    ["reset"] => Change::Reset,
                    ["refund", units] => Change::Refund(number_of(units)),
                    ["penalize", units] => Change::Penalize(number_of(units)),
                    ["block", length] => {
                        Change::Block(duration(length).unwrap_or_else(|| fail("block")))
                    }
                    _ => fail("change"),
                },
                expected: match arrow(rest).1 {
                    ["allow", remaining, "reset", reset] => Expected::Allow {
                        remaining: number_of(remaining),
                        reset: duration(reset),
                    },
                    ["delay", remaining, "wait", wait] => Expected::Delay {
                        remaining: number_of(remaining),
                        wait: duration(wait).unwrap_or_else(|| fail("wait")),
                    },
                    ["deny", remaining, "retry", retry] => Expected::Deny {
                        remaining: number_of(remaining),
                        retry: duration(retry),
                    },
                    ["too-costly", remaining] => Expected::TooCostly {
                        remaining: number_of(remaining),
                    },
                    _ => fail("outcome"),
                },
            }),
            _ => fail("unknown line"),
        }
    }
    cases
}

/// The words before and after `=>`.
fn arrow<'a>(words: &'a [&'a str]) -> (&'a [&'a str], &'a [&'a str]) {
    let at = words.iter().position(|w| *w == "=>").unwrap_or(words.len());
    (&words[..at], words.get(at + 1..).unwrap_or(&[]))
}

fn number_of(word: &str) -> u64 {
    word.parse()
        .unwrap_or_else(|_| panic!("not a number: {word}"))
}

/// `0`, `250us`, `3ms`, `2s`, `1m`, `1h`; `never` is `None`.
fn duration(word: &str) -> Option<Duration> {
    if word == "never" {
        return None;
    }
    let split = word
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(word.len());
    let (value, unit) = word.split_at(split);
    let value = number_of(value);
    Some(match unit {
        "" if value == 0 => Duration::ZERO,
        "us" => Duration::from_micros(value),
        "ms" => Duration::from_millis(value),
        "s" => Duration::from_secs(value),
        "m" => Duration::from_secs(value * 60),
        "h" => Duration::from_secs(value * 3600),
        _ => panic!("bad duration: {word}"),
    })
}
