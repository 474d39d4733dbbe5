//! [`Policy`]: a named quota enforced with one algorithm, and [`Policies`]: those a
//! request must all pass.

use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

use crate::store::StoreError;
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
    /// The name is printable ASCII (spaces, quotes and backslashes included: the headers
    /// escape them); anything else is [`PolicyError::InvalidName`], so two names never
    /// end up as one.
    pub fn new(name: &str, quota: Quota, algorithm: Algorithm) -> Result<Self, PolicyError> {
        quota.validate()?;
        algorithm.validate(&quota)?;
        if name.is_empty() || !name.bytes().all(|b| (b' '..=b'~').contains(&b)) {
            return Err(PolicyError::InvalidName(name.to_owned()));
        }
        Ok(Self {
            fingerprint: fingerprint(name, &quota, algorithm),
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
/// # Ok::<(), tower_ratelimit::PolicyError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policies(Arc<Set>);

/// A set of policies behind one pointer, so that decisions and futures carrying one stay
/// small.
#[derive(Debug, PartialEq, Eq)]
struct Set {
    list: Arc<[Policy]>,
    /// The kind of key these policies count (see [`in_namespace`](Policies::in_namespace)),
    /// and its hash (0 for none).
    namespace: Option<Arc<str>>,
    scope: u64,
    fingerprint: u64,
}

impl Policies {
    /// The policies, in the order the headers list them. Fails if there is none
    /// ([`PolicyError::NoPolicy`]) or two share a name ([`PolicyError::DuplicateName`]).
    pub fn new(policies: impl IntoIterator<Item = Policy>) -> Result<Self, PolicyError> {
        let list: Arc<[Policy]> = policies.into_iter().collect();
        if list.is_empty() {
            return Err(PolicyError::NoPolicy);
        }
        let mut names: Vec<&str> = list.iter().map(Policy::name).collect();
        names.sort_unstable();
        if let Some(pair) = names.windows(2).find(|pair| pair[0] == pair[1]) {
            return Err(PolicyError::DuplicateName(pair[0].to_owned()));
        }
        Ok(Self::scoped(list, None))
    }

    fn scoped(list: Arc<[Policy]>, namespace: Option<Arc<str>>) -> Self {
        let scope = namespace
            .as_deref()
            .map_or(0, |namespace| fnv(namespace.bytes()));
        let state_id = |index: usize| scoped_id(list[index].fingerprint(), scope);
        let fingerprint = match list.len() {
            1 => state_id(0),
            n => fnv((0..n).flat_map(|i| state_id(i).to_le_bytes())),
        };
        Self(Arc::new(Set {
            list,
            namespace,
            scope,
            fingerprint,
        }))
    }

    /// The same policies counting keys of one kind: state under one namespace never
    /// meets state under another, so an IP address and a header value that reads like
    /// one never share a bucket. The layer puts its key extractor's
    /// [`namespace`](crate::key::KeyExtractor::namespace) here. A clone of the list, not
    /// of the policies.
    pub fn in_namespace(&self, namespace: &str) -> Self {
        let namespace = (!namespace.is_empty()).then(|| Arc::from(namespace));
        Self::scoped(Arc::clone(&self.0.list), namespace)
    }

    /// The same policies in the namespace of `other`.
    pub(crate) fn scoped_like(&self, other: &Policies) -> Self {
        Self::scoped(Arc::clone(&self.0.list), other.0.namespace.clone())
    }

    /// The namespace (empty for none).
    pub fn namespace(&self) -> &str {
        self.0.namespace.as_deref().unwrap_or("")
    }

    /// The identity of policy `index`'s state in this namespace: its
    /// [fingerprint](Policy::fingerprint), mixed with the namespace if there is one.
    pub fn state_id(&self, index: usize) -> u64 {
        scoped_id(self.0.list[index].fingerprint(), self.0.scope)
    }

    /// A stable 64-bit digest of every policy's identity in the namespace (for one
    /// policy, its [`state_id`](Self::state_id)), for naming state in stores.
    pub fn fingerprint(&self) -> u64 {
        self.0.fingerprint
    }
}

/// A policy's fingerprint mixed with a namespace's hash, if there is one.
fn scoped_id(policy: u64, scope: u64) -> u64 {
    match scope {
        0 => policy,
        scope => fnv(policy.to_le_bytes().into_iter().chain(scope.to_le_bytes())),
    }
}

impl Deref for Policies {
    type Target = [Policy];

    #[inline]
    fn deref(&self) -> &[Policy] {
        &self.0.list
    }
}

impl From<Policy> for Policies {
    fn from(policy: Policy) -> Self {
        Self::scoped(Arc::new([policy]), None)
    }
}

/// Why a policy, or a set of them, cannot be used.
#[derive(Debug)]
#[non_exhaustive]
pub enum PolicyError {
    /// The quota cannot be enforced.
    Quota(QuotaError),
    /// A name that is empty or not printable ASCII.
    InvalidName(String),
    /// A set of policies is empty.
    NoPolicy,
    /// Two policies of a set share this name, which headers could not tell apart.
    DuplicateName(String),
    /// The store cannot enforce the policy (found when a [`Limiter`](crate::Limiter) is
    /// built): a quota beyond what it computes exactly, or a name it already holds under
    /// another quota.
    Unsupported(StoreError),
}

impl From<QuotaError> for PolicyError {
    fn from(error: QuotaError) -> Self {
        Self::Quota(error)
    }
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Quota(error) => write!(f, "invalid quota: {error}"),
            Self::InvalidName(name) => {
                write!(f, "policy name {name:?} is empty or not printable ASCII")
            }
            Self::NoPolicy => f.write_str("a limiter needs at least one policy"),
            Self::DuplicateName(name) => write!(f, "two policies are named {name:?}"),
            Self::Unsupported(error) => error.fmt(f),
        }
    }
}

impl std::error::Error for PolicyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Quota(error) => Some(error),
            Self::Unsupported(error) => Some(error),
            _ => None,
        }
    }
}

