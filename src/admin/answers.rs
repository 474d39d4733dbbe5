//! What the admin routes read and answer: the JSON bodies, and refusals as
//! `application/problem+json`.

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::response::{IntoResponse, Response};
use axum::Json;
use http::header::{CACHE_CONTROL, CONTENT_TYPE};
use http::StatusCode;
use serde::{Deserialize, Serialize};

use crate::observe::OUTCOMES;
use crate::store::{StoreError, StoreErrorKind};
use crate::{Algorithm, Policy, Quota, QuotaChangeError};

/// An answer that is not the one asked for: a status and why, as `application/problem+json`.
#[derive(Debug)]
pub(crate) struct Refusal(pub(crate) StatusCode, pub(crate) String);

#[derive(Serialize)]
struct Problem {
    title: &'static str,
    status: u16,
    detail: String,
}

/// `status` with `detail`, as `application/problem+json` (RFC 9457).
pub(crate) fn problem(status: StatusCode, detail: impl Into<String>) -> Response {
    let body = Problem {
        title: status.canonical_reason().unwrap_or("Error"),
        status: status.as_u16(),
        detail: detail.into(),
    };
    let headers = [
        (CONTENT_TYPE, "application/problem+json"),
        (CACHE_CONTROL, "no-store"),
    ];
    (status, headers, Json(body)).into_response()
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        problem(self.0, self.1)
    }
}

/// A `400` saying why.
pub(crate) fn bad_request(detail: impl Into<String>) -> Refusal {
    Refusal(StatusCode::BAD_REQUEST, detail.into())
}

impl From<JsonRejection> for Refusal {
    fn from(rejection: JsonRejection) -> Self {
        bad_request(rejection.body_text())
    }
}

impl From<QueryRejection> for Refusal {
    fn from(rejection: QueryRejection) -> Self {
        bad_request(rejection.body_text())
    }
}

impl From<StoreError> for Refusal {
    fn from(error: StoreError) -> Self {
        let status = match error.kind() {
            StoreErrorKind::InvalidChange => StatusCode::BAD_REQUEST,
            _ => StatusCode::SERVICE_UNAVAILABLE,
        };
        Refusal(status, error.to_string())
    }
}

impl From<QuotaChangeError> for Refusal {
    fn from(error: QuotaChangeError) -> Self {
        match error {
            QuotaChangeError::UnknownPolicy(_) => Refusal(StatusCode::NOT_FOUND, error.to_string()),
            // The store cannot enforce that quota.
            QuotaChangeError::Store(error) if error.kind() == StoreErrorKind::Misconfigured => {
                bad_request(error.to_string())
            }
            QuotaChangeError::Store(error) => error.into(),
            error => bad_request(error.to_string()),
        }
    }
}

/// A quota, as answered and as read: `period_secs` absent (or null) for a fixed quota.
#[derive(Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub(crate) struct QuotaJson {
    pub(crate) limit: u64,
    #[serde(default)]
    pub(crate) period_secs: Option<f64>,
    #[serde(default)]
    pub(crate) burst: Option<u64>,
}

impl QuotaJson {
    pub(crate) fn of(quota: &Quota) -> Self {
        Self {
            limit: quota.limit(),
            period_secs: quota.period().map(|period| period.as_secs_f64()),
            burst: Some(quota.burst_size()),
        }
    }

    pub(crate) fn quota(&self) -> Result<Quota, Refusal> {
        let quota = match self.period_secs {
            Some(secs) => Quota::per_secs_f64(self.limit, secs)
                .map_err(|error| bad_request(format!("invalid quota: {error}")))?,
            None => Quota::fixed(self.limit),
        };
        Ok(self.burst.map_or(quota, |burst| quota.burst(burst)))
    }
}

#[derive(Serialize)]
pub(crate) struct PolicyJson {
    pub(crate) name: String,
    pub(crate) algorithm: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) max_delay_secs: Option<f64>,
    /// In force now.
    pub(crate) quota: QuotaJson,
    /// As the limiter was built.
    pub(crate) built_with: QuotaJson,
    pub(crate) changed: bool,
}

impl PolicyJson {
    pub(crate) fn of(current: &Policy, own: &Policy) -> Self {
        let (algorithm, max_delay) = match current.algorithm() {
            Algorithm::TokenBucket => ("token_bucket", None),
            Algorithm::LeakyBucket => ("leaky_bucket", None),
            Algorithm::LeakyBucketShaper { max_delay } => ("leaky_bucket_shaper", Some(max_delay)),
            Algorithm::FixedWindow => ("fixed_window", None),
            Algorithm::SlidingWindow => ("sliding_window", None),
        };
        Self {
            name: current.name().to_owned(),
            algorithm,
            max_delay_secs: max_delay.map(|delay| delay.as_secs_f64()),
            quota: QuotaJson::of(current.quota()),
            built_with: QuotaJson::of(own.quota()),
            changed: QuotaJson::of(current.quota()) != QuotaJson::of(own.quota()),
        }
    }
}

#[derive(Serialize)]
pub(crate) struct PoliciesJson {
    pub(crate) namespace: String,
    pub(crate) policies: Vec<PolicyJson>,
}

/// How a request names a key: as typed, or by the hash the answers show (for keys among
/// the top denied), and whether answers and logs may show it raw.
#[derive(Deserialize)]
pub(crate) struct Target {
    #[serde(default)]
    pub(crate) key: Option<String>,
    #[serde(default)]
    pub(crate) hash: Option<String>,
    #[serde(default)]
    pub(crate) raw: bool,
}

#[derive(Serialize)]
pub(crate) struct KeyJson {
    pub(crate) hash: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) key: Option<String>,
    pub(crate) policies: Vec<KeyPolicyJson>,
}

#[derive(Serialize)]
pub(crate) struct KeyPolicyJson {
    pub(crate) name: String,
    pub(crate) limit: u64,
    pub(crate) remaining: u64,
    /// Until more quota comes back; absent for a quota that never refills.
    pub(crate) reset_secs: Option<f64>,
    /// How long the key stays blocked, if it is.
    pub(crate) blocked_secs: Option<f64>,
}

#[derive(Deserialize)]
pub(crate) struct RefundJson {
    #[serde(flatten)]
    pub(crate) target: Target,
    pub(crate) units: u64,
}

#[derive(Deserialize)]
pub(crate) struct BlockJson {
    #[serde(flatten)]
    pub(crate) target: Target,
    pub(crate) seconds: f64,
}

#[derive(Deserialize)]
pub(crate) struct Raw {
    #[serde(default)]
    pub(crate) raw: bool,
}

#[derive(Serialize)]
pub(crate) struct StatsJson {
    /// Seconds since the statistics started.
    pub(crate) second: u64,
    pub(crate) outcomes: [&'static str; OUTCOMES.len()],
    pub(crate) policies: Vec<RowJson>,
    pub(crate) top_denied: Vec<TopJson>,
    pub(crate) top_denied_minutes: u64,
}

#[derive(Serialize)]
pub(crate) struct RowJson {
    pub(crate) name: String,
    pub(crate) totals: [u64; OUTCOMES.len()],
    /// The last 60 complete seconds, oldest first.
    pub(crate) per_second: Vec<[u64; OUTCOMES.len()]>,
}

#[derive(Serialize)]
pub(crate) struct TopJson {
    pub(crate) hash: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) key: Option<String>,
    pub(crate) denied: u64,
    pub(crate) at_least: u64,
}
