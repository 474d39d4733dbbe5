//! Temporary: replaced by `policy::PolicyError`.
use std::fmt;

use crate::store::StoreError;
use crate::QuotaError;

/// Why a policy cannot be used.
#[derive(Debug)]
#[non_exhaustive]
pub enum PolicyError {
    /// The quota is invalid.
    Quota(QuotaError),
    /// The store cannot enforce the policy.
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
            Self::Unsupported(error) => error.fmt(f),
        }
    }
}

impl std::error::Error for PolicyError {}
