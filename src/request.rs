//! [`RequestHead`]: the borrowed view of a request that keys and weights are read from.

use http::{Extensions, HeaderMap, Method, Request, Uri};

/// Everything of a request but its body, borrowed.
///
/// Key extractors and weighers see requests through this view, so one closure works for
/// every body type (axum, tonic and hyper each have their own).
#[derive(Clone, Copy, Debug)]
pub struct RequestHead<'a> {
    /// The request method.
    pub method: &'a Method,
    /// The request target.
    pub uri: &'a Uri,
    /// The request headers.
    pub headers: &'a HeaderMap,
    /// The request extensions (connection info, matched route, ...).
    pub extensions: &'a Extensions,
}

impl<'a> RequestHead<'a> {
    /// Borrows the head of `request`.
    pub fn of<B>(request: &'a Request<B>) -> Self {
        Self {
            method: request.method(),
            uri: request.uri(),
            headers: request.headers(),
            extensions: request.extensions(),
        }
    }

    /// Whether this is a gRPC request (`content-type: application/grpc*`).
    pub fn is_grpc(&self) -> bool {
        crate::service::is_grpc(self.headers)
    }
}
