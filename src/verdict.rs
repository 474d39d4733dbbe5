//! What happens to a request once its decision is known: the layer's configuration as
//! its services share it, the verdict (forward, wait, answer), the refusal, the headers,
//! and refunds by response.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};

use crate::headers::{write_retry_after, HeaderWriter};
use crate::key::{KeyError, KeyExtractor};
use crate::reject::{error_response, problem_response, Rejection};
use crate::store::{Store, StoreError};
use crate::throttle::Throttle;
use crate::weight::Weigher;
use crate::{Decision, Decisions, FailurePolicy, Limiter, Outcome, Policies, Policy, RequestHead};

/// A custom rejection answer; see `RateLimitLayer::on_rejection`.
pub(crate) type OnRejection = Arc<dyn Fn(&Rejection<'_>) -> Response<Bytes> + Send + Sync>;

/// Configuration shared by all clones of one layered service.
pub(crate) struct Shared<K: KeyExtractor, S> {
    pub(crate) key: K,
    pub(crate) limiter: Limiter<K::Key, S>,
    pub(crate) weigher: Arc<dyn Weigher>,
    pub(crate) headers: HeaderWriter,
    pub(crate) on_rejection: Option<OnRejection>,
    pub(crate) skip: Option<Skip>,
    pub(crate) resolve: Option<Resolve<K::Key>>,
    pub(crate) refund_if: Option<RefundIf>,
    pub(crate) shadow: bool,
    pub(crate) expose_decision: bool,
    /// The body refusing the layer's single policy, built on first use.
    pub(crate) refusal: OnceLock<Bytes>,
    /// Configuration errors (no key) are logged at most once per interval, per layer.
    pub(crate) key_errors: Throttle,
}

/// A predicate exempting requests from the limit; see `RateLimitLayer::skip`.
pub(crate) type Skip = Arc<dyn Fn(&RequestHead<'_>) -> bool + Send + Sync>;
/// Picks the policies per key; see `RateLimitLayer::policy_for`.
pub(crate) type Resolve<Key> =
    Arc<dyn Fn(&Key, &RequestHead<'_>) -> Option<Policies> + Send + Sync>;
/// Which responses give their request's charge back; see `RateLimitLayer::refund_if`.
pub(crate) type RefundIf = Arc<dyn Fn(StatusCode, &HeaderMap) -> bool + Send + Sync>;

/// What a request is charged, and what its answer depends on.
pub(crate) struct Charge<Key> {
    pub(crate) cost: u64,
    /// The policies for this key, when they are not the layer's.
    pub(crate) policies: Option<Policies>,
    /// The key, kept only when a response may refund the charge.
    pub(crate) key: Option<Key>,
}

/// A charge that the response may give back.
pub(crate) struct Refund<Key> {
    key: Key,
    cost: u64,
    policies: Option<Policies>,
}

/// The decisions and the policies they were made under (`None`: the layer's).
#[derive(Clone, Debug)]
pub(crate) struct Report {
    pub(crate) decisions: Decisions,
    pub(crate) policies: Option<Policies>,
}

/// What to do with a request once its decision is known.
pub(crate) enum Verdict {
    /// Forward it; put the decision (if any) in the response headers.
    Forward(Option<Report>),
    /// Forward it once its slot comes, after this wait (the leaky-bucket shaper).
    Wait(Report, Duration),
    /// Answer it with this response.
    Answer(Response<Bytes>),
}

/// The decision for the current request, in its extensions when
/// [`RateLimitLayer::expose_decision`](crate::RateLimitLayer::expose_decision) is on.
///
/// ```
/// use axum::Extension;
/// use tower_ratelimit::RateLimitInfo;
///
/// async fn handler(Extension(info): Extension<RateLimitInfo>) -> String {
///     format!("{} left under {}", info.decision().remaining, info.policy().name())
/// }
/// ```
#[derive(Clone, Debug)]
pub struct RateLimitInfo {
    /// The decisions that let the request through, one per policy.
    pub decisions: Decisions,
    /// The policies they were made under.
    pub policies: Policies,
}

impl RateLimitInfo {
    /// The decisions as one ([`Decisions::summary`]).
    pub fn decision(&self) -> Decision {
        self.decisions.summary()
    }

    /// The policy with the least quota left ([`Decisions::decisive`]).
    pub fn policy(&self) -> &Policy {
        &self.policies[self.decisions.decisive()]
    }
}

impl<K: KeyExtractor, S: Store<K::Key>> Shared<K, S> {
    /// Turns the limiter's answer into what happens to the request.
    #[inline]
    pub(crate) fn verdict(
        &self,
        decided: Result<Decisions, StoreError>,
        charge: &Charge<K::Key>,
        request: &RequestHead<'_>,
    ) -> Verdict {
        match decided {
            // Most requests pass at once: they need no summary, and a report only if read.
            Ok(decisions) if decisions.pass_at_once() => {
                let report = self.reads_reports().then(|| Report {
                    decisions,
                    policies: charge.policies.clone(),
                });
                Verdict::Forward(report)
            }
            decided => self.held_back(decided, charge, request),
        }
    }

    /// The verdict on a request that does not pass at once: delayed, refused (or let
    /// through in shadow mode), or decided by a failed store.
    #[inline(never)]
    fn held_back(
        &self,
        decided: Result<Decisions, StoreError>,
        charge: &Charge<K::Key>,
        request: &RequestHead<'_>,
    ) -> Verdict {
        let Ok(decisions) = decided else {
            return match self.limiter.failure_policy() {
                FailurePolicy::Open => Verdict::Forward(None),
                _ => Verdict::Answer(error_response(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the rate-limit store is unavailable",
                    request.is_grpc(),
                )),
            };
        };
        let decision = decisions.summary();
        let report = Report {
            decisions,
            policies: charge.policies.clone(),
        };
        match decision.outcome {
            Outcome::Allowed => return Verdict::Forward(Some(report)),
            Outcome::Delayed { wait } => return Verdict::Wait(report, wait),
            Outcome::Denied { .. } | Outcome::CostExceedsBurst if self.shadow => {
                let cost = charge.cost;
                tracing::debug!(cost, outcome = ?decision.outcome, "shadow mode: would refuse");
                return Verdict::Forward(Some(report));
            }
            Outcome::Denied { .. } | Outcome::CostExceedsBurst => {}
        }
        let policies = charge.policies.as_ref().unwrap_or(self.limiter.policies());
        let rejection = Rejection {
            decision: &decision,
            policy: &policies[report.decisions.decisive()],
            decisions: &report.decisions,
            policies,
            cost: charge.cost,
            // Only a refusal asks: most requests never read the content type.
            grpc: request.is_grpc(),
        };
        let mut response = self.refusal(&rejection, &report);
        self.write_headers(response.headers_mut(), &report);
        write_retry_after(response.headers_mut(), &decision);
        Verdict::Answer(response)
    }

    /// Whether anything reads a passing request's decisions: its headers, its extensions
    /// or a refund by response.
    pub(crate) fn reads_reports(&self) -> bool {
        self.headers.writes_any() || self.expose_decision || self.refund_if.is_some()
    }

    /// Gives a charge back if its response asks for it, without delaying the response: an
    /// in-process store refunds at once, another in a task of its own, whose failure is
    /// logged and counted (and never retried: the refund may have been applied).
    pub(crate) fn settle_response(
        &self,
        refund: Refund<K::Key>,
        status: StatusCode,
        headers: &HeaderMap,
    ) {
        if !self
            .refund_if
            .as_ref()
            .is_some_and(|refund_if| refund_if(status, headers))
        {
            return;
        }
        let mut future =
            self.limiter
                .refund_under(&refund.key, refund.cost, refund.policies.as_ref());
        let noop = &mut Context::from_waker(Waker::noop());
        match Pin::new(&mut future).poll(noop) {
            Poll::Ready(done) => log_refund(done),
            Poll::Pending => drop(tokio::spawn(async move { log_refund(future.await) })),
        }
    }

    /// The answer to a refused request, before the rate-limit headers.
    fn refusal(&self, rejection: &Rejection<'_>, report: &Report) -> Response<Bytes> {
        if let Some(on_rejection) = &self.on_rejection {
            return on_rejection(rejection);
        }
        let always_the_same = !rejection.grpc
            && report.policies.is_none()
            && self.limiter.policies().len() == 1
            && matches!(rejection.decision.outcome, Outcome::Denied { .. });
        if !always_the_same {
            return rejection.default_response();
        }
        // The layer's one policy refused: the body is built once.
        let body = self
            .refusal
            .get_or_init(|| rejection.default_response().into_body());
        // Content type, Retry-After and perhaps the five rate-limit headers.
        let headers = if self.headers.writes_any() { 7 } else { 2 };
        problem_response(StatusCode::TOO_MANY_REQUESTS, body.clone(), headers)
    }

    /// Adds the rate-limit headers for `report`.
    pub(crate) fn write_headers(&self, headers: &mut HeaderMap, report: &Report) {
        match &report.policies {
            None => self.headers.write(headers, &report.decisions),
            Some(policies) => self
                .headers
                .for_policies(policies)
                .write(headers, &report.decisions),
        }
    }

    /// Readies a request that passes: puts its decision in the extensions if asked to.
    #[inline]
    pub(crate) fn admit<B>(&self, request: &mut Request<B>, report: Option<&Report>) {
        if let (true, Some(report)) = (self.expose_decision, report) {
            request.extensions_mut().insert(RateLimitInfo {
                decisions: report.decisions.clone(),
                policies: report
                    .policies
                    .as_ref()
                    .unwrap_or(self.limiter.policies())
                    .clone(),
            });
        }
    }
}

/// A refund's outcome, logged and counted if it failed.
fn log_refund(done: Result<Decisions, StoreError>) {
    if let Err(error) = done {
        tracing::warn!("refund by response failed: {error}");
        #[cfg(feature = "metrics")]
        metrics::counter!("ratelimit_refund_failures_total").increment(1);
    }
}

impl<K: KeyExtractor, S> Shared<K, S> {
    pub(crate) fn key_error_response(&self, error: &KeyError, grpc: bool) -> Response<Bytes> {
        if error.status().is_server_error() {
            if let Some(suppressed) = self.key_errors.allow() {
                tracing::error!(suppressed, "{error}");
            }
        } else {
            tracing::debug!(status = %error.status(), "no rate-limit key: {error}");
        }
        error_response(error.status(), error.message(), grpc)
    }
}

impl<Key> Charge<Key> {
    /// What the response may give back: the charge of a request that passed (only kept
    /// when the layer refunds by response).
    #[inline]
    pub(crate) fn refund(self, report: Option<&Report>) -> Option<Box<Refund<Key>>> {
        let key = self.key?;
        let passed = report.is_some_and(|report| report.decisions.is_allowed());
        (passed && self.cost > 0).then(|| {
            Box::new(Refund {
                key,
                cost: self.cost,
                policies: self.policies,
            })
        })
    }
}
