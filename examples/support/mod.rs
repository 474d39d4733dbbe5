//! What the demo servers share: the quota flags, usage errors that name a flag, and
//! serving an axum app with each request's peer address.
#![allow(dead_code)] // each example uses a different part

use std::fmt::Display;
use std::net::SocketAddr;

use clap::error::ErrorKind;
use clap::CommandFactory;
use tower_ratelimit::{Quota, QuotaError};

/// `--limit N --period-secs S --burst B`, defaults 1 per second, bursts of 5.
#[derive(clap::Args)]
pub struct QuotaArgs {
    /// Requests per period.
    // Negative numbers are read as values, so the error names the flag they were given to.
    #[arg(long, default_value_t = 1, allow_negative_numbers = true)]
    pub limit: u64,
    /// The period, in seconds.
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    pub period_secs: f64,
    /// The most a client may spend at once.
    #[arg(long, default_value_t = 5, allow_negative_numbers = true)]
    pub burst: u64,
}

impl QuotaArgs {
    /// The quota the flags describe, validated.
    pub fn quota(&self) -> Result<Quota, QuotaError> {
        let quota = Quota::per_secs_f64(self.limit, self.period_secs)?.burst(self.burst);
        quota.validate().map(|()| quota)
    }
}

/// The flag behind an invalid quota.
pub fn quota_flag(error: QuotaError) -> &'static str {
    match error {
        QuotaError::ZeroBurst | QuotaError::TooLarge => "--burst",
        QuotaError::NeedsPeriod => "--algorithm",
        QuotaError::ZeroPeriod | QuotaError::InvalidPeriod => "--period-secs",
        _ => "--limit",
    }
}

/// Exits with a usage error of command `C` naming `flag`.
pub fn fail<C: CommandFactory>(flag: &str, message: impl Display) -> ! {
    C::command()
        .error(ErrorKind::ValueValidation, format!("{flag}: {message}"))
        .exit()
}

/// Serves `app` on `addr` (a failure to listen is a usage error of command `C` naming
/// `--addr`), after printing the address, with the peer address that `key::PeerIp` reads
/// in each request.
pub async fn serve<C: CommandFactory>(addr: SocketAddr, app: axum::Router) -> std::io::Result<()> {
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(listener) => listener,
        Err(error) => fail::<C>("--addr", format!("cannot listen on {addr}: {error}")),
    };
    println!("listening on http://{}", listener.local_addr()?);
    std::io::Write::flush(&mut std::io::stdout())?;
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .await
}

/// Serves `app` on `addr` in a task of its own, beside the demo's routes (a failure to
/// listen is a usage error of command `C` naming `flag`); the address it listens on.
pub async fn serve_beside<C: CommandFactory>(
    flag: &str,
    addr: SocketAddr,
    app: axum::Router,
) -> SocketAddr {
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(listener) => listener,
        Err(error) => fail::<C>(flag, format!("cannot listen on {addr}: {error}")),
    };
    let bound = listener.local_addr().unwrap_or(addr);
    tokio::spawn(async move {
        let app = app.into_make_service_with_connect_info::<SocketAddr>();
        axum::serve(listener, app).await
    });
    bound
}
