//! [`RateLimit`]: the service that decides before forwarding.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use tower_service::Service;

use crate::body::ResponseBody;
use crate::future::ResponseFuture;
use crate::key::KeyExtractor;
use crate::store::Store;
use crate::verdict::{Charge, Shared, Verdict};
use crate::RequestHead;

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
            .and_then(|resolve| resolve(&key, &head))
            // Quotas changed at run time are reported as the policies applied.
            .or_else(|| shared.limiter.changed_policies());
        let cost = shared.weigher.weigh(&head);
        let limiter = &shared.limiter;
        let under = policies.as_ref().unwrap_or(limiter.policies());
        let started = if shared.reads_reports() {
            limiter.start(&key, cost, under)
        } else {
            match limiter.start_unreported(&key, cost, under) {
                Some(started) => started,
                // Passed at once, and nothing reads its decision.
                None => {
                    return ResponseFuture::forwarding(self.inner.call(request), None, None, None)
                }
            }
        };
        let charge = Charge {
            cost,
            policies,
            key: shared.refund_if.is_some().then_some(key),
        };
        // An in-process store has decided already: act now, with no clone of the service.
        let decided = match started {
            Ok(decided) => decided,
            Err(pending) => {
                let shared = Arc::clone(shared);
                let ready = self.take_ready();
                return ResponseFuture::deciding(pending.into(), ready, request, charge, shared);
            }
        };
        match shared.verdict(decided, &charge, &head) {
            Verdict::Forward(report) => {
                shared.admit(&mut request, report.as_ref());
                // Only a layer that refunds by response kept the key.
                let refund = match charge.key {
                    Some(_) => charge.refund(report.as_ref()),
                    None => None,
                };
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
