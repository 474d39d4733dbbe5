//! With feature `metrics`, every decision is recorded through the `metrics` facade.
#![cfg(feature = "metrics")]

use std::convert::Infallible;
use std::future::Future;

use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use metrics_util::MetricKind;
use tower::{Layer, ServiceExt};
use tower_ratelimit::{key, store::MemoryStore, Quota, RateLimitLayer};

#[test]
fn decisions_are_counted_by_outcome_with_a_latency_histogram() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let layer = RateLimitLayer::new(key::Global, MemoryStore::new(), Quota::per_hour(2));
    let service = layer.layer(tower::service_fn(|_: http::Request<()>| async {
        Ok::<_, Infallible>(http::Response::new(()))
    }));
    metrics::with_local_recorder(&recorder, || {
        for _ in 0..3 {
            let mut future = std::pin::pin!(service.clone().oneshot(http::Request::new(())));
            let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
            assert!(future.as_mut().poll(&mut cx).is_ready());
        }
    });
    let mut counts = Vec::new();
    let mut latencies = 0;
    for (key, _, _, value) in snapshotter.snapshot().into_vec() {
        let labels: Vec<String> = key
            .key()
            .labels()
            .map(|l| format!("{}={}", l.key(), l.value()))
            .collect();
        match (key.kind(), value) {
            (MetricKind::Counter, DebugValue::Counter(0)) => {}
            (MetricKind::Counter, DebugValue::Counter(n)) => {
                counts.push((key.key().name().to_owned(), labels, n))
            }
            (MetricKind::Histogram, DebugValue::Histogram(values)) => {
                assert_eq!(key.key().name(), "ratelimit_decision_seconds");
                latencies += values.len();
            }
            other => panic!("unexpected metric {other:?}"),
        }
    }
    counts.sort();
    let name = "ratelimit_decisions_total".to_owned();
    let labels = |outcome: &str| vec!["policy=default".to_owned(), format!("outcome={outcome}")];
    assert_eq!(
        counts,
        [
            (name.clone(), labels("allowed"), 2),
            (name, labels("denied"), 1)
        ]
    );
    assert_eq!(latencies, 3);
}
