//! The dashboard in a real headless browser (Debian's Chromium, driven by chromedriver),
//! opened with the token as the Basic password, against the demo under load: the chart draws, its totals match the server's Prometheus
//! counters, and a block and a reset clicked on the page take effect. Skipped, saying why,
//! when Chromium cannot start, except in CI (`CI` set), which installs it.
#![cfg(all(feature = "admin", feature = "metrics"))]

mod support;

#[path = "../examples/ping_upload.rs"]
#[allow(dead_code)] // the example's `main`
mod demo;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use clap::Parser;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use support::webdriver::Browser;

const TOKEN: &str = "dashboard-token-0123456789";

type Http = Client<HttpConnector, Empty<Bytes>>;

/// `GET url` with `headers`: the status, the headers and the body.
async fn get(
    client: &Http,
    url: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, http::HeaderMap, Bytes) {
    let mut request = Request::get(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = client
        .request(request.body(Empty::new()).unwrap())
        .await
        .unwrap();
    let (parts, body) = response.into_parts();
    (
        parts.status,
        parts.headers,
        body.collect().await.unwrap().to_bytes(),
    )
}

/// Polls `f` until it answers, for at most `secs` seconds.
async fn eventually<T, F: std::future::Future<Output = Option<T>>>(
    what: &str,
    secs: u64,
    mut f: impl FnMut() -> F,
) -> T {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(answer) = f().await {
            return answer;
        }
        assert!(tokio::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Counts the answers a client got.
#[derive(Debug, Default)]
struct Answers {
    ok: AtomicU64,
    limited: AtomicU64,
}

/// `user` pinging every `every` until `stop` (at most two minutes).
fn load(
    client: Http,
    url: String,
    user: &'static str,
    every: Duration,
    stop: Arc<AtomicBool>,
    answers: Arc<Answers>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        let end = tokio::time::Instant::now() + Duration::from_secs(120);
        while !stop.load(Relaxed) && tokio::time::Instant::now() < end {
            tick.tick().await;
            match get(&client, &url, &[("x-user", user)]).await.0 {
                StatusCode::OK => answers.ok.fetch_add(1, Relaxed),
                StatusCode::TOO_MANY_REQUESTS => answers.limited.fetch_add(1, Relaxed),
                other => panic!("{user}: {other}"),
            };
        }
    })
}

/// The chart's pixels of the allowed and denied colours, and the highest row each reaches.
const CHART_PIXELS: &str = r#"
const canvas = document.getElementById("chart");
const data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
const colours = { allowed: [46, 157, 79], denied: [209, 52, 58] };
const found = { height: canvas.height, allowed: [0, canvas.height], denied: [0, canvas.height] };
for (let i = 0; i < data.length; i += 4) {
  for (const [name, [r, g, b]] of Object.entries(colours)) {
    if (Math.abs(data[i] - r) < 40 && Math.abs(data[i + 1] - g) < 40 && Math.abs(data[i + 2] - b) < 40 && data[i + 3] > 200) {
      found[name][0] += 1;
      found[name][1] = Math.min(found[name][1], Math.floor(i / 4 / canvas.width));
    }
  }
}
return found;
"#;

/// Prometheus's `ratelimit_decisions_total` by outcome.
fn counters(text: &str) -> HashMap<String, u64> {
    text.lines()
        .filter_map(|line| {
            line.strip_prefix(r#"ratelimit_decisions_total{policy="default",outcome=""#)
        })
        .filter_map(|rest| {
            let (outcome, value) = rest.split_once(r#""} "#)?;
            Some((outcome.to_owned(), value.trim().parse().ok()?))
        })
        .collect()
}

fn skip(why: &str) {
    if std::env::var_os("CI").is_some() {
        panic!("CI installs Chromium, so it must start: {why}");
    }
    eprintln!("the dashboard test is skipped: Chromium cannot start here: {why}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_draws_counts_and_acts_under_load() {
    let browser = match Browser::start(1280, 900).await {
        Ok(browser) => browser,
        Err(why) => return skip(&why),
    };
    let (app, metrics, admin) = (
        support::free_port(),
        support::free_port(),
        support::free_port(),
    );
    let (app, metrics, admin) = (
        format!("127.0.0.1:{app}"),
        format!("127.0.0.1:{metrics}"),
        format!("127.0.0.1:{admin}"),
    );
    #[rustfmt::skip]
    let args = demo::Args::parse_from([
        "ping_upload", "--addr", &app, "--key", "header:x-user",
        "--limit", "10", "--period-secs", "1", "--burst", "10",
        "--metrics-addr", &metrics, "--admin-addr", &admin, "--admin-token", TOKEN,
    ]);
    tokio::spawn(demo::run(args));
    let client: Http = Client::builder(TokioExecutor::new()).build_http();
    let bearer = format!("Bearer {TOKEN}");
    let auth = [("authorization", bearer.as_str())];
    let policies = format!("http://{admin}/admin/api/policies");
    eventually("the demo serves", 10, || async {
        let ready = tokio::net::TcpStream::connect(&app).await.is_ok();
        (ready && get(&client, &policies, &auth).await.0 == StatusCode::OK).then_some(())
    })
    .await;

    // Under load: alice within her quota, bob twice over it, mallory ten times.
    let ping = format!("http://{app}/api/ping");
    let (stop, answers) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(Answers::default()),
    );
    let clients = [("alice", 200), ("bob", 50), ("mallory", 10)].map(|(user, ms)| {
        let every = Duration::from_millis(ms);
        load(
            client.clone(),
            ping.clone(),
            user,
            every,
            Arc::clone(&stop),
            Arc::clone(&answers),
        )
    });

    // The page, as an operator opens it: the token as the Basic password, which the
    // browser then sends with every request of the page.
    browser
        .goto(&format!("http://operator:{TOKEN}@{admin}/admin"))
        .await;

    // The chart draws both lines: the denials' near the top, the admissions' low.
    let attempts = AtomicU64::new(0);
    let chart = eventually("the chart draws the load", 60, || async {
        let chart = browser.run(CHART_PIXELS).await;
        let height = chart["height"].as_f64()?;
        let (allowed, denied) = (&chart["allowed"], &chart["denied"]);
        let drawn = allowed[0].as_u64()? > 60 && denied[0].as_u64()? > 60;
        let denied_top = denied[1].as_f64()? < 0.35 * height;
        let allowed_low = allowed[1].as_f64()? > 0.5 * height;
        let done = drawn && denied_top && allowed_low;
        // What the chart looks like meanwhile, every five seconds, should it never do.
        if !done && attempts.fetch_add(1, Relaxed).is_multiple_of(50) {
            eprintln!("chart so far: {chart} ({answers:?})");
        }
        done.then_some(chart)
    })
    .await;
    eprintln!("chart: {chart}");
    let listed = eventually("mallory and bob are listed", 10, || async {
        let rows = browser
            .run("return document.querySelectorAll('#top tr[data-hash]').length")
            .await;
        (rows.as_u64()? >= 2).then_some(())
    });
    listed.await;
    let png = browser.screenshot().await;
    assert!(png.starts_with(b"\x89PNG"), "a PNG");
    std::fs::write(
        format!("{}/dashboard.png", env!("CARGO_TARGET_TMPDIR")),
        &png,
    )
    .unwrap();
    if let Some(path) = std::env::var_os("DASHBOARD_SCREENSHOT") {
        std::fs::write(path, &png).unwrap();
    }

    // Load off: the page's totals come to the server's counters, which count every answer.
    stop.store(true, Relaxed);
    for client in clients {
        client.await.unwrap();
    }
    let (ok, limited) = (answers.ok.load(Relaxed), answers.limited.load(Relaxed));
    assert!(ok > 20 && limited > 100, "{ok} passed, {limited} refused");
    let exported = counters(&String::from_utf8_lossy(
        &get(&client, &format!("http://{metrics}/metrics"), &[])
            .await
            .2,
    ));
    assert_eq!((exported["allowed"], exported["denied"]), (ok, limited));
    eventually("the page shows the server's counters", 10, || async {
        let shown = browser
            .run("return Object.fromEntries([...document.querySelectorAll('[data-total]')].map((td) => [td.dataset.total, Number(td.textContent)]))")
            .await;
        let matches = ["allowed", "delayed", "denied", "too_costly", "unavailable"]
            .iter()
            .all(|outcome| shown[format!("default/{outcome}")].as_u64() == exported.get(*outcome).copied());
        matches.then_some(())
    })
    .await;

    // Block mallory from the page, then reset her, and see each take effect.
    let stats = format!("http://{admin}/admin/api/stats?raw=true");
    let stats: Value = serde_json::from_slice(&get(&client, &stats, &auth).await.2).unwrap();
    let top = stats["top_denied"].as_array().unwrap();
    let mallory = top
        .iter()
        .find(|k| k["key"] == "mallory")
        .expect("mallory among the top denied");
    let row = format!(
        "#top tr[data-hash=\"{}\"]",
        mallory["hash"].as_str().unwrap()
    );
    let acted = |action: &'static str| {
        let browser = &browser;
        async move {
            let message = browser.run("const m = document.getElementById('message'); return [m.dataset.ok, m.textContent]").await;
            let done = message[0] == "true" && message[1].as_str()?.starts_with(action);
            done.then_some(())
        }
    };
    browser.click(&format!("{row} button:last-of-type")).await;
    eventually("the block is done", 10, || acted("block")).await;
    let (status, headers, _) = get(&client, &ping, &[("x-user", "mallory")]).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(
        (590..=600).contains(&retry),
        "blocked for 600 s, not {retry}"
    );
    browser.click(&format!("{row} button:first-of-type")).await;
    eventually("the reset is done", 10, || acted("reset")).await;
    let (status, headers, _) = get(&client, &ping, &[("x-user", "mallory")]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        headers["x-ratelimit-remaining"], "9",
        "a full bucket after the reset"
    );
}
