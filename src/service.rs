//! [`RateLimit`]: the service that decides before forwarding.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use tower_service::Service;

use crate::body::ResponseBody;
use crate::future::ResponseFuture;
use crate::headers::{write_retry_after, HeaderWriter};
use crate::key::{KeyError, KeyExtractor};
use crate::layer::OnRejection;
use crate::reject::{error_response, problem_response, Rejection};
use crate::store::{Store, StoreError};
use crate::throttle::Throttle;
use crate::weight::Weigher;
use crate::{Decision, Decisions, FailurePolicy, Limiter, Outcome, Policies, Policy, RequestHead};

/// Middleware that rate-limits requests to the inner service. Made by
/// [`RateLimitLayer`](crate::RateLimitLayer).
///
/// `poll_ready` only forwards to the inner service: no quota is reserved there, since a
/// request (and so a key) may never come. `call` extracts key and cost synchronously. An
/// in-process store has decided by then, and the request is forwarded or answered at once;
/// for a store that answers later, the ready inner service moves into the response future
/// (clone-and-swap). A refused request drops the ready inner service unused.
pub struct RateLimit<Svc, K: KeyExtractor, S> {
    inner: Svc,
    shared: Arc<Shared<K, S>>,
}

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
    pub(crate) fn verdict(
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
    fn key_error_response(&self, error: &KeyError, grpc: bool) -> Response<Bytes> {
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

impl<Svc, K: KeyExtractor, S> RateLimit<Svc, K, S> {
    pub(crate) fn new(inner: Svc, shared: Arc<Shared<K, S>>) -> Self {
        Self { inner, shared }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &Svc {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut Svc {
        &mut self.inner
    }

    /// Consumes the middleware, returning the inner service.
    pub fn into_inner(self) -> Svc {
        self.inner
    }
}

impl<Svc, K, S, ReqBody, ResBody> Service<Request<ReqBody>> for RateLimit<Svc, K, S>
where
    Svc: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone,
    K: KeyExtractor,
    S: Store<K::Key>,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = Svc::Error;
    type Future = ResponseFuture<Svc, ReqBody, K, S>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        let shared = &self.shared;
        let head = RequestHead::of(&request);
        if shared.skip.as_ref().is_some_and(|skip| skip(&head)) {
            return ResponseFuture::forwarding(self.inner.call(request), None, None, None);
        }
        let key = match shared.key.extract(&head) {
            Ok(key) => key,
            Err(error) if error.skips() => {
                return ResponseFuture::forwarding(self.inner.call(request), None, None, None)
            }
            Err(error) => {
                let response = shared.key_error_response(&error, head.is_grpc());
                // The ready inner service is dropped unused, releasing what it reserved.
                drop(self.take_ready());
                return ResponseFuture::answered(response);
            }
        };
        let policies = shared
            .resolve
            .as_ref()
            .and_then(|resolve| resolve(&key, &head));
        let cost = shared.weigher.weigh(&head);
        let mut check = shared.limiter.check_under(&key, cost, policies.as_ref());
        let charge = Charge {
            cost,
            policies,
            key: shared.refund_if.is_some().then_some(key),
        };
        // An in-process store has decided already: act now, with no clone of the service.
        let decided = match check.ready() {
            Some(decided) => decided,
            None => {
                let shared = Arc::clone(shared);
                let ready = self.take_ready();
                return ResponseFuture::deciding(check, ready, request, charge, shared);
            }
        };
        match shared.verdict(decided, &charge, &RequestHead::of(&request)) {
            Verdict::Forward(report) => {
                shared.admit(&mut request, report.as_ref());
                let refund = charge.refund(report.as_ref());
                // The future needs the configuration only to write headers or refund.
                let report = report.filter(|_| shared.headers.writes_any());
                let needed = report.is_some() || refund.is_some();
                let shared = needed.then(|| Arc::clone(shared));
                ResponseFuture::forwarding(self.inner.call(request), report, shared, refund)
            }
            Verdict::Wait(report, wait) => {
                let refund = charge.refund(Some(&report));
                let (ready, shared) = (self.take_ready(), Arc::clone(&self.shared));
                ResponseFuture::waiting(wait, ready, request, report, shared, refund)
            }
            Verdict::Answer(response) => {
                // The ready inner service is dropped unused, releasing what it reserved.
                drop(self.take_ready());
                ResponseFuture::answered(response)
            }
        }
    }
}

impl<Key> Charge<Key> {
    /// What the response may give back: the charge of a request that passed (only kept
    /// when the layer refunds by response).
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

impl<Svc: Clone, K: KeyExtractor, S> RateLimit<Svc, K, S> {
    /// Clone-and-swap: takes the ready inner service, leaving a fresh clone in its place.
    fn take_ready(&mut self) -> Svc {
        let fresh = self.inner.clone();
        std::mem::replace(&mut self.inner, fresh)
    }
}

impl<Svc: Clone, K: KeyExtractor, S> Clone for RateLimit<Svc, K, S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<Svc: fmt::Debug, K: KeyExtractor, S: fmt::Debug> fmt::Debug for RateLimit<Svc, K, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimit")
            .field("inner", &self.inner)
            .field("limiter", &self.shared.limiter)
            .finish_non_exhaustive()
    }
}
