//! [`Policy`]: a named quota enforced with one algorithm, and [`Policies`]: those a
//! request must all pass.

use std::ops::Deref;
use std::sync::Arc;

use crate::{Algorithm, Quota, QuotaError};

/// A [`Quota`] under a name, enforced with an [`Algorithm`].
///
/// The name appears in the `RateLimit` and `RateLimit-Policy` headers and in the
/// `violated-policies` member of rejections. Stores keep each policy's state apart: state
/// written under one name, quota or algorithm is never read under another, so two
/// policies with equal quotas but different names count apart.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    name: Arc<str>,
    quota: Quota,
    algorithm: Algorithm,
    fingerprint: u64,
}

impl Policy {
    /// A validated policy.
    ///
    /// The name must be a valid structured-field string (printable ASCII); anything else
    /// is replaced by `_` so headers stay well-formed.
    pub fn new(name: &str, quota: Quota, algorithm: Algorithm) -> Result<Self, QuotaError> {
        quota.validate()?;
        algorithm.validate(&quota)?;
        let name: String = name
            .chars()
            .map(|c| {
                if (' '..='~').contains(&c) && c != '"' && c != '\\' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        Ok(Self {
            fingerprint: fingerprint(&name, &quota, algorithm),
            name: name.into(),
            quota,
            algorithm,
        })
    }

    /// The policy's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The quota.
    pub fn quota(&self) -> &Quota {
        &self.quota
    }

    /// The algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// A stable 64-bit digest of the policy's identity, naming its state in every store:
    /// its name and algorithm (see the [store docs](crate::store#state-identity)).
    pub fn fingerprint(&self) -> u64 {
        self.fingerprint
    }
}

/// The policies a request must all pass: one, or several named quotas for one key (say
/// `"burst"`, 10 per second, and `"daily"`, 10 000 per day).
///
/// A request passes only if every policy lets it through, and only then is it charged
/// under each, atomically: a request one policy refuses spends nothing under the others.
/// The headers list every policy, and a rejection names the ones it violated. A clone is
/// a reference-count increment.
///
/// ```
/// use tower_ratelimit::{Algorithm, Policies, Policy, Quota};
///
/// let policies = Policies::new([
///     Policy::new("burst", Quota::per_second(10), Algorithm::TokenBucket)?,
///     Policy::new("daily", Quota::per_day(10_000), Algorithm::SlidingWindow)?,
/// ])?;
/// assert_eq!(policies.len(), 2);
/// assert_eq!(policies[1].name(), "daily");
/// # Ok::<(), tower_ratelimit::QuotaError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policies {
    list: Arc<[Policy]>,
    fingerprint: u64,
}

impl Policies {
    /// The policies, in the order the headers list them. Fails if there is none
    /// ([`QuotaError::NoPolicy`]) or two share a name ([`QuotaError::DuplicateName`]).
    pub fn new(policies: impl IntoIterator<Item = Policy>) -> Result<Self, QuotaError> {
        let list: Arc<[Policy]> = policies.into_iter().collect();
        if list.is_empty() {
            return Err(QuotaError::NoPolicy);
        }
        let mut names: Vec<&str> = list.iter().map(Policy::name).collect();
        names.sort_unstable();
        if names.windows(2).any(|pair| pair[0] == pair[1]) {
            return Err(QuotaError::DuplicateName);
        }
        let fingerprint = match &*list {
            [one] => one.fingerprint(),
            all => fnv(all.iter().flat_map(|p| p.fingerprint().to_le_bytes())),
        };
        Ok(Self { list, fingerprint })
    }

    /// A stable 64-bit digest of every policy's quota and algorithm (for one policy, its
    /// own fingerprint), for naming state in stores.
    pub fn fingerprint(&self) -> u64 {
        self.fingerprint
    }
}

impl Deref for Policies {
    type Target = [Policy];

    fn deref(&self) -> &[Policy] {
        &self.list
    }
}

impl From<Policy> for Policies {
    fn from(policy: Policy) -> Self {
        Self {
            fingerprint: policy.fingerprint(),
            list: Arc::new([policy]),
        }
    }
}

/// A policy's identity: its name and algorithm, whether its quota refills (a fixed
/// quota's state is a count, a refilling bucket's a time), and for the windows, whose
/// counts are laid out by them, the period and burst. A token bucket whose rate or burst
/// changes keeps its identity, so its state carries over.
fn fingerprint(name: &str, quota: &Quota, algorithm: Algorithm) -> u64 {
    let layout = match algorithm {
        Algorithm::FixedWindow | Algorithm::SlidingWindow => {
            let period = quota.period().map_or(u64::MAX, |p| p.as_nanos() as u64);
            [period, quota.burst_size()]
        }
        _ => [u64::from(quota.period().is_some()), 0],
    };
    let numbers = [algorithm.id(), layout[0], layout[1]];
    fnv(numbers
        .into_iter()
        .flat_map(u64::to_le_bytes)
        .chain(name.bytes()))
}

/// FNV-1a: stable across processes and Rust versions, unlike `Hash`, so app servers
/// sharing one store agree on it.
fn fnv(bytes: impl Iterator<Item = u8>) -> u64 {
    bytes.fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fingerprint_of(quota: Quota) -> u64 {
        Policy::new("default", quota, Algorithm::TokenBucket)
            .unwrap()
            .fingerprint()
    }

    #[test]
    fn fingerprint_tells_quotas_apart() {
        // A bucket's rate and burst are not its identity: a changed quota inherits.
        let base = fingerprint_of(Quota::per_second(5));
        assert_eq!(base, fingerprint_of(Quota::per_second(6).burst(9)));
        assert_eq!(base, fingerprint_of(Quota::per_minute(5)));
        assert_ne!(base, fingerprint_of(Quota::fixed(5)));
        let renamed = Policy::new("other", Quota::per_second(5), Algorithm::TokenBucket);
        assert_ne!(base, renamed.unwrap().fingerprint());
    }

    #[test]
    fn names_stay_valid_header_strings() {
        let policy = Policy::new(
            "a\"b\\c\u{e9}",
            Quota::per_second(1),
            Algorithm::TokenBucket,
        );
        assert_eq!(policy.unwrap().name(), "a_b_c_");
    }

    #[test]
    fn sets_need_distinct_names() {
        let policy = |name| Policy::new(name, Quota::per_second(1), Algorithm::TokenBucket);
        let one = Policies::from(policy("a").unwrap());
        assert_eq!(one.fingerprint(), one[0].fingerprint());
        let two = Policies::new([policy("a").unwrap(), policy("b").unwrap()]).unwrap();
        assert_ne!(two.fingerprint(), one.fingerprint());
        assert_eq!(
            Policies::new([policy("a").unwrap(), policy("a").unwrap()]),
            Err(QuotaError::DuplicateName)
        );
        assert_eq!(Policies::new([]), Err(QuotaError::NoPolicy));
    }

    #[test]
    fn invalid_quota_is_rejected() {
        assert_eq!(
            Policy::new("default", Quota::per_second(0), Algorithm::TokenBucket),
            Err(QuotaError::ZeroLimit)
        );
    }
}
