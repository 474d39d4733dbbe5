//! The admin routes: what each answers, as JSON, and what each logs.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::response::sse::{Event, Sse};
use axum::response::IntoResponse;
use axum::routing::{get, post, put};
use axum::{Extension, Json, Router};
use http::header::{CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE};
use http::StatusCode;

use super::answers::{
    bad_request, BlockJson, KeyJson, KeyPolicyJson, PoliciesJson, PolicyJson, QuotaJson, Raw,
    RefundJson, Refusal, RowJson, StatsJson, Target, TopJson,
};
use super::auth::Operator;
use super::keys::{AdminKey, KeyHasher};
use super::stats::{Stats, MINUTES};
use crate::observe::OUTCOMES;
use crate::store::{Store, MAX_BLOCK};
use crate::{Decisions, Limiter, Outcome};

/// The dashboard: one page, its script inline, nothing fetched from elsewhere.
const DASHBOARD: &str = include_str!("dashboard.html");
/// Keys listed among the top denied.
const TOP: usize = 20;

/// What a key must be for the admin routes.
pub(crate) trait Key:
    AdminKey + std::hash::Hash + Eq + Clone + Send + Sync + 'static
{
}

impl<T: AdminKey + std::hash::Hash + Eq + Clone + Send + Sync + 'static> Key for T {}

/// What every route works on.
pub(crate) struct Console<K, S> {
    pub(crate) limiter: Limiter<K, S>,
    pub(crate) stats: Stats<K>,
    pub(crate) hasher: KeyHasher,
}

type Shared<K, S> = State<Arc<Console<K, S>>>;

/// The routes, without authentication (the caller wraps them).
pub(crate) fn router<K, S>(console: Arc<Console<K, S>>) -> Router
where
    K: Key,
    S: Store<K>,
{
    Router::new()
        .route("/", get(dashboard))
        .route("/api/policies", get(policies::<K, S>))
        .route(
            "/api/policies/{name}/quota",
            put(set_quota::<K, S>).delete(restore_quota::<K, S>),
        )
        .route("/api/keys", get(inspect::<K, S>))
        .route("/api/keys/reset", post(reset::<K, S>))
        .route("/api/keys/refund", post(refund::<K, S>))
        .route("/api/keys/block", post(block::<K, S>))
        .route("/api/stats", get(stats::<K, S>))
        .route("/api/stats/stream", get(stream::<K, S>))
        .with_state(console)
}

/// A key as answers and logs show it.
struct Shown<K> {
    key: K,
    hash: String,
    raw: Option<String>,
}

impl<K, S> Console<K, S>
where
    K: Key,
    S: Store<K>,
{
    /// The key `target` names.
    fn key(&self, target: &Target) -> Result<Shown<K>, Refusal> {
        let key = match (&target.key, &target.hash) {
            (Some(text), None) => {
                K::parse_key(text).map_err(|error| bad_request(error.to_string()))?
            }
            (None, Some(hash)) => {
                if hash.len() != 16 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(bad_request("a key hash is 16 hexadecimal digits"));
                }
                let hash = hash.to_ascii_lowercase();
                self.stats
                    .find(|key| self.hasher.hash(key) == hash)
                    .ok_or_else(|| {
                        let detail = format!(
                            "no key denied in the last {MINUTES} minutes has the hash {hash}: \
                         name it with `key`"
                        );
                        Refusal(StatusCode::NOT_FOUND, detail)
                    })?
            }
            _ => {
                return Err(bad_request(
                    "name the key with exactly one of `key` and `hash`",
                ))
            }
        };
        Ok(Shown {
            hash: self.hasher.hash(&key),
            raw: target.raw.then(|| key.to_key_text()),
            key,
        })
    }

    /// The key's state under each policy, as a look reports it.
    fn key_json(&self, shown: Shown<K>, decisions: &Decisions) -> KeyJson {
        let policies = self.limiter.current_policies();
        KeyJson {
            hash: shown.hash,
            key: shown.raw,
            policies: policies
                .iter()
                .zip(decisions.iter())
                .map(|(policy, decision)| KeyPolicyJson {
                    name: policy.name().to_owned(),
                    limit: decision.limit,
                    remaining: decision.remaining,
                    reset_secs: decision.reset.map(|reset| reset.as_secs_f64()),
                    blocked_secs: match decision.outcome {
                        Outcome::Denied { retry_after } => retry_after.map(|d| d.as_secs_f64()),
                        _ => None,
                    },
                })
                .collect(),
        }
    }
}

