//! [`Policy`]: a named quota enforced with one algorithm.

use std::sync::Arc;

use crate::{Algorithm, Quota, QuotaError};

/// A [`Quota`] under a name, enforced with an [`Algorithm`].
///
/// The name appears in the `RateLimit` and `RateLimit-Policy` headers and in the
/// `violated-policies` member of rejections. Stores keep each policy's state apart: state
/// written under one quota or algorithm is never read under another.
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
            name: name.into(),
            quota,
            algorithm,
            fingerprint: fingerprint(&quota, algorithm),
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

    /// A stable 64-bit digest of quota and algorithm, for naming state in stores.
    pub fn fingerprint(&self) -> u64 {
        self.fingerprint
    }
}

/// FNV-1a over the quota and the algorithm: stable across processes and Rust versions,
/// unlike `Hash`, so app servers sharing one store agree on it.
fn fingerprint(quota: &Quota, algorithm: Algorithm) -> u64 {
    let period = quota.period().map_or(u64::MAX, |p| p.as_nanos() as u64);
    [quota.limit(), period, quota.burst_size(), algorithm.id()]
        .iter()
        .flat_map(|n| n.to_le_bytes())
        .fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
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
        let base = fingerprint_of(Quota::per_second(5));
        assert_eq!(base, fingerprint_of(Quota::per_second(5).burst(5)));
        assert_ne!(base, fingerprint_of(Quota::per_second(6)));
        assert_ne!(base, fingerprint_of(Quota::per_second(5).burst(6)));
        assert_ne!(base, fingerprint_of(Quota::per_minute(5)));
        assert_ne!(base, fingerprint_of(Quota::fixed(5)));
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
    fn invalid_quota_is_rejected() {
        assert_eq!(
            Policy::new("default", Quota::per_second(0), Algorithm::TokenBucket),
            Err(QuotaError::ZeroLimit)
        );
    }
}
