//! The rate-limit response headers and their exact formats.
//!
//! * IETF `draft-ietf-httpapi-ratelimit-headers-10`, one item per policy:
//!   `RateLimit-Policy: "default";q=<burst>;w=<period seconds>` and
//!   `RateLimit: "default";r=<remaining>;t=<seconds until more quota>`.
//! * The widespread `X-RateLimit-Limit` (burst), `X-RateLimit-Remaining` and
//!   `X-RateLimit-Reset`. Services disagree on what `X-RateLimit-Reset` means; here it is
//!   the same as `t`: **delta seconds** until more quota arrives, rounded up (0 when the
//!   bucket is full).
//! * On rejections, `Retry-After`: whole seconds, rounded up, at least 1, never earlier
//!   than `t`.
//!
//! Times are rounded up so a client that waits as told is never early. `w` and `t` are
//! left out for a quota that never refills, and so is `Retry-After`.

use std::fmt::Write;
use std::sync::OnceLock;
use std::time::Duration;

use http::header::RETRY_AFTER;
use http::{HeaderMap, HeaderName, HeaderValue};

use crate::{Decision, Outcome, Policy};

static RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");
static RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
static X_RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
static X_RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
static X_RATELIMIT_RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");

/// Which rate-limit headers responses carry. `Retry-After` is always sent on rejections
/// that can be retried.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RateLimitHeaders {
    /// `RateLimit` and `RateLimit-Policy` only.
    Ietf,
    /// `X-RateLimit-*` only.
    Legacy,
    /// Both sets (the default).
    #[default]
    Both,
    /// No rate-limit headers.
    None,
}

/// Writes the headers for one policy; the per-policy constants are formatted once.
#[derive(Debug)]
pub(crate) struct HeaderWriter {
    which: RateLimitHeaders,
    /// `"<name>";r=`, the start of the `RateLimit` field.
    field_start: String,
    policy: HeaderValue,
    limit: HeaderValue,
}

impl HeaderWriter {
    pub(crate) fn new(which: RateLimitHeaders, policy: &Policy) -> Self {
        let quota = policy.quota();
        let window = quota
            .period()
            .map_or(String::new(), |p| format!(";w={}", ceil_secs(p)));
        let policy_value = format!("\"{}\";q={}{window}", policy.name(), quota.burst_size());
        Self {
            which,
            field_start: format!("\"{}\";r=", policy.name()),
            policy: HeaderValue::try_from(policy_value).expect("policy names are sf-strings"),
            limit: number(quota.burst_size()),
        }
    }

    /// Whether any rate-limit header is written.
    pub(crate) fn writes_any(&self) -> bool {
        self.which != RateLimitHeaders::None
    }

    /// The same header sets for another policy.
    pub(crate) fn for_policy(&self, policy: &Policy) -> Self {
        Self::new(self.which, policy)
    }

    /// Adds the rate-limit headers describing `decision`.
    pub(crate) fn write(&self, headers: &mut HeaderMap, decision: &Decision) {
        if !self.writes_any() {
            return;
        }
        let reset = decision.reset.map(ceil_secs);
        headers.reserve(5);
        if matches!(self.which, RateLimitHeaders::Ietf | RateLimitHeaders::Both) {
            let mut field = String::with_capacity(self.field_start.len() + 24);
            field.push_str(&self.field_start);
            let _ = write!(field, "{}", decision.remaining);
            if let Some(reset) = reset {
                let _ = write!(field, ";t={reset}");
            }
            headers.insert(&RATELIMIT_POLICY, self.policy.clone());
            headers.insert(&RATELIMIT, HeaderValue::try_from(field).expect("ascii"));
        }
        if matches!(
            self.which,
            RateLimitHeaders::Legacy | RateLimitHeaders::Both
        ) {
            headers.insert(&X_RATELIMIT_LIMIT, self.limit.clone());
            headers.insert(&X_RATELIMIT_REMAINING, number(decision.remaining));
            if let Some(reset) = reset {
                headers.insert(&X_RATELIMIT_RESET, number(reset));
            }
        }
    }
}

/// Adds `Retry-After` to a refusal that can be retried.
pub(crate) fn write_retry_after(headers: &mut HeaderMap, decision: &Decision) {
    if let Outcome::Denied {
        retry_after: Some(retry_after),
    } = decision.outcome
    {
        headers.insert(RETRY_AFTER, ceil_secs(retry_after).max(1).into());
    }
}

