//! The one script every change runs, and how its arguments and replies are written.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::LazyLock;
use std::time::Duration;

use redis::aio::ConnectionLike;
use redis::{ErrorKind, RedisError, RedisResult, ServerErrorKind};

use super::batch::Entry;
use super::Shared;
use crate::store::{Change, StoreError, StoreErrorKind};
use crate::{Algorithm, Decision, Outcome, Policy, Quota};

/// The one script every decision runs, for `EVAL`: the shared prelude (Redis time, exact
/// integer division), one function per algorithm, `decide.lua`, which checks every policy
/// of a key and charges all of them or none, and a call of `decide`.
pub(super) const SCRIPT: &str = concat!(
    include_str!("scripts/prelude.lua"),
    include_str!("scripts/gcra.lua"),
    include_str!("scripts/token_bucket.lua"),
    include_str!("scripts/shaper.lua"),
    include_str!("scripts/fixed_window.lua"),
    include_str!("scripts/sliding_window.lua"),
    include_str!("scripts/decide.lua"),
    include_str!("scripts/call.lua"),
);

/// The script as Redis runs it, made once.
pub(super) struct Code {
    /// The SHA-1 of [`SCRIPT`], as `EVALSHA` names it.
    pub(super) sha: String,
    /// The function library's name and its one function's (`decide`): the SHA-1's first
    /// 16 digits, so that app servers running different versions never share one.
    pub(super) name: String,
    /// The same code as a function library (Redis 7 and later), defined once when it is
    /// loaded, where `EVAL` defines every function again on each call.
    library: String,
}

pub(super) static CODE: LazyLock<Code> = LazyLock::new(|| {
    let sha = redis::Script::new(SCRIPT).get_hash().to_owned();
    let name = format!("tower_ratelimit_{}", &sha[..16]);
    let body = SCRIPT
        .strip_suffix(include_str!("scripts/call.lua"))
        .expect("the script ends with its call");
    let library = format!("#!lua name={name}\n{body}\nredis.register_function('{name}', decide)\n");
    Code { sha, name, library }
});

/// Loads the script on the server behind `connection`: as a function library if Redis
/// has functions, else as a script. Returns whether it has functions.
pub(super) async fn load(connection: &mut impl ConnectionLike) -> RedisResult<bool> {
    match load_library(connection).await {
        Ok(()) => Ok(true),
        Err(e) if refused(&e) => {
            let _: String = redis::cmd("SCRIPT")
                .arg("LOAD")
                .arg(SCRIPT)
                .query_async(connection)
                .await?;
            Ok(false)
        }
        Err(e) => Err(e),
    }
}

async fn load_library(connection: &mut impl ConnectionLike) -> RedisResult<()> {
    redis::cmd("FUNCTION")
        .arg("LOAD")
        .arg("REPLACE")
        .arg(&CODE.library)
        .query_async::<redis::Value>(connection)
        .await
        .map(drop)
}

/// Redis refused a command it does not have (before 7.0) or lets no one run here: it ran
/// nothing.
fn refused(error: &RedisError) -> bool {
    match error.code() {
        Some("NOPERM") => true,
        Some("ERR") => error
            .detail()
            .is_some_and(|detail| detail.starts_with("unknown command")),
        _ => false,
    }
}

/// Redis does not know the function (a restart without persistence, `FUNCTION FLUSH`, a
/// new node): it ran nothing.
fn function_missing(error: &RedisError) -> bool {
    error.code() == Some("ERR")
        && error
            .detail()
            .is_some_and(|detail| detail.starts_with("Function not found"))
}

/// The script's name for each kind of state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// GCRA: the token bucket and the leaky-bucket meter.
    TokenBucket = 0,
    Shaper = 1,
    FixedWindow = 2,
    SlidingWindow = 3,
}

/// The longest span Redis can hold exactly (in microseconds): 100 years, as for
/// [`Quota`](crate::Quota), so that Redis time plus a bucket's depth or a period stays below 2^53.
const MAX_SPAN_MICROS: u64 = 100 * 365 * 86_400 * 1_000_000;

/// Lua's doubles hold every integer up to this exactly.
const MAX_EXACT: u64 = 1 << 53;

/// A policy as the script takes it.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) struct Limits {
    kind: Kind,
    /// In whole microseconds: the emission interval (rounded up) for the buckets, the
    /// period (rounded up) for the windows; 0 if the quota never refills.
    time: u64,
    burst: u64,
    /// The shaper's `max_delay` in whole microseconds (rounded down); 0 otherwise.
    max_delay: u64,
}

impl Limits {
    pub(super) fn of(policy: &Policy) -> Result<Self, StoreError> {
        let quota = policy.quota();
        let up = |ns: u128| u64::try_from(ns.div_ceil(1000)).unwrap_or(u64::MAX);
        let interval = quota.interval_nanos().map_or(0, |ns| up(ns.get().into()));
        let period = quota.period().map_or(0, |period| up(period.as_nanos()));
        let burst = quota.burst_size();
        let (kind, time, max_delay) = match policy.algorithm() {
            Algorithm::TokenBucket | Algorithm::LeakyBucket => (Kind::TokenBucket, interval, 0),
            Algorithm::LeakyBucketShaper { max_delay } => (
                Kind::Shaper,
                interval,
                u64::try_from(max_delay.as_micros()).unwrap_or(u64::MAX),
            ),
            Algorithm::FixedWindow => (Kind::FixedWindow, period, 0),
            Algorithm::SlidingWindow => (Kind::SlidingWindow, period, 0),
        };
        let exact = match kind {
            Kind::TokenBucket | Kind::Shaper => time
                .checked_mul(burst)
                .and_then(|depth| depth.checked_add(max_delay))
                .is_some_and(|span| span <= MAX_SPAN_MICROS),
            Kind::FixedWindow => time <= MAX_SPAN_MICROS && burst <= MAX_EXACT / 2,
            Kind::SlidingWindow => {
                time <= MAX_SPAN_MICROS
                    && (burst + 1)
                        .checked_mul(time)
                        .is_some_and(|product| product <= MAX_EXACT)
            }
        };
        if !exact {
            return Err(StoreError::new(
                StoreErrorKind::Misconfigured,
                format!(
                    "the quota of policy \"{}\" is too large to compute exactly in Redis \
                     for {:?}",
                    policy.name(),
                    policy.algorithm()
                ),
            ));
        }
        Ok(Self {
            kind,
            time,
            burst,
            max_delay,
        })
    }

