//! The rate-limit response headers and their exact formats.
//!
//! * IETF `draft-ietf-httpapi-ratelimit-headers-11`, one item per policy, names as
//!   Structured Field strings (`"` and `\` escaped):
//!   `RateLimit-Policy: "default";q=<burst>;w=<seconds>`, where `w` is the time the policy
//!   takes to give the whole burst back (rounded up, at least 1), so a client that never
//!   puts more than `q` units into any `w`-second interval is never refused; and
//!   `RateLimit: "default";r=<available quota>;t=<effective window>`: `r` the units the key
//!   can spend now, `t` the seconds until more quota is available (rounded up; 0 when the
//!   bucket is full; after a refusal, when the request would pass). With several
//!   policies, a list in their order: `RateLimit: "burst";r=9;t=1, "daily";r=9999;t=9`.
//! * The widespread `X-RateLimit-Limit` (burst), `X-RateLimit-Remaining` and
//!   `X-RateLimit-Reset`. Services disagree on what `X-RateLimit-Reset` means; here it is
//!   the same as `t`: **delta seconds** until more quota arrives, rounded up (0 when the
//!   bucket is full). They describe one policy: with several, the
//!   [decisive](crate::Decisions::decisive) one (the refusing one, or the one with the
//!   least quota left).
//! * On rejections, `Retry-After`: whole seconds, rounded up, at least 1, never earlier
//!   than the `t` of any policy that refused the request.
//!
//! Times are rounded up so a client that waits as told is never early. `w` and `t` are
//! left out for a quota that never refills, and so is `Retry-After`.

use std::collections::BTreeSet;
use std::ops::Range;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http::header::RETRY_AFTER;
use http::{HeaderMap, HeaderName, HeaderValue};

use crate::{Algorithm, Decision, Decisions, Outcome, Policies, Policy};

/// The header names, each made at compile time where it is used: an owned name is moved
/// into the map, where a shared `static` one would be cloned per insert.
macro_rules! name {
    ($name:literal) => {
        const { HeaderName::from_static($name) }
    };
}

/// Which rate-limit headers responses carry. `Retry-After` is always sent on rejections
/// that can be retried.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
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

/// Writes the headers for a set of policies; the per-policy constants are formatted once.
#[derive(Debug)]
pub(crate) struct HeaderWriter {
    which: RateLimitHeaders,
    /// `"<name>";r=` per policy, the start of its item in the `RateLimit` field.
    item_starts: Box<[String]>,
    /// The `RateLimit-Policy` field.
    policy: HeaderValue,
    /// `X-RateLimit-Limit` per policy: its burst.
    limits: Box<[HeaderValue]>,
    /// The names written, in order, with the constant values and placeholders: a copy
    /// holds each name's hash already, so a response with no headers of its own gets
    /// them without hashing a name.
    template: HeaderMap,
}

impl HeaderWriter {
    /// A layer's writer: its constant values are static text, so that writing them
    /// copies a pointer (a shared value would count references atomically, on every
    /// response and from every thread).
    pub(crate) fn new(which: RateLimitHeaders, policies: &Policies) -> Self {
        Self::with_values(which, policies, interned)
    }

    /// The same header sets for other policies (picked per request).
    pub(crate) fn for_policies(&self, policies: &Policies) -> Self {
        Self::with_values(self.which, policies, |text| {
            HeaderValue::from_str(text).expect("policy names are sf-strings")
        })
    }