/// `n` as a header value. Numbers below 1024 (most counts and delays) are formatted once
/// per process into static text, so their values are cloned without allocating.
fn number(n: u64) -> HeaderValue {
    const CACHED: usize = 1024;
    static NUMBERS: OnceLock<Vec<HeaderValue>> = OnceLock::new();
    let numbers = NUMBERS.get_or_init(|| {
        let text: String = (0..CACHED).map(|n| n.to_string()).collect();
        let text: &'static str = Box::leak(text.into_boxed_str());
        let mut start = 0;
        (0..CACHED)
            .map(|n| {
                let end = start + n.to_string().len();
                let value = HeaderValue::from_static(&text[start..end]);
                start = end;
                value
            })
            .collect()
    });
    usize::try_from(n)
        .ok()
        .and_then(|n| numbers.get(n).cloned())
        .unwrap_or_else(|| n.into())
}

/// Whole seconds, rounded up.
pub(crate) fn ceil_secs(duration: Duration) -> u64 {
    duration.as_secs() + u64::from(duration.subsec_nanos() > 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Algorithm, Quota};

    fn written(which: RateLimitHeaders, quota: Quota, decision: Decision) -> HeaderMap {
        let policy = Policy::new("default", quota, Algorithm::TokenBucket).unwrap();
        let mut headers = HeaderMap::new();
        HeaderWriter::new(which, &policy).write(&mut headers, &decision);
        write_retry_after(&mut headers, &decision);
        headers
    }

    fn decision(outcome: Outcome, remaining: u64, reset: Option<Duration>) -> Decision {
        Decision {
            outcome,
            limit: 5,
            remaining,
            reset,
        }
    }

    #[test]
    fn allowed_request_carries_both_sets() {
        let headers = written(
            RateLimitHeaders::Both,
            Quota::per_second(1).burst(5),
            decision(Outcome::Allowed, 4, Some(Duration::from_millis(1))),
        );
        assert_eq!(headers["ratelimit-policy"], r#""default";q=5;w=1"#);
        assert_eq!(headers["ratelimit"], r#""default";r=4;t=1"#);
        assert_eq!(headers["x-ratelimit-limit"], "5");
        assert_eq!(headers["x-ratelimit-remaining"], "4");
        assert_eq!(headers["x-ratelimit-reset"], "1");
        assert!(headers.get("retry-after").is_none());
    }

    #[test]
    fn retry_after_rounds_up_and_is_at_least_one() {
        for (exact, expected) in [(1, "1"), (1_000_000_000, "1"), (1_000_000_001, "2")] {
            let wait = Duration::from_nanos(exact);
            let outcome = Outcome::Denied {
                retry_after: Some(wait),
            };
            let headers = written(
                RateLimitHeaders::None,
                Quota::per_second(1),
                decision(outcome, 0, Some(wait)),
            );
            assert_eq!(headers["retry-after"], expected, "{exact} ns");
            assert_eq!(headers.len(), 1);
        }
    }

    #[test]
    fn header_sets_are_switchable() {
        let allowed = decision(Outcome::Allowed, 4, Some(Duration::ZERO));
        let names = |which| {
            let headers = written(which, Quota::per_minute(10), allowed);
            let mut names: Vec<_> = headers.keys().map(|k| k.as_str().to_owned()).collect();
            names.sort();
            names
        };
        assert_eq!(
            names(RateLimitHeaders::Ietf),
            ["ratelimit", "ratelimit-policy"]
        );
        assert_eq!(
            names(RateLimitHeaders::Legacy),
            [
                "x-ratelimit-limit",
                "x-ratelimit-remaining",
                "x-ratelimit-reset"
            ]
        );
        assert_eq!(names(RateLimitHeaders::Both).len(), 5);
        assert!(names(RateLimitHeaders::None).is_empty());
    }

    #[test]
    fn fixed_quota_has_no_window_reset_or_retry() {
        let outcome = Outcome::Denied { retry_after: None };
        let headers = written(
            RateLimitHeaders::Both,
            Quota::fixed(3),
            decision(outcome, 0, None),
        );
        assert_eq!(headers["ratelimit-policy"], r#""default";q=3"#);
        assert_eq!(headers["ratelimit"], r#""default";r=0"#);
        assert!(headers.get("x-ratelimit-reset").is_none());
        assert!(headers.get("retry-after").is_none());
    }

    #[test]
    fn numbers_cached_or_not_read_the_same() {
        for n in [0, 7, 1023, 1024, 86_400, u64::MAX] {
            assert_eq!(number(n), n.to_string().as_str());
        }
    }

    #[test]
    fn fractional_period_rounds_up() {
        let headers = written(
            RateLimitHeaders::Ietf,
            Quota::new(5, Duration::from_millis(1500)),
            decision(Outcome::Allowed, 4, Some(Duration::from_millis(300))),
        );
        assert_eq!(headers["ratelimit-policy"], r#""default";q=5;w=2"#);
        assert_eq!(headers["ratelimit"], r#""default";r=4;t=1"#);
    }
}