    /// The quota as GCRA in local nanoseconds, for the deny cache: only the token bucket
    /// and the meter, and only when the quota refills. (A shaper's denial is about the
    /// queue, and windows do not keep a TAT.)
    pub(super) fn gcra(self) -> Option<Quota> {
        let interval = Duration::from_micros(self.time);
        (self.kind == Kind::TokenBucket && self.time > 0)
            .then_some(Quota::new(1, interval).burst(self.burst))
    }

    /// The script's reply for this policy as a [`Decision`].
    pub(super) fn decision(self, reply: &[u64]) -> Result<Decision, StoreError> {
        let &[outcome, remaining, reset, time] = reply else {
            return Err(unexpected("a reply of four integers"));
        };
        // A blocked key (4) waits for its block, whether the quota refills or not.
        let refills = self.time > 0 || outcome == 4;
        let outcome = match outcome {
            0 => Outcome::Allowed,
            1 => Outcome::Denied {
                retry_after: refills.then_some(Duration::from_micros(time)),
            },
            2 => Outcome::CostExceedsBurst,
            3 => Outcome::Delayed {
                wait: Duration::from_micros(time),
            },
            4 => Outcome::Denied {
                retry_after: Some(Duration::from_micros(time)),
            },
            _ => return Err(unexpected("an outcome from 0 to 4")),
        };
        Ok(Decision {
            outcome,
            limit: self.burst,
            remaining,
            reset: refills.then_some(Duration::from_micros(reset)),
        })
    }
}

impl Shared {
    /// One script call for a batch of changes: `FCALL`, or, if Redis does not know the
    /// library, `EVAL` once after loading it again; on a Redis without functions,
    /// `EVALSHA`, or `EVAL` once if Redis does not know the script.
    pub(super) async fn call(&self, batch: &[Entry]) -> RedisResult<Vec<u64>> {
        let mut connection = self.connection.clone();
        let keys = batch.iter().flat_map(|entry| &entry.keys);
        let policies: usize = batch.iter().map(|entry| entry.limits.len()).sum();
        // The policy sets the batch uses, each once, then each change by its set.
        let mut sets: Vec<&[Limits]> = Vec::new();
        let mut changes = Vec::with_capacity(2 * batch.len());
        for entry in batch {
            let set = match sets.iter().position(|set| *set == &entry.limits[..]) {
                Some(set) => set,
                None => {
                    sets.push(&entry.limits);
                    sets.len() - 1
                }
            };
            let [change, amount] = entry.change;
            changes.extend([5 * set as u64 + change, amount]);
        }
        let mut args = Vec::with_capacity(1 + sets.len() * 5 + changes.len());
        args.push(sets.len() as u64);
        for set in &sets {
            args.push(set.len() as u64);
            for limits in *set {
                args.extend([
                    limits.kind as u64,
                    limits.time,
                    limits.burst,
                    limits.max_delay,
                ]);
            }
        }
        args.extend(changes);
        let call = |command: &str, script: &str| {
            let mut call = redis::cmd(command);
            call.arg(script).arg(policies);
            for key in keys.clone() {
                call.arg(key);
            }
            call.arg(&self.channel).arg(&args);
            call
        };
        // Every refusal below comes before Redis ran anything, so the call is sent again.
        if self.functions.load(Relaxed) {
            match call("FCALL", &CODE.name).query_async(&mut connection).await {
                Err(e) if function_missing(&e) => {
                    // Loaded for the calls to come; this one sends the code itself, since
                    // Redis may forget the library again before it arrives.
                    if let Err(e) = load_library(&mut connection).await {
                        if !refused(&e) {
                            return Err(e);
                        }
                        self.functions.store(false, Relaxed);
                    }
                    return call("EVAL", SCRIPT).query_async(&mut connection).await;
                }
                // No functions on this Redis: scripts from now on.
                Err(e) if refused(&e) => self.functions.store(false, Relaxed),
                reply => return reply,
            }
        }
        match call("EVALSHA", &CODE.sha)
            .query_async(&mut connection)
            .await
        {
            Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                call("EVAL", SCRIPT).query_async(&mut connection).await
            }
            reply => reply,
        }
    }
}

/// An answer the script should never give.
pub(super) fn unexpected(expected: &str) -> StoreError {
    StoreError::new(
        StoreErrorKind::Misconfigured,
        format!("unexpected script reply: expected {expected}"),
    )
}

/// A change as the script takes it: its code and amount.
pub(super) fn script_change(change: Change) -> [u64; 2] {
    let micros = |d: Duration| u64::try_from(d.as_nanos().div_ceil(1000)).unwrap_or(u64::MAX);
    match change {
        Change::Charge(cost) => [0, cost],
        Change::Reset => [1, 0],
        Change::Refund(units) => [2, units],
        Change::Penalize(units) => [3, units],
        Change::Block(duration) => [4, micros(duration)],
    }
}