    fn with_values(
        which: RateLimitHeaders,
        policies: &Policies,
        value: fn(&str) -> HeaderValue,
    ) -> Self {
        let items: Vec<String> = policies.iter().map(policy_item).collect();
        let limit = |policy: &Policy| value(&policy.quota().burst_size().to_string());
        let mut writer = Self {
            which,
            item_starts: policies
                .iter()
                .map(|policy| format!("{};r=", sf_string(policy.name())))
                .collect(),
            policy: value(&items.join(", ")),
            limits: policies.iter().map(limit).collect(),
            template: HeaderMap::new(),
        };
        let any = Decision {
            outcome: Outcome::Allowed,
            limit: 0,
            remaining: 0,
            reset: Some(Duration::ZERO),
        };
        let mut template = HeaderMap::new();
        writer.insert(&mut template, &Decisions::new(vec![any; policies.len()]), 0);
        // Every value a copy replaces is static, so copying and replacing it counts no
        // references.
        if let Some(field) = template.get_mut(name!("ratelimit")) {
            *field = HeaderValue::from_static("");
        }
        writer.template = template;
        writer
    }

    /// Whether any rate-limit header is written.
    pub(crate) fn writes_any(&self) -> bool {
        self.which != RateLimitHeaders::None
    }

    fn writes_ietf(&self) -> bool {
        matches!(self.which, RateLimitHeaders::Ietf | RateLimitHeaders::Both)
    }

    fn writes_legacy(&self) -> bool {
        matches!(
            self.which,
            RateLimitHeaders::Legacy | RateLimitHeaders::Both
        )
    }

    /// Adds the rate-limit headers describing `decisions`, one per policy.
    pub(crate) fn write(&self, headers: &mut HeaderMap, decisions: &Decisions) {
        if !self.writes_any() {
            return;
        }
        let decisive = decisions.decisive();
        let decision = &decisions[decisive];
        let Some(reset) = decision.reset.filter(|_| headers.is_empty()) else {
            return self.insert(headers, decisions, decisive);
        };
        // The template's names, in the order `insert` writes them, with new values.
        *headers = self.template.clone();
        let mut slots = headers.values_mut();
        let (field, remaining) = self.values(decisions, decisive);
        if let Some(field) = field {
            // `RateLimit-Policy` is constant; `RateLimit` follows it.
            *slots.nth(1).expect("a slot per header") = field;
        }
        if let Some(remaining) = remaining {
            let limit = self.limits[decisive].clone();
            let values = [limit, remaining, number(ceil_secs(reset))];
            for (slot, value) in slots.zip(values) {
                *slot = value;
            }
        }
    }

    /// Inserts the headers one by one, each replacing a value of the same name (`decisive`:
    /// the decision `X-RateLimit-*` describe).
    #[inline(always)]
    fn insert(&self, headers: &mut HeaderMap, decisions: &Decisions, decisive: usize) {
        let decision = &decisions[decisive];
        headers.reserve(5);
        let (field, remaining) = self.values(decisions, decisive);
        if let Some(field) = field {
            headers.insert(name!("ratelimit-policy"), self.policy.clone());
            headers.insert(name!("ratelimit"), field);
        }
        if let Some(remaining) = remaining {
            headers.insert(name!("x-ratelimit-limit"), self.limits[decisive].clone());
            headers.insert(name!("x-ratelimit-remaining"), remaining);
            if let Some(reset) = decision.reset {
                headers.insert(name!("x-ratelimit-reset"), number(ceil_secs(reset)));
            }
        }
    }

    /// The `RateLimit` field and the `X-RateLimit-Remaining` value, each if written. A
    /// remaining count that needs formatting is a part of the field's text when that is
    /// short: both values then share one allocation.
    #[inline(always)]
    fn values(
        &self,
        decisions: &Decisions,
        decisive: usize,
    ) -> (Option<HeaderValue>, Option<HeaderValue>) {
        let remaining = decisions[decisive].remaining;
        let legacy = self.writes_legacy().then_some(remaining);
        if !self.writes_ietf() {
            return (None, legacy.map(number));
        }
        let length = self.field_len(decisions);
        if legacy.is_some() && remaining >= CACHED_NUMBERS && length <= INLINE {
            let mut text = Inline::new();
            let digits = self.write_field(decisions, decisive, &mut text);
            let text = Bytes::from_owner(text);
            let remaining = text.slice(digits);
            return (Some(ascii_value(text)), Some(ascii_value(remaining)));
        }
        let mut text = Vec::with_capacity(length);
        self.write_field(decisions, decisive, &mut text);
        (Some(value(text)), legacy.map(number))
    }

