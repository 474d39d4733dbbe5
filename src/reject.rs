//! The answers the layer gives instead of calling the service: rejections (`429`, or `413`
//! for a cost that can never pass) and errors, as `application/problem+json` (RFC 9457),
//! or as a gRPC trailers-only response for gRPC requests.

use std::fmt::Write;

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderValue, Response, StatusCode};

use crate::{Decision, Decisions, Outcome, Policies, Policy};

/// Every answer the layer gives instead of the service's is about this request at this
/// moment: no cache may keep it.
const NO_STORE: HeaderValue = HeaderValue::from_static("no-store");

const QUOTA_EXCEEDED: &str = "https://iana.org/assignments/http-problem-types#quota-exceeded";

/// A request the limiter refused, as given to a custom
/// [`on_rejection`](crate::RateLimitLayer::on_rejection) handler.
///
/// Whatever the handler returns, the layer adds the rate-limit headers and `Retry-After`.
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub struct Rejection<'a> {
    /// The decision under all policies as one ([`Decisions::summary`]; not allowed).
    pub decision: &'a Decision,
    /// The policy that refused the request for longest ([`Decisions::decisive`]).
    pub policy: &'a Policy,
    /// The decision under each policy: [`Decisions::violated`] tells which refused.
    pub decisions: &'a Decisions,
    /// Every policy the request was decided under.
    pub policies: &'a Policies,
    /// What the request would have cost.
    pub cost: u64,
    /// Whether the request is a gRPC call.
    pub grpc: bool,
}

impl Rejection<'_> {
    /// The default answer.
    ///
    /// * Not enough quota now: `429 Too Many Requests` with a problem body of type
    ///   `quota-exceeded` naming the violated policies (`violated-policies`). The wait is
    ///   in `Retry-After` and the `RateLimit` field, so the body of a policy is always the
    ///   same (and the layer builds it once).
    /// * Cost above the burst: `413 Content Too Large`: waiting would not help, so no
    ///   `Retry-After`.
    /// * gRPC: a trailers-only response with `grpc-status: 8` (`RESOURCE_EXHAUSTED`), not
    ///   an HTTP 429, which gRPC clients would report as `UNAVAILABLE`; its message tells
    ///   the wait.
    pub fn default_response(&self) -> Response<Bytes> {
        let policy = self.policy.name();
        let mut detail = String::new();
        let status = match self.decision.outcome {
            Outcome::CostExceedsBurst => {
                let _ = write!(
                    detail,
                    "this request costs {} but policy \"{policy}\" allows at most {} at once; \
                     it can never pass",
                    self.cost, self.decision.limit
                );
                StatusCode::PAYLOAD_TOO_LARGE
            }
            Outcome::Denied {
                retry_after: Some(wait),
            } => {
                let _ = write!(detail, "quota of policy \"{policy}\" exceeded");
                if self.grpc {
                    // Rounded up to the millisecond, like every wait the limiter reports.
                    let millis = wait.as_nanos().div_ceil(1_000_000);
                    let _ = write!(
                        detail,
                        "; retry in {}.{:03} s",
                        millis / 1000,
                        millis % 1000
                    );
                }
                StatusCode::TOO_MANY_REQUESTS
            }
            Outcome::Denied { retry_after: None } | Outcome::Allowed | Outcome::Delayed { .. } => {
                let _ = write!(
                    detail,
                    "quota of policy \"{policy}\" is spent and does not refill"
                );
                StatusCode::TOO_MANY_REQUESTS
            }
        };
        if self.grpc {
            return grpc_response(status, &detail);
        }
        let problem_type = if status == StatusCode::TOO_MANY_REQUESTS {
            QUOTA_EXCEEDED
        } else {
            "about:blank"
        };
        let violated: Vec<&str> = self
            .decisions
            .violated()
            .map(|index| self.policies[index].name())
            .collect();
        problem_json(status, problem_type, &detail, &violated)
    }
}

/// An error answer (no key, store down): a problem body, or a gRPC status.
pub(crate) fn error_response(status: StatusCode, detail: &str, grpc: bool) -> Response<Bytes> {
    if grpc {
        grpc_response(status, detail)
    } else {
        problem_json(status, "about:blank", detail, &[])
    }
}

/// An RFC 9457 problem document.
fn problem_json(
    status: StatusCode,
    problem_type: &str,
    detail: &str,
    violated_policies: &[&str],
) -> Response<Bytes> {
    let mut body = String::with_capacity(192 + detail.len());
    for part in [
        r#"{"type":""#,
        problem_type,
        r#"","title":""#,
        title(status),
        r#"","status":"#,
        status.as_str(),
        r#","detail":""#,
    ] {
        body.push_str(part);
    }
    push_escaped(&mut body, detail);
    body.push('"');
    if !violated_policies.is_empty() {
        // Policy names are printable ASCII: only quotes and backslashes need escaping.
        body.push_str(r#","violated-policies":["#);
        for (i, policy) in violated_policies.iter().enumerate() {
            if i > 0 {
                body.push(',');
            }
            body.push('"');
            push_escaped(&mut body, policy);
            body.push('"');
        }
        body.push(']');
    }
    body.push('}');
    problem_response(status, Bytes::from(body), 1)
}

/// Appends `text` as the inside of a JSON string: quotes and backslashes escaped, control
/// characters left out.
fn push_escaped(body: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '"' | '\\' => {
                body.push('\\');
                body.push(c);
            }
            c if c.is_control() => {}
            c => body.push(c),
        }
    }
}

