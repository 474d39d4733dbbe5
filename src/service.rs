//! [`RateLimit`]: the service that decides before forwarding.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use tower_service::Service;

use crate::body::ResponseBody;
use crate::future::ResponseFuture;
use crate::headers::{write_retry_after, HeaderWriter};
use crate::key::{KeyError, KeyExtractor};
use crate::layer::OnRejection;
use crate::observe::{DecisionEvent, DecisionSource, OnDecision};
use crate::reject::{error_response, problem_response, Rejection};
use crate::store::{MemoryStore, Store, StoreError};
use crate::throttle::Throttle;
use crate::weight::Weigher;
use crate::{Decision, Decisions, FailurePolicy, Outcome, Policies, Policy, RequestHead};

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
    pub(crate) store: S,
    pub(crate) weigher: Arc<dyn Weigher>,
    pub(crate) policies: Policies,
    pub(crate) headers: HeaderWriter,
    pub(crate) on_rejection: Option<OnRejection>,
    pub(crate) on_store_error: FailurePolicy,
    pub(crate) fallback: (MemoryStore<K::Key>, Policies),
    pub(crate) on_decision: Option<OnDecision<K::Key>>,
    pub(crate) skip: Option<Skip>,
    pub(crate) resolve: Option<Resolve<K::Key>>,
    pub(crate) shadow: bool,
    pub(crate) expose_decision: bool,
    /// The body refusing the layer's single policy, built on first use.
    pub(crate) refusal: OnceLock<Bytes>,
    #[cfg(feature = "metrics")]
    pub(crate) metrics: std::sync::OnceLock<crate::observe::Metrics>,
}

/// A predicate exempting requests from the limit; see `RateLimitLayer::skip`.
pub(crate) type Skip = Arc<dyn Fn(&RequestHead<'_>) -> bool + Send + Sync>;
/// Picks the policies per key; see `RateLimitLayer::policy_for`.
pub(crate) type Resolve<Key> =
    Arc<dyn Fn(&Key, &RequestHead<'_>) -> Option<Policies> + Send + Sync>;

/// What a request is charged, and what its answer depends on.
pub(crate) struct Charge<Key> {
    pub(crate) key: Key,
    pub(crate) cost: u64,
    /// The policies for this key, when they are not the layer's.
    pub(crate) policies: Option<Policies>,
    /// When the request arrived, if anyone reads the decision latency.
    pub(crate) started: Option<Instant>,
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

static STORE_ERRORS: Throttle = Throttle::new(Duration::from_secs(10));
static KEY_ERRORS: Throttle = Throttle::new(Duration::from_secs(10));

impl<K: KeyExtractor, S> Shared<K, S> {
    /// When to start the clock for a decision: only if someone reads the latency.
    pub(crate) fn start_timer(&self) -> Option<Instant> {
        (self.on_decision.is_some() || cfg!(feature = "metrics")).then(Instant::now)
    }

    /// Turns the store's answer into what happens to the request (with these headers).
    pub(crate) fn verdict(
        &self,
        decided: Result<Decisions, StoreError>,
        charge: &Charge<K::Key>,
        headers: &HeaderMap,
    ) -> Verdict {
        let (decisions, source) = self.settle(decided, charge);
        tracing::trace!(
            cost = charge.cost,
            ?source,
            ?decisions,
            "rate-limit decision"
        );
        let policies = charge.policies.as_ref().unwrap_or(&self.policies);
        let policy = &policies[decisions.as_ref().map_or(0, Decisions::decisive)];
        let decision = decisions.as_ref().map(Decisions::summary);
        if let Some(started) = charge.started {
            self.observe(&DecisionEvent {
                key: &charge.key,
                cost: charge.cost,
                policy,
                decision: decision.as_ref(),
                policies,
                decisions: decisions.as_ref(),
                source,
                latency: started.elapsed(),
            });
        }
        let (Some(decisions), Some(decision)) = (decisions, decision) else {
            return match self.on_store_error {
                FailurePolicy::Open => Verdict::Forward(None),
                _ => Verdict::Answer(error_response(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the rate-limit store is unavailable",
                    is_grpc(headers),
                )),
            };
        };
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
        let rejection = Rejection {
            decision: &decision,
            policy,
            decisions: &report.decisions,
            policies,
            cost: charge.cost,
            grpc: is_grpc(headers),
        };
        let mut response = self.refusal(&rejection, &report);
        self.write_headers(response.headers_mut(), &report);
        write_retry_after(response.headers_mut(), &decision);
        Verdict::Answer(response)
    }

    /// The store's decisions, or when it failed, what the failure policy makes of that.
    fn settle(
        &self,
        decided: Result<Decisions, StoreError>,
        charge: &Charge<K::Key>,
    ) -> (Option<Decisions>, DecisionSource) {
        let error = match decided {
            Ok(decisions) => return (Some(decisions), DecisionSource::Store),
            Err(error) => error,
        };
        if let Some(suppressed) = STORE_ERRORS.allow() {
            tracing::warn!(suppressed, policy = ?self.on_store_error, "{error}");
        }
        match self.on_store_error {
            FailurePolicy::FallbackLocal => {
                let (store, fallback) = &self.fallback;
                let fallback = charge.policies.as_ref().unwrap_or(fallback);
                let decisions = store.decide_now(&charge.key, charge.cost, fallback);
                (Some(decisions), DecisionSource::Fallback)
            }
            FailurePolicy::Open | FailurePolicy::Closed => (None, DecisionSource::Unavailable),
        }
    }

    /// Hands a decision to the metrics and the decision hook.
    fn observe(&self, event: &DecisionEvent<'_, K::Key>) {
        #[cfg(feature = "metrics")]
        self.metrics
            .get_or_init(|| crate::observe::Metrics::new(&self.policies))
            .record(event);
        if let Some(on_decision) = &self.on_decision {
            on_decision(event);
        }
    }

    /// The answer to a refused request, before the rate-limit headers.
    fn refusal(&self, rejection: &Rejection<'_>, report: &Report) -> Response<Bytes> {
        if let Some(on_rejection) = &self.on_rejection {
            return on_rejection(rejection);
        }
        let always_the_same = !rejection.grpc
            && report.policies.is_none()
            && self.policies.len() == 1
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
                policies: report.policies.as_ref().unwrap_or(&self.policies).clone(),
            });
        }
    }
}