/// Logs an action on a key: who, from where, the key (hashed, raw only if asked) and the
/// change, if any.
fn log_key<K>(operator: &Operator, action: &str, shown: &Shown<K>, change: Option<&str>) {
    tracing::info!(
        who = %operator.who,
        peer = operator.peer.map(tracing::field::display),
        action,
        key_hash = %shown.hash,
        key = shown.raw.as_deref(),
        change,
        "admin: {action}"
    );
}

/// The dashboard may run its own script and talk to this router, nothing else; no other
/// site may frame it.
const DASHBOARD_POLICY: &str = "default-src 'none'; script-src 'unsafe-inline'; \
    style-src 'unsafe-inline'; connect-src 'self'; base-uri 'none'; form-action 'none'; \
    frame-ancestors 'none'";

async fn dashboard() -> impl IntoResponse {
    let headers = [
        (CONTENT_TYPE, "text/html; charset=utf-8"),
        (CACHE_CONTROL, "no-store"),
        (CONTENT_SECURITY_POLICY, DASHBOARD_POLICY),
    ];
    (headers, DASHBOARD)
}

async fn policies<K, S>(State(admin): Shared<K, S>) -> Json<PoliciesJson>
where
    K: Key,
    S: Store<K>,
{
    let limiter = &admin.limiter;
    let (current, own) = (limiter.current_policies(), limiter.policies());
    Json(PoliciesJson {
        namespace: own.namespace().to_owned(),
        policies: current
            .iter()
            .zip(own.iter())
            .map(|(c, o)| PolicyJson::of(c, o))
            .collect(),
    })
}

async fn set_quota<K, S>(
    State(admin): Shared<K, S>,
    Extension(operator): Extension<Operator>,
    Path(name): Path<String>,
    body: Result<Json<QuotaJson>, JsonRejection>,
) -> Result<Json<PolicyJson>, Refusal>
where
    K: Key,
    S: Store<K>,
{
    let quota = body?.quota()?;
    let limiter = &admin.limiter;
    let from = limiter
        .current_policies()
        .iter()
        .find(|p| p.name() == name)
        .map(|p| *p.quota());
    let who = &operator.who;
    match limiter.set_quota(&name, quota).await {
        Ok(policy) => {
            tracing::info!(%who, peer = operator.peer.map(tracing::field::display), action = "set_quota", policy = name, ?from, to = ?policy.quota(), "admin: quota changed");
            let own = limiter
                .policies()
                .iter()
                .find(|p| p.name() == name)
                .expect("known");
            Ok(Json(PolicyJson::of(&policy, own)))
        }
        Err(error) => {
            tracing::info!(%who, peer = operator.peer.map(tracing::field::display), action = "set_quota", policy = name, to = ?quota, "admin: quota change refused: {error}");
            Err(error.into())
        }
    }
}

async fn restore_quota<K, S>(
    State(admin): Shared<K, S>,
    Extension(operator): Extension<Operator>,
    Path(name): Path<String>,
) -> Result<Json<PolicyJson>, Refusal>
where
    K: Key,
    S: Store<K>,
{
    let own = admin.limiter.restore_quota(&name).await?;
    tracing::info!(who = %operator.who, peer = operator.peer.map(tracing::field::display), action = "restore_quota", policy = name, to = ?own.quota(), "admin: quota restored");
    Ok(Json(PolicyJson::of(&own, &own)))
}

async fn inspect<K, S>(
    State(admin): Shared<K, S>,
    Extension(operator): Extension<Operator>,
    target: Result<Query<Target>, QueryRejection>,
) -> Result<Json<KeyJson>, Refusal>
where
    K: Key,
    S: Store<K>,
{
    let Query(target) = target?;
    let shown = admin.key(&target)?;
    let decisions = admin.limiter.peek(&shown.key).await?;
    log_key(&operator, "inspect", &shown, None);
    Ok(Json(admin.key_json(shown, &decisions)))
}

async fn reset<K, S>(
    State(admin): Shared<K, S>,
    Extension(operator): Extension<Operator>,
    body: Result<Json<Target>, JsonRejection>,
) -> Result<Json<KeyJson>, Refusal>
where
    K: Key,
    S: Store<K>,
{
    let Json(target) = body?;
    let shown = admin.key(&target)?;
    let decisions = admin.limiter.reset(&shown.key).await?;
    log_key(&operator, "reset", &shown, None);
    Ok(Json(admin.key_json(shown, &decisions)))
}

