//! Who may use the admin router: bearer tokens, compared in constant time.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use http::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use http::{HeaderMap, HeaderValue, StatusCode};
use sha2::{Digest, Sha256};

use super::answers::problem;
use crate::throttle::Throttle;

/// The shortest token accepted, in bytes.
pub const MIN_TOKEN_LEN: usize = 16;

/// The tokens, as digests, and who each is.
pub(crate) struct Auth {
    tokens: Vec<(Arc<str>, [u8; 32])>,
    /// Refused requests are logged at most once per interval.
    refusals: Throttle,
}

/// Who made an admin request: the name of the token presented, and the peer address if
/// the server records it.
#[derive(Clone, Debug)]
pub(crate) struct Operator {
    pub(crate) who: Arc<str>,
    pub(crate) peer: Option<SocketAddr>,
}

/// A token's SHA-256: what is kept and compared, so every comparison is 32 bytes whatever
/// the token's length.
pub(crate) fn digest(token: &[u8]) -> [u8; 32] {
    Sha256::digest(token).into()
}

/// Whether two digests are equal, in a time that does not depend on where they differ.
fn same(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let difference = a.iter().zip(b).fold(0, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(difference) == 0
}

impl Auth {
    pub(crate) fn new(tokens: Vec<(Arc<str>, [u8; 32])>) -> Self {
        Self {
            tokens,
            refusals: Throttle::new(Duration::from_secs(10)),
        }
    }

    /// The token digests.
    pub(crate) fn digests(&self) -> impl Iterator<Item = &[u8; 32]> {
        self.tokens.iter().map(|(_, digest)| digest)
    }

    /// Who presented a valid token in `headers`: `Authorization: Bearer <token>`, or HTTP
    /// Basic with the token as the password (what a browser sends for the dashboard).
    /// Every token is compared, whichever matches.
    fn operator(&self, headers: &HeaderMap) -> Option<Arc<str>> {
        let presented = presented(headers.get(AUTHORIZATION)?)?;
        let presented = digest(&presented);
        let mut who = None;
        for (name, token) in &self.tokens {
            if same(&presented, token) {
                who = Some(Arc::clone(name));
            }
        }
        who
    }
}

/// The token in an `Authorization` field.
fn presented(field: &HeaderValue) -> Option<Vec<u8>> {
    let field = field.to_str().ok()?;
    let (scheme, credentials) = field.split_once(' ')?;
    let credentials = credentials.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        return Some(credentials.as_bytes().to_vec());
    }
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(credentials)
            .ok()?;
        let colon = decoded.iter().position(|&b| b == b':')?;
        return Some(decoded[colon + 1..].to_vec());
    }
    None
}

/// Lets requests with a valid token through, with their [`Operator`] in the extensions;
/// answers the others `401`, asking for a bearer token or Basic credentials.
pub(crate) async fn require(
    State(auth): State<Arc<Auth>>,
    mut request: Request,
    next: Next,
) -> Response {
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(peer)| *peer);
    let Some(who) = auth.operator(request.headers()) else {
        if let Some(suppressed) = auth.refusals.allow() {
            let path = request.uri().path();
            tracing::warn!(
                ?peer,
                path,
                suppressed,
                "admin: refused a request without a valid token"
            );
        }
        let mut response =
            problem(StatusCode::UNAUTHORIZED, "a valid admin token is needed").into_response();
        let headers = response.headers_mut();
        let realm = r#"realm="tower-ratelimit admin""#;
        headers.append(
            WWW_AUTHENTICATE,
            HeaderValue::from_str(&format!("Bearer {realm}")).expect("ascii"),
        );
        let basic = format!(r#"Basic {realm}, charset="UTF-8""#);
        headers.append(
            WWW_AUTHENTICATE,
            HeaderValue::from_str(&basic).expect("ascii"),
        );
        return response;
    };
    request.extensions_mut().insert(Operator { who, peer });
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth() -> Auth {
        Auth::new(vec![
            ("alice".into(), digest(b"alice-token-0123456789")),
            ("bob".into(), digest(b"bob-token-0123456789")),
        ])
    }

    fn who(field: &str) -> Option<String> {
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, HeaderValue::from_str(field).unwrap());
        auth().operator(&headers).map(|who| who.to_string())
    }

    #[test]
    fn tokens_name_their_operator() {
        assert_eq!(
            who("Bearer alice-token-0123456789").as_deref(),
            Some("alice")
        );
        assert_eq!(who("bearer bob-token-0123456789").as_deref(), Some("bob"));
        // Basic, with any user name: the password is the token.
        let basic = base64::engine::general_purpose::STANDARD.encode("ops:bob-token-0123456789");
        assert_eq!(who(&format!("Basic {basic}")).as_deref(), Some("bob"));
    }

    #[test]
    fn anything_else_is_no_one() {
        for field in [
            "Bearer alice-token-012345678",
            "Bearer alice-token-01234567890",
            "Bearer ",
            "alice-token-0123456789",
            "Token alice-token-0123456789",
            "Basic !!!",
            "Basic YWxpY2UtdG9rZW4tMDEyMzQ1Njc4OQ==",
        ] {
            assert_eq!(who(field), None, "{field}");
        }
        assert!(auth().operator(&HeaderMap::new()).is_none());
    }
}
