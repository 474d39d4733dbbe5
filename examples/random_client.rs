//! Sends requests at random intervals as one user and prints each answer.
//!
//! ```text
//! cargo run --example random_client -- --url http://127.0.0.1:3000/api/ping --user joe -n 20
//!     [--method GET|POST] [--max-interval-ms 500]
//! ```
//!
//! The user goes in the `x-user-id` header, so a server started with
//! `ping_upload --key header:x-user-id` limits each user separately. Each request prints
//!
//! ```text
//! user_id=joe request@14:03:07 response_status_code: 429 response: Too Many Requests
//! ```
//!
//! with the time the request was sent (UTC).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use clap::error::ErrorKind;
use clap::{CommandFactory, Parser, ValueEnum};
use http::{HeaderValue, Request, Uri};
use http_body_util::Empty;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

#[derive(Parser)]
#[command(name = "random_client", about = "Sends requests at random intervals")]
struct Args {
    /// The URL to request (http only).
    #[arg(long, default_value = "http://127.0.0.1:3000/api/ping")]
    url: Uri,
    /// The user id, sent as `x-user-id`.
    #[arg(long, default_value = "joe")]
    user: String,
    /// How many requests to send.
    #[arg(short = 'n', long = "count", default_value_t = 20)]
    count: u32,
    /// The request method.
    #[arg(long, value_enum, ignore_case = true, default_value_t = Method::Get)]
    method: Method,
    /// The longest pause between two requests, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 500)]
    max_interval_ms: u64,
}

#[derive(Clone, Copy, ValueEnum)]
enum Method {
    #[value(name = "GET")]
    Get,
    #[value(name = "POST")]
    Post,
}

/// A xorshift64 generator: plenty for jittering request times.
struct XorShift(u64);

impl XorShift {
    fn from_time() -> Self {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        Self(nanos as u64 | 1)
    }

    /// A number in `0..=max`.
    fn up_to(&mut self, max: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % max.saturating_add(1)
    }
}

/// The current UTC time of day as `HH:MM:SS`.
fn utc_time() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
        % 86_400;
    format!("{:02}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60)
}

/// `error` and its causes, outermost first.
fn causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let user = HeaderValue::from_str(&args.user).unwrap_or_else(|_| {
        Args::command()
            .error(
                ErrorKind::ValueValidation,
                "--user: not a valid header value",
            )
            .exit()
    });
    let method = match args.method {
        Method::Get => http::Method::GET,
        Method::Post => http::Method::POST,
    };
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let mut rng = XorShift::from_time();

    for i in 0..args.count {
        if i > 0 {
            let pause = rng.up_to(args.max_interval_ms);
            tokio::time::sleep(Duration::from_millis(pause)).await;
        }
        let request = Request::builder()
            .method(method.clone())
            .uri(args.url.clone())
            .header("x-user-id", user.clone())
            .body(Empty::new())
            .expect("method, URI and header are valid");
        let sent_at = utc_time();
        match client.request(request).await {
            Ok(response) => {
                let status = response.status();
                println!(
                    "user_id={} request@{sent_at} response_status_code: {} response: {}",
                    args.user,
                    status.as_u16(),
                    status.canonical_reason().unwrap_or("(unknown)"),
                );
            }
            Err(error) => {
                eprintln!("error: cannot reach {}: {}", args.url, causes(&error));
                return std::process::ExitCode::FAILURE;
            }
        }
    }
    std::process::ExitCode::SUCCESS
}
