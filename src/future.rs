//! [`ResponseFuture`]: deciding, then forwarding or answering.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use pin_project_lite::pin_project;
use tower_service::Service;

use crate::body::ResponseBody;
use crate::reject::error_response;
use crate::service::Answer;
use crate::store::StoreError;
use crate::throttle::Throttle;
use crate::Decision;

pin_project! {
    /// The response future of [`RateLimit`](crate::RateLimit): waits for the store's
    /// decision (when the store answers asynchronously), then forwards the request to the
    /// inner service or answers it.
    pub struct ResponseFuture<D, Svc, ReqBody>
    where
        Svc: Service<Request<ReqBody>>,
    {
        #[pin]
        state: State<D, Svc, ReqBody, Svc::Future>,
        answer: Option<Arc<Answer>>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<D, Svc, ReqBody, F> {
        // The store is deciding; the ready inner service waits with the request.
        Deciding {
            decision: D,
            inner: Option<Svc>,
            request: Option<Request<ReqBody>>,
            cost: u64,
            grpc: bool,
        },
        // The request passed; its decision goes into the response headers.
        Forwarding {
            #[pin]
            future: F,
            decision: Option<Decision>,
        },
        // The layer answered without the inner service.
        Answered {
            response: Option<Response<Bytes>>,
        },
    }
}

static STORE_ERRORS: Throttle = Throttle::new(Duration::from_secs(10));

impl<D, Svc, ReqBody> ResponseFuture<D, Svc, ReqBody>
where
    Svc: Service<Request<ReqBody>>,
{
    pub(crate) fn deciding(
        decision: D,
        inner: Svc,
        request: Request<ReqBody>,
        cost: u64,
        grpc: bool,
        answer: Arc<Answer>,
    ) -> Self {
        Self {
            state: State::Deciding {
                decision,
                inner: Some(inner),
                request: Some(request),
                cost,
                grpc,
            },
            answer: Some(answer),
        }
    }

    pub(crate) fn forwarding(future: Svc::Future, decision: Decision, answer: Arc<Answer>) -> Self {
        Self {
            state: State::Forwarding {
                future,
                decision: Some(decision),
            },
            answer: Some(answer),
        }
    }

    pub(crate) fn answered(response: Response<Bytes>) -> Self {
        Self {
            state: State::Answered {
                response: Some(response),
            },
            answer: None,
        }
    }
}

/// The answer when the store cannot decide.
pub(crate) fn store_error_response(error: &StoreError, grpc: bool) -> Response<Bytes> {
    if let Some(suppressed) = STORE_ERRORS.allow() {
        tracing::warn!(suppressed, "{error}");
    }
    error_response(
        StatusCode::SERVICE_UNAVAILABLE,
        "the rate-limit store is unavailable",
        grpc,
    )
}

impl<D, Svc, ReqBody, ResBody> Future for ResponseFuture<D, Svc, ReqBody>
where
    D: Future<Output = Result<Decision, crate::store::StoreError>> + Unpin,
    Svc: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    type Output = Result<Response<ResponseBody<ResBody>>, Svc::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Deciding {
                    decision,
                    inner,
                    request,
                    cost,
                    grpc,
                } => {
                    let response = match ready!(Pin::new(decision).poll(cx)) {
                        Ok(decision) if decision.is_allowed() => {
                            let (mut inner, request) = inner
                                .take()
                                .zip(request.take())
                                .expect("ResponseFuture polled after completion");
                            let future = inner.call(request);
                            this.state.set(State::Forwarding {
                                future,
                                decision: Some(decision),
                            });
                            continue;
                        }
                        Ok(decision) => {
                            let answer = this.answer.as_ref().expect("set while deciding");
                            answer.rejection(&decision, *cost, *grpc)
                        }
                        Err(error) => store_error_response(&error, *grpc),
                    };
                    // The ready inner service is dropped unused.
                    inner.take();
                    this.state.set(State::Answered { response: None });
                    return Poll::Ready(Ok(response.map(ResponseBody::answer)));
                }
                StateProj::Forwarding { future, decision } => {
                    let mut response = ready!(future.poll(cx))?;
                    if let (Some(decision), Some(answer)) = (decision.take(), this.answer.as_ref())
                    {
                        answer.headers.write(response.headers_mut(), &decision);
                    }
                    return Poll::Ready(Ok(response.map(ResponseBody::inner)));
                }
                StateProj::Answered { response } => {
                    let response = response
                        .take()
                        .expect("ResponseFuture polled after completion");
                    return Poll::Ready(Ok(response.map(ResponseBody::answer)));
                }
            }
        }
    }
}