    /// The length of the `RateLimit` field.
    #[inline(always)]
    fn field_len(&self, decisions: &Decisions) -> usize {
        let items = self.item_starts.iter().zip(decisions.iter());
        items.fold(2 * (decisions.len() - 1), |length, (start, d)| {
            length
                + start.len()
                + decimal_len(d.remaining)
                + d.reset.map_or(0, |t| 3 + decimal_len(ceil_secs(t)))
        })
    }

    /// Writes the `RateLimit` field, one item per policy, into `out`; returns where the
    /// remaining count of the `decisive` policy's item is.
    #[inline(always)]
    fn write_field(
        &self,
        decisions: &Decisions,
        decisive: usize,
        out: &mut impl Text,
    ) -> Range<usize> {
        let mut digits = 0..0;
        for (index, (start, decision)) in self.item_starts.iter().zip(decisions.iter()).enumerate()
        {
            if index > 0 {
                out.push(b", ");
            }
            out.push(start.as_bytes());
            let from = out.len();
            push_decimal(out, decision.remaining);
            if index == decisive {
                digits = from..out.len();
            }
            if let Some(t) = decision.reset {
                out.push(b";t=");
                push_decimal(out, ceil_secs(t));
            }
        }
        digits
    }
}

/// Where text is written: a `Vec` of its exact length, or [`Inline`].
trait Text {
    fn push(&mut self, text: &[u8]);
    fn len(&self) -> usize;
}

impl Text for Vec<u8> {
    fn push(&mut self, text: &[u8]) {
        self.extend_from_slice(text);
    }

    fn len(&self) -> usize {
        Vec::len(self)
    }
}

/// The longest text held [`Inline`].
const INLINE: usize = 64;

/// Short text held inline: a [`Bytes`] made of it with `from_owner` takes one
/// allocation, which the values sliced from it share.
struct Inline {
    len: usize,
    bytes: [u8; INLINE],
}

impl Inline {
    fn new() -> Self {
        Self {
            len: 0,
            bytes: [0; INLINE],
        }
    }
}

impl Text for Inline {
    fn push(&mut self, text: &[u8]) {
        self.bytes[self.len..self.len + text.len()].copy_from_slice(text);
        self.len += text.len();
    }

    fn len(&self) -> usize {
        self.len
    }
}

