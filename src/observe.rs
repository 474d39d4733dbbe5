//! Seeing what the limiter decides: [`DecisionEvent`]s for a decision hook, and (feature
//! `metrics`) the standard counters and a latency histogram.

use std::sync::Arc;
use std::time::Duration;

use crate::{Decision, Decisions, Outcome, Policies, Policy};

/// A hook called once per decided request; see
/// [`RateLimitLayer::on_decision`](crate::RateLimitLayer::on_decision).
pub(crate) type OnDecision<Key> = Arc<dyn Fn(&DecisionEvent<'_, Key>) + Send + Sync>;

/// One decision, as a decision hook sees it. Feed it to `metrics`, OpenTelemetry or logs.
#[derive(Debug)]
#[non_exhaustive]
pub struct DecisionEvent<'a, Key> {
    /// The key the request was charged to.
    pub key: &'a Key,
    /// What the request cost.
    pub cost: u64,
    /// The policy that decided it: the [decisive](Decisions::decisive) one of
    /// [`policies`](Self::policies).
    pub policy: &'a Policy,
    /// The decision under all policies as one ([`Decisions::summary`]), or `None` when
    /// the store failed and no decision was made (the request was let through or answered
    /// `503`, per the [`FailurePolicy`](crate::FailurePolicy)).
    pub decision: Option<&'a Decision>,
    /// Every policy the request was decided under.
    pub policies: &'a Policies,
    /// The decision under each of them, when there was one.
    pub decisions: Option<&'a Decisions>,
    /// Who decided.
    pub source: DecisionSource,
    /// Why the store could not decide, when it failed (the fallback or the failure policy
    /// answered instead).
    pub error: Option<&'a crate::store::StoreError>,
    /// Time from the request's arrival at the layer to the decision.
    pub latency: Duration,
}

/// Who decided a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecisionSource {
    /// The layer's store.
    Store,
    /// The in-process fallback, because the store failed.
    Fallback,
    /// Nobody: the store failed and the failure policy let the request through or refused it.
    Unavailable,
}

/// The outcome labels, in the order of [`outcome_index`].
pub(crate) const OUTCOMES: [&str; 5] =
    ["allowed", "delayed", "denied", "too_costly", "unavailable"];

/// A decision's place in [`OUTCOMES`] (`None`: unavailable).
pub(crate) fn outcome_index(decision: Option<&Decision>) -> usize {
    match decision.map(|decision| decision.outcome) {
        Some(Outcome::Allowed) => 0,
        Some(Outcome::Delayed { .. }) => 1,
        Some(Outcome::Denied { .. }) => 2,
        Some(Outcome::CostExceedsBurst) => 3,
        None => 4,
    }
}

impl<Key> DecisionEvent<'_, Key> {
    /// `allowed`, `delayed`, `denied`, `too_costly` or `unavailable`: a label for counters.
    pub fn outcome_label(&self) -> &'static str {
        OUTCOMES[outcome_index(self.decision)]
    }
}

/// The `metrics` handles of one layer, registered with the recorder on first use:
/// `ratelimit_decisions_total{policy, outcome}`, `ratelimit_fallback_total{policy}` and
/// the histogram `ratelimit_decision_seconds{policy, source}`.
#[cfg(feature = "metrics")]
pub(crate) struct Metrics {
    /// By outcome, in the order of [`OUTCOMES`].
    decisions: [metrics::Counter; 5],
    fallbacks: metrics::Counter,
    /// By source: store, fallback, unavailable.
    latency: [metrics::Histogram; 3],
    /// Store failures by kind, in the order of `StoreErrorKind::ALL`.
    errors: [metrics::Counter; crate::store::StoreErrorKind::ALL.len()],
}

#[cfg(feature = "metrics")]
impl Metrics {
    /// Handles labelled with the policies' names, joined by commas.
    pub(crate) fn new(policies: &Policies) -> Self {
        let names: Vec<&str> = policies.iter().map(Policy::name).collect();
        let policy = names.join(",");
        let decisions = OUTCOMES.map(|outcome| {
            metrics::counter!(
                "ratelimit_decisions_total",
                "policy" => policy.clone(),
                "outcome" => outcome
            )
        });
        let latency = ["store", "fallback", "unavailable"].map(|source| {
            metrics::histogram!(
                "ratelimit_decision_seconds",
                "policy" => policy.clone(),
                "source" => source
            )
        });
        let errors = crate::store::StoreErrorKind::ALL.map(|kind| {
            metrics::counter!(
                "ratelimit_store_errors_total",
                "policy" => policy.clone(),
                "kind" => kind.as_str()
            )
        });
        Self {
            decisions,
            fallbacks: metrics::counter!("ratelimit_fallback_total", "policy" => policy),
            latency,
            errors,
        }
    }

    pub(crate) fn record<Key>(&self, event: &DecisionEvent<'_, Key>) {
        self.decisions[outcome_index(event.decision)].increment(1);
        if let Some(error) = event.error {
            // `ALL` lists the kinds in their declaration order.
            self.errors[error.kind() as usize].increment(1);
        }
        let source = match event.source {
            DecisionSource::Store => 0,
            DecisionSource::Fallback => {
                self.fallbacks.increment(1);
                1
            }
            DecisionSource::Unavailable => 2,
        };
        self.latency[source].record(event.latency.as_secs_f64());
    }
}
