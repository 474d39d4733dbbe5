//! [`RequestHead`]: the borrowed view of a request that keys and weights are read from.

use http::{Extensions, HeaderMap, Method, Request, Uri, Version};

/// Everything of a request but its body, borrowed.
///
/// Key extractors and weighers see requests through this view, so one closure works for
/// every body type (axum, tonic and hyper each have their own).
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub struct RequestHead<'a> {
    /// The request method.
    pub method: &'a Method,
    /// The HTTP version.
    pub version: Version,
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
            version: request.version(),
            uri: request.uri(),
            headers: request.headers(),
            extensions: request.extensions(),
        }
    }

    /// Whether this is a gRPC call: HTTP/2 with `content-type: application/grpc*`. (gRPC
    /// runs only over HTTP/2, so an HTTP/1 request asking for a gRPC answer gets the
    /// plain HTTP one: a `429` that monitoring counts and caches leave alone.)
    pub fn is_grpc(&self) -> bool {
        self.version == Version::HTTP_2
            && self
                .headers
                .get(http::header::CONTENT_TYPE)
                .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
    }
}
