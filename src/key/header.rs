//! [`Header`]: a header's value as the key.

use http::{HeaderName, HeaderValue, StatusCode};

use super::{KeyError, KeyExtractor};
use crate::RequestHead;

/// The value of a request header: API keys, user ids set by an authentication layer.
///
/// A request without the header is answered `400` (change with
/// [`missing_status`](Header::missing_status), e.g. to `401`). Values longer than
/// [`max_len`](Header::max_len) (default 256 bytes) are answered `431` so hostile
/// values cannot grow memory.
///
/// A header is only as trustworthy as whatever sets it: a client can send any value, so
/// key on headers that an authentication layer in front has verified. A request with
/// several lines of the header is answered `400`: behind a proxy that appends its own
/// line, taking the first would let the client pick its bucket. If your proxy appends
/// the value it vouches for, take that one with [`last_line`](Header::last_line).
#[derive(Clone, Debug)]
pub struct Header {
    name: HeaderName,
    missing: KeyError,
    max_len: usize,
    last_line: bool,
}

const SEVERAL_LINES: KeyError = KeyError::new(
    StatusCode::BAD_REQUEST,
    "the rate-limit key header is sent more than once",
);

impl Header {
    /// Keys requests by header `name`.
    ///
    /// # Panics
    ///
    /// If `name` is not a valid header name; [`from_name`](Self::from_name) and
    /// [`from_static`](Self::from_static) cannot fail at run time.
    pub fn new(name: &str) -> Self {
        let header = HeaderName::from_bytes(name.as_bytes());
        Self::from_name(header.unwrap_or_else(|_| panic!("invalid header name {name:?}")))
    }

    /// Keys requests by header `name`, checked when the constant is built.
    ///
    /// ```
    /// use tower_ratelimit::key::Header;
    ///
    /// let api_key = Header::from_static("x-api-key");
    /// ```
    pub const fn from_static(name: &'static str) -> Self {
        Self::from_name(HeaderName::from_static(name))
    }

    /// Keys requests by header `name`.
    pub const fn from_name(name: HeaderName) -> Self {
        Self {
            name,
            missing: KeyError::new(
                StatusCode::BAD_REQUEST,
                "the rate-limit key header is missing",
            ),
            max_len: 256,
            last_line: false,
        }
    }

    /// Answers requests without the header with `status` instead of `400`.
    pub fn missing_status(mut self, status: StatusCode) -> Self {
        self.missing = KeyError::new(status, self.missing.message);
        self
    }

    /// Answers values longer than `max_len` bytes with `431`.
    pub fn max_len(mut self, max_len: usize) -> Self {
        self.max_len = max_len;
        self
    }

    /// Of several lines of the header, keys by the last (the one your proxy appended)
    /// instead of answering `400`.
    pub fn last_line(mut self) -> Self {
        self.last_line = true;
        self
    }
}

impl KeyExtractor for Header {
    type Key = HeaderValue;

    fn namespace(&self) -> String {
        format!("header:{}", self.name)
    }

    fn extract(&self, request: &RequestHead<'_>) -> Result<HeaderValue, KeyError> {
        let mut lines = request.headers.get_all(&self.name).iter();
        let first = lines.next().ok_or(self.missing.clone())?;
        let value = match (lines.next_back(), self.last_line) {
            (None, _) => first,
            (Some(last), true) => last,
            (Some(_), false) => return Err(SEVERAL_LINES),
        };
        if value.len() > self.max_len {
            return Err(KeyError::new(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "the rate-limit key header is too long",
            ));
        }
        Ok(value.clone())
    }
}
