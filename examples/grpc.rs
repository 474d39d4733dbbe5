//! A tonic gRPC server behind the rate limiter, and a client that calls it.
//!
//! ```text
//! cargo run --example grpc --features tonic -- [--addr 127.0.0.1:50051]
//!     [--limit N --period-secs S --burst B]
//! cargo run --example grpc --features tonic -- --client [--addr 127.0.0.1:50051]
//!     [--method ping|upload] [--calls N]
//! ```
//!
//! By default each client IP may make 1 call per second, in bursts of up to 5; `Ping`
//! costs 1 and `Upload` costs 3. The client prints each call's status code: `Ok` while
//! there is quota, then `ResourceExhausted` with the time to wait.
//!
//! The `demo.Demo` service is written by hand with tonic's building blocks, as `tonic-build`
//! would generate it from
//!
//! ```proto
//! message Text { string text = 1; }
//! service Demo {
//!   rpc Ping(Text) returns (Text);
//!   rpc Upload(Text) returns (Text);
//! }
//! ```
//!
//! so the example needs neither `protoc` nor a build script.

mod support;

use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll};

use clap::{Parser, ValueEnum};
use http::uri::PathAndQuery;
use support::{quota_flag, QuotaArgs};
use tokio::net::TcpListener;
use tonic::body::Body;
use tonic::server::{Grpc, NamedService};
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Channel, Server};
use tonic::Status;
use tonic_prost::ProstCodec;
use tower::Service;
use tower_ratelimit::store::MemoryStore;
use tower_ratelimit::{key, weight, Quota, RateLimitLayer};

/// The path of the cheap method.
pub const PING: &str = "/demo.Demo/Ping";
/// The path of the expensive method (it costs 3).
pub const UPLOAD: &str = "/demo.Demo/Upload";

/// The request and reply of both methods.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Text {
    #[prost(string, tag = "1")]
    pub text: String,
}

/// The `demo.Demo` service.
#[derive(Clone, Copy, Debug)]
pub struct Demo;

impl NamedService for Demo {
    const NAME: &'static str = "demo.Demo";
}

impl Service<http::Request<Body>> for Demo {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let reply = match request.uri().path() {
            PING => "pong",
            UPLOAD => "stored",
            _ => {
                return Box::pin(async { Ok(Status::unimplemented("no such method").into_http()) })
            }
        };
        let method = tower::service_fn(move |_: tonic::Request<Text>| async move {
            Ok::<_, Status>(tonic::Response::new(Text { text: reply.into() }))
        });
        Box::pin(async move {
            Ok(Grpc::new(ProstCodec::default())
                .unary(method, request)
                .await)
        })
    }
}

/// The rate limit: `quota` per peer IP, and an upload costs 3.
pub fn limiter(quota: Quota) -> RateLimitLayer<key::PeerIp, MemoryStore<IpAddr>> {
    RateLimitLayer::new(key::PeerIp, MemoryStore::new(), quota)
        .weight(weight::by_path([(UPLOAD, 3)]).default(1))
}

/// Serves [`Demo`] behind `limiter` on `listener`. tonic puts each connection's
/// `TcpConnectInfo` in the requests, which `key::PeerIp` reads (feature `tonic`).
pub async fn serve(
    listener: TcpListener,
    limiter: RateLimitLayer<key::PeerIp, MemoryStore<IpAddr>>,
) -> Result<(), tonic::transport::Error> {
    Server::builder()
        .layer(limiter)
        .add_service(Demo)
        .serve_with_incoming(TcpIncoming::from(listener))
        .await
}

/// A client of [`Demo`] on one HTTP/2 connection.
pub struct Client(tonic::client::Grpc<Channel>);

impl Client {
    /// Connects to the server at `addr`.
    pub async fn connect(addr: SocketAddr) -> Result<Self, tonic::transport::Error> {
        let channel = Channel::from_shared(format!("http://{addr}"))
            .expect("a socket address makes a valid URI")
            .connect()
            .await?;
        Ok(Self(tonic::client::Grpc::new(channel)))
    }

    /// Calls the method at `path` (`PING` or `UPLOAD`).
    pub async fn call(&mut self, path: &'static str) -> Result<tonic::Response<Text>, Status> {
        self.0
            .ready()
            .await
            .map_err(|error| Status::unavailable(error.to_string()))?;
        let request = tonic::Request::new(Text::default());
        let path = PathAndQuery::from_static(path);
        self.0.unary(request, path, ProstCodec::default()).await
    }
}

#[derive(Parser)]
#[command(
    name = "grpc",
    about = "A rate-limited tonic demo server, or its client"
)]
struct Args {
    /// Address to listen on (port 0 picks a free port), or, with --client, to call.
    #[arg(long, default_value = "127.0.0.1:50051")]
    addr: SocketAddr,
    #[command(flatten)]
    quota: QuotaArgs,
    /// Call the server instead of serving.
    #[arg(long)]
    client: bool,
    /// With --client: the method to call.
    #[arg(long, value_enum, default_value_t = Method::Ping)]
    method: Method,
    /// With --client: how many calls to make.
    #[arg(long, default_value_t = 7)]
    calls: u32,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Method {
    Ping,
    Upload,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    if args.client {
        let mut client = Client::connect(args.addr).await?;
        let path = match args.method {
            Method::Ping => PING,
            Method::Upload => UPLOAD,
        };
        for call in 1..=args.calls {
            match client.call(path).await {
                Ok(_) => println!("call {call} {:?}: Ok", args.method),
                Err(status) => println!(
                    "call {call} {:?}: {:?}: {}",
                    args.method,
                    status.code(),
                    status.message()
                ),
            }
        }
        return Ok(());
    }

    let quota = args
        .quota
        .quota()
        .unwrap_or_else(|error| support::fail::<Args>(quota_flag(error), error));
    let listener = TcpListener::bind(args.addr).await.unwrap_or_else(|error| {
        let message = format!("cannot listen on {}: {error}", args.addr);
        support::fail::<Args>("--addr", message)
    });
    println!("listening on http://{}", listener.local_addr()?);
    std::io::Write::flush(&mut std::io::stdout())?;
    serve(listener, limiter(quota)).await?;
    Ok(())
}