/// Whether a request with these headers is a gRPC call (`content-type: application/grpc*`).
pub(crate) fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

fn key_error_response(error: &KeyError, grpc: bool) -> Response<Bytes> {
    if error.status().is_server_error() {
        if let Some(suppressed) = KEY_ERRORS.allow() {
            tracing::error!(suppressed, "{error}");
        }
    } else {
        tracing::debug!(status = %error.status(), "no rate-limit key: {error}");
    }
    error_response(error.status(), error.message(), grpc)
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
            return ResponseFuture::forwarding(self.inner.call(request), None, None);
        }
        let key = match shared.key.extract(&head) {
            Ok(key) => key,
            Err(error) if error.skips() => {
                return ResponseFuture::forwarding(self.inner.call(request), None, None)
            }
            Err(error) => {
                let grpc = head.is_grpc();
                return ResponseFuture::answered(key_error_response(&error, grpc));
            }
        };
        let charge = Charge {
            cost: shared.weigher.weigh(&head),
            policies: shared
                .resolve
                .as_ref()
                .and_then(|resolve| resolve(&key, &head)),
            key,
            started: shared.start_timer(),
        };
        let policies = charge.policies.as_ref().unwrap_or(&shared.policies);
        let mut decision = shared.store.decide(&charge.key, charge.cost, policies);
        // An in-process store has decided already: act now, with no clone of the service.
        let noop = &mut Context::from_waker(Waker::noop());
        let decided = match Pin::new(&mut decision).poll(noop) {
            Poll::Ready(decided) => decided,
            Poll::Pending => {
                let shared = Arc::clone(shared);
                let ready = self.take_ready();
                return ResponseFuture::deciding(decision, ready, request, charge, shared);
            }
        };
        match shared.verdict(decided, &charge, request.headers()) {
            Verdict::Forward(report) => {
                shared.admit(&mut request, report.as_ref());
                // The future needs the configuration only to write headers.
                let report = report.filter(|_| shared.headers.writes_any());
                let shared = report.is_some().then(|| Arc::clone(shared));
                ResponseFuture::forwarding(self.inner.call(request), report, shared)
            }
            Verdict::Wait(report, wait) => {
                let (ready, shared) = (self.take_ready(), Arc::clone(&self.shared));
                ResponseFuture::waiting(wait, ready, request, report, shared)
            }
            Verdict::Answer(response) => {
                // The ready inner service is dropped unused, releasing what it reserved.
                drop(self.take_ready());
                ResponseFuture::answered(response)
            }
        }
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

impl<Svc: fmt::Debug, K: KeyExtractor, S> fmt::Debug for RateLimit<Svc, K, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimit")
            .field("inner", &self.inner)
            .field("policies", &self.shared.policies)
            .finish_non_exhaustive()
    }
}
