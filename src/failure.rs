//! [`FailurePolicy`]: what the layer does when its store cannot decide.

/// What happens to a request when the store fails (unreachable, too slow, circuit open).
///
/// The in-process store never fails; this matters for shared stores such as Redis.
/// Warnings about store failures are logged at most once every 10 seconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum FailurePolicy {
    /// Let the request through, unlimited and without rate-limit headers.
    Open,
    /// Answer `503 Service Unavailable` (gRPC: `UNAVAILABLE`): a store failure is not the
    /// client's fault, so not a `429`.
    Closed,
    /// Decide with an in-process store meanwhile (the default). Each app server enforces
    /// its share of the quota on its own: by default one over the number of app servers
    /// the store counts ([`Store::instances`](crate::store::Store::instances)), so `N`
    /// servers together admit about one quota; see
    /// [`LimiterBuilder::fallback_share`](crate::LimiterBuilder::fallback_share).
    #[default]
    FallbackLocal,
}
