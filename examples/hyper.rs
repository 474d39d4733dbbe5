//! hyper without axum: a `tower::ServiceBuilder` stack behind the rate limiter, served by
//! hyper 1 one connection at a time.
//!
//! ```text
//! cargo run --example hyper -- [--addr 127.0.0.1:3000]
//! for i in 1 2 3 4 5 6; do curl -si http://127.0.0.1:3000/ | head -1; done
//! ```
//!
//! Each client IP may send 1 request per second, in bursts of up to 5.

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use clap::Parser;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tower::util::MapRequest;
use tower::ServiceBuilder;
use tower_ratelimit::{key, store::MemoryStore, Quota, RateLimitLayer};

async fn hello(_: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    Ok(Response::new(Full::from("hello\n")))
}

/// Serves `hello`, limited to `quota` per peer IP, on every connection `listener` accepts.
pub async fn serve(listener: TcpListener, quota: Quota) -> std::io::Result<()> {
    let app = ServiceBuilder::new()
        .layer(RateLimitLayer::new(key::PeerIp, MemoryStore::new(), quota))
        .service_fn(hello);
    loop {
        let (stream, peer) = listener.accept().await?;
        // `key::PeerIp` reads a `SocketAddr` from the request extensions: hyper knows
        // nothing of the connection, so put the peer address in every request it reads.
        let service = MapRequest::new(app.clone(), move |mut request: Request<Incoming>| {
            request.extensions_mut().insert(peer);
            request
        });
        tokio::spawn(async move {
            let connection = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), TowerToHyperService::new(service));
            if let Err(error) = connection.await {
                eprintln!("connection from {peer}: {error}");
            }
        });
    }
}

#[derive(Parser)]
#[command(name = "hyper", about = "A rate-limited hyper demo server")]
struct Args {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:3000")]
    addr: SocketAddr,
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let listener = TcpListener::bind(Args::parse().addr).await?;
    println!("listening on http://{}", listener.local_addr()?);
    std::io::Write::flush(&mut std::io::stdout())?;
    serve(listener, Quota::per_second(1).burst(5)).await
}