impl AsRef<[u8]> for Inline {
    fn as_ref(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

/// `text` as a static header value: leaked once per distinct text in the process, so a
/// layer built again and again reuses it.
fn interned(text: &str) -> HeaderValue {
    static TEXTS: Mutex<BTreeSet<&'static str>> = Mutex::new(BTreeSet::new());
    let mut texts = TEXTS.lock().unwrap_or_else(|e| e.into_inner());
    let text = match texts.get(text) {
        Some(&known) => known,
        None => {
            let leaked: &'static str = Box::leak(text.into());
            texts.insert(leaked);
            leaked
        }
    };
    HeaderValue::from_static(text)
}

/// The number of decimal digits of `n`.
fn decimal_len(n: u64) -> usize {
    n.checked_ilog10().map_or(1, |log| log as usize + 1)
}

/// Appends `n` in decimal, two digits at a time.
fn push_decimal(out: &mut impl Text, mut n: u64) {
    /// "00", "01", ... "99".
    const PAIRS: [u8; 200] = {
        let mut pairs = [0; 200];
        let mut i = 0;
        while i < 100 {
            pairs[2 * i] = b'0' + (i / 10) as u8;
            pairs[2 * i + 1] = b'0' + (i % 10) as u8;
            i += 1;
        }
        pairs
    };
    let mut digits = [0; 20];
    let mut start = digits.len();
    let mut push_pair = |pair: usize| {
        start -= 2;
        digits[start..start + 2].copy_from_slice(&PAIRS[2 * pair..2 * pair + 2]);
    };
    while n >= 100 {
        push_pair((n % 100) as usize);
        n /= 100;
    }
    if n >= 10 {
        push_pair(n as usize);
    } else {
        start -= 1;
        digits[start] = b'0' + n as u8;
    }
    out.push(&digits[start..]);
}

/// `n` in decimal, in a value of its own.
fn decimal(n: u64) -> HeaderValue {
    let mut text = Vec::with_capacity(decimal_len(n));
    push_decimal(&mut text, n);
    value(text)
}

/// A value of ASCII text. Its length is its capacity, so the value takes this one
/// allocation and frees it without counting references.
fn value(text: Vec<u8>) -> HeaderValue {
    debug_assert_eq!(text.len(), text.capacity());
    ascii_value(Bytes::from(text))
}

/// A value of ASCII text.
fn ascii_value(text: Bytes) -> HeaderValue {
    HeaderValue::from_maybe_shared(text).expect("ascii")
}

/// One policy's item of the `RateLimit-Policy` field: `"<name>";q=<burst>;w=<seconds>`,
/// a budget no client is refused for: one that never puts more than `q` units into any
/// `w`-second interval passes every time. `w` is the time the policy takes to give the
/// whole burst back, rounded up to whole seconds (at least 1): `burst × period / limit`
/// for the buckets, the period for the fixed window, and two periods for the sliding
/// window, whose estimate still counts part of the previous window. A fixed quota never
/// refills, so it has no `w`.
fn policy_item(policy: &Policy) -> String {
    let quota = policy.quota();
    let window = quota.period().map(|period| match policy.algorithm() {
        Algorithm::FixedWindow => period,
        Algorithm::SlidingWindow => period * 2,
        _ => Duration::from_nanos(
            quota.interval_nanos().map_or(0, |ns| ns.get()) * quota.burst_size(),
        ),
    });
    let window = window.map_or(String::new(), |w| format!(";w={}", ceil_secs(w).max(1)));
    format!(
        "{};q={}{window}",
        sf_string(policy.name()),
        quota.burst_size()
    )
}

/// `name` as a Structured Field string (RFC 8941): quoted, `"` and `\` escaped.
fn sf_string(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 2);
    out.push('"');
    for c in name.chars() {
        if matches!(c, '"' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
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

/// The numbers [`number`] makes without allocating.
const CACHED_NUMBERS: u64 = 1024;

/// `n` as a header value. Numbers below 1024 (most counts and delays) are formatted once
/// per process into static text, so their values are made without allocating, and without
/// the indirect call a cloned value takes.
fn number(n: u64) -> HeaderValue {
    const CACHED: usize = CACHED_NUMBERS as usize;
    static NUMBERS: OnceLock<Vec<&'static str>> = OnceLock::new();
    let numbers = NUMBERS.get_or_init(|| {
        let text: String = (0..CACHED).map(|n| n.to_string()).collect();
        let text: &'static str = Box::leak(text.into_boxed_str());
        let mut start = 0;
        (0..CACHED)
            .map(|n| {
                let end = start + n.to_string().len();
                let digits = &text[start..end];
                start = end;
                digits
            })
            .collect()
    });
    usize::try_from(n)
        .ok()
        .and_then(|n| numbers.get(n))
        .map_or_else(|| decimal(n), |digits| HeaderValue::from_static(digits))
}

/// Whole seconds, rounded up.
pub(crate) fn ceil_secs(duration: Duration) -> u64 {
    duration.as_secs() + u64::from(duration.subsec_nanos() > 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Algorithm, Policy, Quota};

    fn written(which: RateLimitHeaders, quota: Quota, decision: Decision) -> HeaderMap {
        let policy = Policy::new("default", quota, Algorithm::TokenBucket).unwrap();
        let mut headers = HeaderMap::new();
        HeaderWriter::new(which, &policy.into()).write(&mut headers, &decision.into());
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
        // Five at once, then one per second: the whole burst is back after 5 s.
        assert_eq!(headers["ratelimit-policy"], r#""default";q=5;w=5"#);
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
    fn formatted_remaining_counts_read_the_same_in_both_sets() {
        // From 1024 up, the remaining count is formatted per response: shared with a
        // short `RateLimit` field, written apart beside a long one.
        let policy = |name: &str| {
            Policy::new(name, Quota::per_second(1_000_000), Algorithm::TokenBucket).unwrap()
        };
        let long = "a-policy-name-long-enough-for-a-field-beyond-64-bytes";
        for (policies, remaining) in [
            (Policies::from(policy("default")), vec![5000]),
            (Policies::from(policy(long)), vec![5000]),
            (
                Policies::new([policy("minute"), policy("day")]).unwrap(),
                vec![999_999, 5000],
            ),
        ] {
            let reset = Some(Duration::from_millis(1));
            let decisions = remaining
                .iter()
                .map(|&left| decision(Outcome::Allowed, left, reset))
                .collect();
            let mut headers = HeaderMap::new();
            HeaderWriter::new(RateLimitHeaders::Both, &policies)
                .write(&mut headers, &Decisions::new(decisions));
            let items: Vec<_> = policies
                .iter()
                .zip(&remaining)
                .map(|(policy, left)| format!("\"{}\";r={left};t=1", policy.name()))
                .collect();
            assert_eq!(headers["ratelimit"], items.join(", ").as_str());
            assert_eq!(headers["x-ratelimit-remaining"], "5000");
        }
    }

    #[test]
    fn a_response_with_headers_of_its_own_gets_the_same_headers() {
        let policy = |name, quota| Policy::new(name, quota, Algorithm::TokenBucket).unwrap();
        let one: Policies = policy("default", Quota::per_second(10)).into();
        let two = Policies::new([
            policy("burst", Quota::per_second(2)),
            policy("daily", Quota::per_day(100)),
        ])
        .unwrap();
        let reset = Some(Duration::from_millis(1_500));
        let sorted = |headers: HeaderMap| {
            let mut pairs: Vec<_> = headers
                .iter()
                .map(|(name, value)| format!("{name}: {}", value.to_str().unwrap()))
                .collect();
            pairs.sort();
            pairs
        };
        for which in [
            RateLimitHeaders::Ietf,
            RateLimitHeaders::Legacy,
            RateLimitHeaders::Both,
        ] {
            for (policies, decisions) in [
                (&one, Decisions::from(decision(Outcome::Allowed, 7, reset))),
                (&one, Decisions::from(decision(Outcome::Allowed, 7, None))),
                (
                    &two,
                    Decisions::new(vec![
                        decision(Outcome::Allowed, 1, reset),
                        decision(Outcome::Allowed, 40, Some(Duration::from_secs(864))),
                    ]),
                ),
            ] {
                let writer = HeaderWriter::new(which, policies);
                let mut alone = HeaderMap::new();
                writer.write(&mut alone, &decisions);
                let mut beside = HeaderMap::new();
                beside.insert("content-type", HeaderValue::from_static("text/plain"));
                // The layer's value replaces the service's own.
                beside.insert("x-ratelimit-limit", HeaderValue::from_static("999"));
                writer.write(&mut beside, &decisions);
                assert_eq!(beside.remove("content-type").unwrap(), "text/plain");
                if which == RateLimitHeaders::Ietf {
                    assert_eq!(beside.remove("x-ratelimit-limit").unwrap(), "999");
                }
                assert!(!alone.is_empty());
                assert_eq!(sorted(alone), sorted(beside), "{which:?}, {decisions:?}");
            }
        }
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
    fn retry_after_is_never_earlier_than_the_t_of_a_violated_policy() {
        let policy = |name, quota| Policy::new(name, quota, Algorithm::TokenBucket).unwrap();
        let policies = Policies::new([
            policy("burst", Quota::per_second(2)),
            policy("daily", Quota::per_day(100)),
        ])
        .unwrap();
        let retry = Duration::from_millis(1_500);
        let decisions = Decisions::new(vec![
            decision(
                Outcome::Denied {
                    retry_after: Some(retry),
                },
                0,
                Some(retry),
            ),
            decision(Outcome::Allowed, 40, Some(Duration::from_secs(864))),
        ]);
        let mut headers = HeaderMap::new();
        HeaderWriter::new(RateLimitHeaders::Ietf, &policies).write(&mut headers, &decisions);
        write_retry_after(&mut headers, &decisions.summary());
        assert_eq!(
            headers["ratelimit"],
            r#""burst";r=0;t=2, "daily";r=40;t=864"#
        );
        assert_eq!(headers["retry-after"], "2");
    }

    #[test]
    fn names_are_escaped_structured_field_strings() {
        let policy = Policy::new(r#"a "b" \c"#, Quota::per_minute(1), Algorithm::TokenBucket);
        let writer = HeaderWriter::new(RateLimitHeaders::Ietf, &policy.unwrap().into());
        assert_eq!(writer.policy, r#""a \"b\" \\c";q=1;w=60"#);
    }

    proptest::proptest! {
        /// The advertised budget holds: arrivals that never put more than `q` units into
        /// any half-open interval of `w` (exact, before rounding to seconds) all pass.
        #[test]
        fn a_client_within_the_advertised_budget_is_never_refused(
            limit in 1u64..6,
            period_ms in 1u64..40,
            burst in 1u64..6,
            algorithm in 0usize..4,
            arrivals in crate::algorithm::testing::arrivals(),
        ) {
            let algorithm = [
                Algorithm::TokenBucket,
                Algorithm::LeakyBucketShaper { max_delay: Duration::ZERO },
                Algorithm::FixedWindow,
                Algorithm::SlidingWindow,
            ][algorithm];
            let quota = Quota::new(limit, Duration::from_millis(period_ms)).burst(burst);
            let policy = Policy::new("p", quota, algorithm).unwrap();
            let window = match algorithm {
                Algorithm::FixedWindow => period_ms * 1_000_000,
                Algorithm::SlidingWindow => 2 * period_ms * 1_000_000,
                _ => quota.interval_nanos().unwrap().get() * burst,
            };
            let (mut state, mut now, mut kept) = (0, 0, Vec::<(u64, u64)>::new());
            for (gap, cost) in arrivals {
                now += gap;
                let recent: u64 = kept.iter().filter(|(t, _)| t + window > now).map(|(_, c)| c).sum();
                if cost == 0 || recent + cost > burst {
                    continue;
                }
                let (decision, next) = algorithm.decide(state, now, cost, policy.quota());
                proptest::prop_assert_eq!(decision.outcome, Outcome::Allowed, "at {} cost {}", now, cost);
                state = next.unwrap_or(state);
                kept.push((now, cost));
            }
        }
    }

    #[test]
    fn numbers_cached_or_not_read_the_same() {
        let edges = (0..20).flat_map(|e| {
            let p = 10u64.pow(e);
            [p - 1, p, p + 1]
        });
        for n in (0..20_000).chain(edges).chain([86_400, u64::MAX]) {
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

    #[test]
    fn several_policies_are_listed_and_legacy_reports_the_decisive_one() {
        let policy = |name, quota| Policy::new(name, quota, Algorithm::TokenBucket).unwrap();
        let policies = Policies::new([
            policy("burst", Quota::per_second(10)),
            policy("daily", Quota::per_day(10_000)),
        ])
        .unwrap();
        let decisions = Decisions::new(vec![
            Decision {
                limit: 10,
                ..decision(Outcome::Allowed, 9, Some(Duration::from_millis(100)))
            },
            Decision {
                limit: 10_000,
                ..decision(Outcome::Allowed, 3, Some(Duration::from_millis(8_640_001)))
            },
        ]);
        let mut headers = HeaderMap::new();
        HeaderWriter::new(RateLimitHeaders::Both, &policies).write(&mut headers, &decisions);
        assert_eq!(
            headers["ratelimit-policy"],
            r#""burst";q=10;w=1, "daily";q=10000;w=86400"#
        );
        assert_eq!(
            headers["ratelimit"],
            r#""burst";r=9;t=1, "daily";r=3;t=8641"#
        );
        assert_eq!(headers["x-ratelimit-limit"], "10000");
        assert_eq!(headers["x-ratelimit-remaining"], "3");
        assert_eq!(headers["x-ratelimit-reset"], "8641");
    }

    #[test]
    fn a_layers_writer_and_one_per_request_write_the_same() {
        let policy = Policy::new("p", Quota::per_minute(100_000), Algorithm::TokenBucket);
        let policies: Policies = policy.unwrap().into();
        let layer = HeaderWriter::new(RateLimitHeaders::Both, &policies);
        let per_request = layer.for_policies(&policies);
        for remaining in [0, 7, 1023, 1024, u64::MAX] {
            for reset in [
                None,
                Some(Duration::ZERO),
                Some(Duration::from_millis(7_500)),
                Some(Duration::from_secs(86_400)),
            ] {
                let decisions = Decision {
                    limit: 100_000,
                    ..decision(Outcome::Allowed, remaining, reset)
                }
                .into();
                let (mut a, mut b) = (HeaderMap::new(), HeaderMap::new());
                layer.write(&mut a, &decisions);
                per_request.write(&mut b, &decisions);
                assert_eq!(a, b);
                let t = reset.map_or(String::new(), |r| format!(";t={}", ceil_secs(r)));
                assert_eq!(a["ratelimit"], format!("\"p\";r={remaining}{t}").as_str());
                assert_eq!(a["x-ratelimit-limit"], "100000");
                assert_eq!(a["x-ratelimit-remaining"], remaining.to_string().as_str());
            }
        }
    }

    #[test]
    fn a_response_keeps_its_own_headers_and_loses_its_rate_limit_ones() {
        let policy = Policy::new("p", Quota::per_minute(10), Algorithm::TokenBucket);
        let writer = HeaderWriter::new(RateLimitHeaders::Both, &policy.unwrap().into());
        let decisions = decision(Outcome::Allowed, 4, Some(Duration::from_secs(6))).into();
        let mut own = HeaderMap::new();
        own.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain"),
        );
        own.append("set-cookie", HeaderValue::from_static("a=1"));
        own.append("set-cookie", HeaderValue::from_static("b=2"));
        let mut headers = own.clone();
        writer.write(&mut headers, &decisions);
        assert_eq!(headers.len(), 8);
        assert_eq!(headers["content-type"], "text/plain");
        assert_eq!(headers.get_all("set-cookie").iter().count(), 2);
        assert_eq!(headers["x-ratelimit-remaining"], "4");

        // The same rate-limit headers as into a response with none.
        let mut alone = HeaderMap::new();
        writer.write(&mut alone, &decisions);
        assert_eq!(alone.len(), 5);
        for (name, value) in &alone {
            assert_eq!(headers.get_all(name).iter().collect::<Vec<_>>(), [value]);
        }

        // Values of the same names, even several, give way to the layer's.
        own.append("x-ratelimit-remaining", HeaderValue::from_static("99"));
        own.append("x-ratelimit-remaining", HeaderValue::from_static("98"));
        writer.write(&mut own, &decisions);
        assert_eq!(own, headers);
    }

    #[test]
    fn layers_built_again_share_their_static_text() {
        let policy = Policy::new("shared", Quota::per_hour(5000), Algorithm::TokenBucket);
        let policies: Policies = policy.unwrap().into();
        let first = HeaderWriter::new(RateLimitHeaders::Both, &policies);
        let again = HeaderWriter::new(RateLimitHeaders::Both, &policies);
        let text = |value: &HeaderValue| value.as_bytes().as_ptr();
        assert_eq!(text(&first.policy), text(&again.policy));
        assert_eq!(text(&first.limits[0]), text(&again.limits[0]));
    }
}