/// A policy's identity: its name and algorithm, whether its quota refills (a fixed
/// quota's state is a count, a refilling bucket's a time), and for the windows, whose
/// windows are laid out by it, the period. A bucket whose rate or burst changes, or a
/// window whose burst changes, keeps its identity, so its state carries over.
fn fingerprint(name: &str, quota: &Quota, algorithm: Algorithm) -> u64 {
    let layout = match algorithm {
        Algorithm::FixedWindow | Algorithm::SlidingWindow => {
            quota.period().map_or(u64::MAX, |p| p.as_nanos() as u64)
        }
        _ => u64::from(quota.period().is_some()),
    };
    // The third number, once the windows' burst, stays so that the other identities keep
    // their value across versions.
    let numbers = [algorithm.id(), layout, 0];
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
        // A window's burst is not its identity either; its period is.
        let window = |quota| {
            Policy::new("default", quota, Algorithm::SlidingWindow)
                .unwrap()
                .fingerprint()
        };
        assert_eq!(window(Quota::per_second(5)), window(Quota::per_second(9)));
        assert_ne!(window(Quota::per_second(5)), window(Quota::per_minute(5)));
        let renamed = Policy::new("other", Quota::per_second(5), Algorithm::TokenBucket);
        assert_ne!(base, renamed.unwrap().fingerprint());
    }

    #[test]
    fn names_are_kept_as_given_or_refused() {
        let policy = |name| Policy::new(name, Quota::per_second(1), Algorithm::TokenBucket);
        assert_eq!(policy("a \"b\" \\c").unwrap().name(), "a \"b\" \\c");
        for bad in ["", "caf\u{e9}", "tab\t", "new\nline"] {
            assert!(
                matches!(policy(bad), Err(PolicyError::InvalidName(_))),
                "{bad:?}"
            );
        }
        // Two names that a rewrite would have merged stay two policies.
        assert_ne!(
            policy("a_b").unwrap().fingerprint(),
            policy("a b").unwrap().fingerprint()
        );
    }

    #[test]
    fn sets_need_distinct_names() {
        let policy = |name| Policy::new(name, Quota::per_second(1), Algorithm::TokenBucket);
        let one = Policies::from(policy("a").unwrap());
        assert_eq!(one.fingerprint(), one[0].fingerprint());
        let two = Policies::new([policy("a").unwrap(), policy("b").unwrap()]).unwrap();
        assert_ne!(two.fingerprint(), one.fingerprint());
        assert!(matches!(
            Policies::new([policy("a").unwrap(), policy("a").unwrap()]),
            Err(PolicyError::DuplicateName(name)) if name == "a"
        ));
        assert!(matches!(Policies::new([]), Err(PolicyError::NoPolicy)));
    }

    #[test]
    fn invalid_quota_is_rejected() {
        assert!(matches!(
            Policy::new("default", Quota::per_second(0), Algorithm::TokenBucket),
            Err(PolicyError::Quota(QuotaError::ZeroLimit))
        ));
    }
}
