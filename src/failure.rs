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
    /// Decide with an in-process store meanwhile (the default). Each app server then
    /// enforces the quota on its own, so `N` servers admit up to `N` times the quota
    /// during the outage; give them a per-instance share with
    /// [`LimiterBuilder::fallback_share`](crate::LimiterBuilder::fallback_share).
    #[default]
    FallbackLocal,
}