async fn refund<K, S>(
    State(admin): Shared<K, S>,
    Extension(operator): Extension<Operator>,
    body: Result<Json<RefundJson>, JsonRejection>,
) -> Result<Json<KeyJson>, Refusal>
where
    K: Key,
    S: Store<K>,
{
    let Json(body) = body?;
    if body.units == 0 {
        return Err(bad_request("`units` is at least 1"));
    }
    let shown = admin.key(&body.target)?;
    let decisions = admin.limiter.refund(&shown.key, body.units).await?;
    log_key(
        &operator,
        "refund",
        &shown,
        Some(&format!("{} units", body.units)),
    );
    Ok(Json(admin.key_json(shown, &decisions)))
}

async fn block<K, S>(
    State(admin): Shared<K, S>,
    Extension(operator): Extension<Operator>,
    body: Result<Json<BlockJson>, JsonRejection>,
) -> Result<Json<KeyJson>, Refusal>
where
    K: Key,
    S: Store<K>,
{
    let Json(body) = body?;
    let duration = Duration::try_from_secs_f64(body.seconds)
        .ok()
        .filter(|duration| !duration.is_zero() && *duration <= MAX_BLOCK)
        .ok_or_else(|| {
            bad_request(format!(
                "`seconds` is more than 0 and at most {} (100 years), not {}",
                MAX_BLOCK.as_secs(),
                body.seconds
            ))
        })?;
    let shown = admin.key(&body.target)?;
    let decisions = admin.limiter.block(&shown.key, duration).await?;
    log_key(
        &operator,
        "block",
        &shown,
        Some(&format!("for {duration:?}")),
    );
    Ok(Json(admin.key_json(shown, &decisions)))
}

impl<K, S> Console<K, S>
where
    K: Key,
    S: Store<K>,
{
    fn stats_json(&self, raw: bool) -> StatsJson {
        let (second, rows) = self.stats.rows();
        StatsJson {
            second,
            outcomes: OUTCOMES,
            policies: rows
                .into_iter()
                .map(|row| RowJson {
                    name: row.name,
                    totals: row.totals,
                    per_second: row.per_second,
                })
                .collect(),
            top_denied: self
                .stats
                .top_denied(TOP)
                .into_iter()
                .map(|heavy| TopJson {
                    hash: self.hasher.hash(&heavy.key),
                    key: raw.then(|| heavy.key.to_key_text()),
                    denied: heavy.denied,
                    at_least: heavy.at_least,
                })
                .collect(),
            top_denied_minutes: MINUTES,
        }
    }
}

async fn stats<K, S>(
    State(admin): Shared<K, S>,
    Extension(operator): Extension<Operator>,
    raw: Result<Query<Raw>, QueryRejection>,
) -> Result<Json<StatsJson>, Refusal>
where
    K: Key,
    S: Store<K>,
{
    let Query(Raw { raw }) = raw?;
    tracing::debug!(who = %operator.who, raw, "admin: statistics read");
    Ok(Json(admin.stats_json(raw)))
}

async fn stream<K, S>(
    State(admin): Shared<K, S>,
    Extension(operator): Extension<Operator>,
    raw: Result<Query<Raw>, QueryRejection>,
) -> Result<Sse<Ticks<K, S>>, Refusal>
where
    K: Key,
    S: Store<K>,
{
    let Query(Raw { raw }) = raw?;
    tracing::info!(who = %operator.who, peer = operator.peer.map(tracing::field::display), raw, "admin: statistics stream opened");
    let mut interval = tokio::time::interval(Duration::from_secs(1));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    Ok(Sse::new(Ticks {
        admin,
        raw,
        interval,
    }))
}

/// The statistics once a second, as server-sent events.
struct Ticks<K, S> {
    admin: Arc<Console<K, S>>,
    raw: bool,
    interval: tokio::time::Interval,
}

impl<K, S> futures_core::Stream for Ticks<K, S>
where
    K: Key,
    S: Store<K>,
{
    type Item = Result<Event, axum::Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        ready!(this.interval.poll_tick(cx));
        let stats = this.admin.stats_json(this.raw);
        Poll::Ready(Some(Event::default().event("stats").json_data(stats)))
    }
}
