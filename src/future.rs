//! [`ResponseFuture`]: deciding, then forwarding or answering.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use pin_project_lite::pin_project;
use tokio::time::Sleep;
use tower_service::Service;

use crate::body::ResponseBody;
use crate::key::KeyExtractor;
use crate::limiter::Check;
use crate::store::Store;
use crate::verdict::{Charge, Refund, Report, Shared, Verdict};

pin_project! {
    /// The response future of [`RateLimit`](crate::RateLimit): waits for the store's
    /// decision (when the store answers asynchronously), then forwards the request to the
    /// inner service or answers it.
    pub struct ResponseFuture<Svc, ReqBody, K, S>
    where
        Svc: Service<Request<ReqBody>>,
        K: KeyExtractor,
        S: Store<K::Key>,
    {
        #[pin]
        state: State<Check<K::Key, S>, Svc, ReqBody, Svc::Future, K::Key>,
        shared: Option<Arc<Shared<K, S>>>,
        // The charge the response may give back.
        refund: Option<Box<Refund<K::Key>>>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<D, Svc, ReqBody, F, Key> {
        // The store is deciding; the ready inner service waits with the request. Boxed,
        // like the next state, so that in-process decisions keep the future small.
        Deciding {
            decision: D,
            pending: Option<Box<(Svc, Request<ReqBody>, Charge<Key>)>>,
        },
        // The request passed but waits for its slot (the leaky-bucket shaper).
        Waiting {
            sleep: Pin<Box<Sleep>>,
            ready: Option<Box<(Svc, Request<ReqBody>)>>,
            report: Option<Report>,
        },
        // The request passed; its decision goes into the response headers.
        Forwarding {
            #[pin]
            future: F,
            report: Option<Report>,
        },
        // The layer answered without the inner service.
        Answered {
            response: Option<Response<Bytes>>,
        },
    }
}

impl<Svc, ReqBody, K, S> ResponseFuture<Svc, ReqBody, K, S>
where
    Svc: Service<Request<ReqBody>>,
    K: KeyExtractor,
    S: Store<K::Key>,
{
    pub(crate) fn deciding(
        decision: Check<K::Key, S>,
        ready: Svc,
        request: Request<ReqBody>,
        charge: Charge<K::Key>,
        shared: Arc<Shared<K, S>>,
    ) -> Self {
        Self {
            state: State::Deciding {
                decision,
                pending: Some(Box::new((ready, request, charge))),
            },
            shared: Some(shared),
            refund: None,
        }
    }

    /// Forwarding, with the decision to report in the headers (`None`: no headers) and
    /// the charge the response may give back.
    pub(crate) fn forwarding(
        future: Svc::Future,
        report: Option<Report>,
        shared: Option<Arc<Shared<K, S>>>,
        refund: Option<Box<Refund<K::Key>>>,
    ) -> Self {
        Self {
            state: State::Forwarding { future, report },
            shared,
            refund,
        }
    }

    pub(crate) fn waiting(
        wait: Duration,
        ready: Svc,
        request: Request<ReqBody>,
        report: Report,
        shared: Arc<Shared<K, S>>,
        refund: Option<Box<Refund<K::Key>>>,
    ) -> Self {
        Self {
            state: State::Waiting {
                sleep: Box::pin(tokio::time::sleep(wait)),
                ready: Some(Box::new((ready, request))),
                report: Some(report),
            },
            shared: Some(shared),
            refund,
        }
    }

    pub(crate) fn answered(response: Response<Bytes>) -> Self {
        Self {
            state: State::Answered {
                response: Some(response),
            },
            shared: None,
            refund: None,
        }
    }
}

impl<Svc, ReqBody, ResBody, K, S> Future for ResponseFuture<Svc, ReqBody, K, S>
where
    Svc: Service<Request<ReqBody>, Response = Response<ResBody>>,
    K: KeyExtractor,
    S: Store<K::Key>,
{
    type Output = Result<Response<ResponseBody<ResBody>>, Svc::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            let next = match this.state.as_mut().project() {
                StateProj::Deciding { decision, pending } => {
                    let decided = ready!(Pin::new(decision).poll(cx));
                    let shared = this.shared.as_ref().expect("set while deciding");
                    let (mut inner, mut request, charge) = *pending
                        .take()
                        .expect("ResponseFuture polled after completion");
                    match shared.verdict(decided, &charge, &crate::RequestHead::of(&request)) {
                        Verdict::Forward(report) => {
                            shared.admit(&mut request, report.as_ref());
                            *this.refund = charge.refund(report.as_ref());
                            State::Forwarding {
                                future: inner.call(request),
                                report,
                            }
                        }
                        Verdict::Wait(report, wait) => {
                            *this.refund = charge.refund(Some(&report));
                            State::Waiting {
                                sleep: Box::pin(tokio::time::sleep(wait)),
                                ready: Some(Box::new((inner, request))),
                                report: Some(report),
                            }
                        }
                        // The ready inner service is dropped unused.
                        Verdict::Answer(response) => State::Answered {
                            response: Some(response),
                        },
                    }
                }
                StateProj::Waiting {
                    sleep,
                    ready,
                    report,
                } => {
                    ready!(sleep.as_mut().poll(cx));
                    let (mut inner, mut request) = *ready
                        .take()
                        .expect("ResponseFuture polled after completion");
                    let report = report.take();
                    if let Some(shared) = this.shared {
                        shared.admit(&mut request, report.as_ref());
                    }
                    State::Forwarding {
                        future: inner.call(request),
                        report,
                    }
                }
                StateProj::Forwarding { future, report } => {
                    let Some(shared) = this.shared else {
                        // Nothing to add: the response is moved once, into its new body.
                        return future
                            .poll(cx)
                            .map_ok(|response| response.map(ResponseBody::inner));
                    };
                    let mut response = ready!(future.poll(cx))?;
                    if let Some(refund) = this.refund.take() {
                        let (status, headers) = (response.status(), response.headers());
                        shared.settle_response(*refund, status, headers);
                    }
                    if let Some(report) = report.take() {
                        shared.write_headers(response.headers_mut(), &report);
                    }
                    return Poll::Ready(Ok(response.map(ResponseBody::inner)));
                }
                StateProj::Answered { response } => {
                    let response = response
                        .take()
                        .expect("ResponseFuture polled after completion");
                    return Poll::Ready(Ok(response.map(ResponseBody::answer)));
                }
            };
            this.state.set(next);
        }
    }
}