/// The problem's title: the status's reason phrase, as RFC 9110 names it.
fn title(status: StatusCode) -> &'static str {
    match status {
        StatusCode::PAYLOAD_TOO_LARGE => "Content Too Large",
        status => status.canonical_reason().unwrap_or_default(),
    }
}

/// A response carrying a problem document, with room for `headers` headers.
pub(crate) fn problem_response(status: StatusCode, body: Bytes, headers: usize) -> Response<Bytes> {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    let headers_mut = response.headers_mut();
    headers_mut.reserve(headers + 1);
    headers_mut.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    headers_mut.insert(CACHE_CONTROL, NO_STORE);
    response
}

/// A gRPC trailers-only response: HTTP 200, the status in the headers, an empty body.
fn grpc_response(status: StatusCode, message: &str) -> Response<Bytes> {
    let code: u16 = match status.as_u16() {
        400 | 431 => 3,  // INVALID_ARGUMENT
        401 => 16,       // UNAUTHENTICATED
        403 => 7,        // PERMISSION_DENIED
        413 | 429 => 8,  // RESOURCE_EXHAUSTED
        500 => 13,       // INTERNAL
        502..=504 => 14, // UNAVAILABLE
        _ => 2,          // UNKNOWN
    };
    let mut encoded = String::with_capacity(message.len());
    for byte in message.bytes() {
        // grpc-message is percent-encoded UTF-8 (gRPC over HTTP/2 spec).
        if (0x20..=0x7e).contains(&byte) && byte != b'%' {
            encoded.push(char::from(byte));
        } else {
            let _ = write!(encoded, "%{byte:02X}");
        }
    }
    let mut response = Response::new(Bytes::new());
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    headers.insert(CACHE_CONTROL, NO_STORE);
    headers.insert("grpc-status", HeaderValue::from(code));
    headers.insert(
        "grpc-message",
        HeaderValue::try_from(encoded).expect("percent-encoded ascii"),
    );
    response
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::{Algorithm, Quota};

    fn rejection(outcome: Outcome, grpc: bool) -> Response<Bytes> {
        let policy = Policy::new("default", Quota::per_second(1), Algorithm::TokenBucket).unwrap();
        let decision = Decision {
            outcome,
            limit: 5,
            remaining: 0,
            reset: None,
        };
        Rejection {
            decision: &decision,
            policy: &policy,
            decisions: &decision.into(),
            policies: &policy.clone().into(),
            cost: 9,
            grpc,
        }
        .default_response()
    }

    #[test]
    fn quota_exceeded_is_a_problem_document() {
        let response = rejection(
            Outcome::Denied {
                retry_after: Some(Duration::from_millis(1500)),
            },
            false,
        );
        assert_eq!(response.status(), 429);
        assert_eq!(response.headers()[CONTENT_TYPE], "application/problem+json");
        assert_eq!(
            response.body(),
            r#"{"type":"https://iana.org/assignments/http-problem-types#quota-exceeded","title":"Too Many Requests","status":429,"detail":"quota of policy \"default\" exceeded","violated-policies":["default"]}"#
        );
    }

    #[test]
    fn cost_above_burst_is_413() {
        let response = rejection(Outcome::CostExceedsBurst, false);
        assert_eq!(response.status(), 413);
        assert_eq!(response.headers()[CACHE_CONTROL], "no-store");
        let body = std::str::from_utf8(response.body()).unwrap();
        assert!(body.contains(r#""title":"Content Too Large""#), "{body}");
        assert!(
            body.contains("costs 9") && body.contains("never pass"),
            "{body}"
        );
    }

    #[test]
    fn grpc_gets_resource_exhausted_trailers_only() {
        let response = rejection(
            Outcome::Denied {
                retry_after: Some(Duration::from_secs(2)),
            },
            true,
        );
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["grpc-status"], "8");
        assert_eq!(
            response.headers()["grpc-message"],
            "quota of policy \"default\" exceeded; retry in 2.000 s"
        );
        assert!(response.body().is_empty());
    }

    #[test]
    fn grpc_message_is_percent_encoded() {
        let response = error_response(StatusCode::SERVICE_UNAVAILABLE, "100% é", true);
        assert_eq!(response.headers()["grpc-status"], "14");
        assert_eq!(response.headers()["grpc-message"], "100%25 %C3%A9");
    }

    #[test]
    fn error_detail_is_escaped() {
        let response = error_response(StatusCode::BAD_REQUEST, "a \"b\" \\", false);
        assert_eq!(
            response.body(),
            r#"{"type":"about:blank","title":"Bad Request","status":400,"detail":"a \"b\" \\"}"#
        );
    }
}
