//! [`RateLimit`]: the service that decides before forwarding.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use tower_service::Service;

use crate::future::{store_error_response, ResponseFuture};
use crate::headers::HeaderWriter;
use crate::key::{KeyError, KeyExtractor};
use crate::layer::OnRejection;
use crate::reject::{error_response, Rejection};
use crate::store::Store;
use crate::throttle::Throttle;
use crate::weight::Weigher;
use crate::{body::ResponseBody, Decision, Policy, RequestHead};

/// Middleware that rate-limits requests to the inner service. Made by
/// [`RateLimitLayer`](crate::RateLimitLayer).
///
/// `poll_ready` only forwards to the inner service: no quota is reserved there, since a
/// request (and so a key) may never come. `call` extracts key and cost synchronously and
/// moves the ready inner service into the response future (clone-and-swap); a refused
/// request drops it unused.
pub struct RateLimit<Svc, K, S> {
    inner: Svc,
    shared: Arc<Shared<K, S>>,
}

/// Configuration shared by all clones of one layered service.
pub(crate) struct Shared<K, S> {
    pub(crate) key: K,
    pub(crate) store: S,
    pub(crate) weigher: Arc<dyn Weigher>,
    pub(crate) answer: Arc<Answer>,
}

/// What the response future needs once the store has decided.
pub(crate) struct Answer {
    pub(crate) policy: Policy,
    pub(crate) headers: HeaderWriter,
    pub(crate) on_rejection: Option<OnRejection>,
}

impl Answer {
    /// The answer to a refused request, with its headers.
    pub(crate) fn rejection(&self, decision: &Decision, cost: u64, grpc: bool) -> Response<Bytes> {
        let rejection = Rejection {
            decision,
            policy: &self.policy,
            cost,
            grpc,
        };
        let mut response = match &self.on_rejection {
            Some(on_rejection) => on_rejection(&rejection),
            None => rejection.default_response(),
        };
        self.headers.write(response.headers_mut(), decision);
        response
    }
}

static KEY_ERRORS: Throttle = Throttle::new(Duration::from_secs(10));

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

impl<Svc, K, S> RateLimit<Svc, K, S> {
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
    type Future = ResponseFuture<S::Future, Svc, ReqBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let shared = &*self.shared;
        let head = RequestHead::of(&request);
        let grpc = head.is_grpc();
        let key = match shared.key.extract(&head) {
            Ok(key) => key,
            Err(error) => return ResponseFuture::answered(key_error_response(&error, grpc)),
        };
        let cost = shared.weigher.weigh(&head);
        let mut decision = shared.store.decide(&key, cost, &shared.answer.policy);
        // An in-process store has decided already: act now, with no clone of the service.
        let noop = &mut Context::from_waker(Waker::noop());
        let response = match Pin::new(&mut decision).poll(noop) {
            Poll::Ready(Ok(decision)) if decision.is_allowed() => {
                let future = self.inner.call(request);
                return ResponseFuture::forwarding(future, decision, Arc::clone(&shared.answer));
            }
            Poll::Ready(Ok(decision)) => shared.answer.rejection(&decision, cost, grpc),
            Poll::Ready(Err(error)) => store_error_response(&error, grpc),
            Poll::Pending => {
                let fresh = self.inner.clone();
                let ready = std::mem::replace(&mut self.inner, fresh);
                let answer = Arc::clone(&shared.answer);
                return ResponseFuture::deciding(decision, ready, request, cost, grpc, answer);
            }
        };
        // Refused: the ready inner service is dropped unused, releasing what it reserved.
        let fresh = self.inner.clone();
        drop(std::mem::replace(&mut self.inner, fresh));
        ResponseFuture::answered(response)
    }
}

impl<Svc: Clone, K, S> Clone for RateLimit<Svc, K, S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<Svc: fmt::Debug, K, S> fmt::Debug for RateLimit<Svc, K, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimit")
            .field("inner", &self.inner)
            .field("policy", &self.shared.answer.policy)
            .finish_non_exhaustive()
    }
}
