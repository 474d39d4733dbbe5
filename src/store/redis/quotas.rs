//! Quotas changed at run time, shared through Redis: a hash `<prefix>:{quotas}` of quotas
//! by state identity, written with a publication of its name on the invalidation channel
//! (in one script), read again by every store that hears it.

use std::collections::HashMap;
use std::time::Duration;

use super::connection::Connection;
use super::script::Limits;
use super::Shared;
use crate::store::{StoreError, StoreErrorKind};
use crate::{Policy, Quota};

/// Writes (or, with an empty value, deletes) one quota and announces it, atomically.
const CHANGE: &str = r"
if ARGV[2] == '' then
  redis.call('HDEL', KEYS[1], ARGV[1])
else
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
end
redis.call('PUBLISH', ARGV[3], KEYS[1])
return 1
";

/// The longest a change or a reading may take.
const TIMEOUT: Duration = Duration::from_secs(2);

/// The hash of the stores under `prefix`.
pub(super) fn key(prefix: &str) -> String {
    format!("{prefix}:{{quotas}}")
}

/// A quota as the hash keeps it: `<limit> <period in ns, 0 if fixed> <burst>`.
fn encode(quota: &Quota) -> String {
    let period = quota.period().map_or(0, |period| period.as_nanos());
    format!("{} {period} {}", quota.limit(), quota.burst_size())
}

fn decode(text: &str) -> Option<Quota> {
    let mut numbers = text.split(' ').map(|number| number.parse::<u64>().ok());
    let (Some(Some(limit)), Some(Some(period)), Some(Some(burst)), None) = (
        numbers.next(),
        numbers.next(),
        numbers.next(),
        numbers.next(),
    ) else {
        return None;
    };
    let quota = match period {
        0 => Quota::fixed(limit),
        period => Quota::new(limit, Duration::from_nanos(period)),
    };
    Some(quota.burst(burst)).filter(|quota| quota.validate().is_ok())
}

/// Every quota in the hash at `key`, by state identity. Entries this version cannot read
/// are left out, with a warning.
pub(super) async fn read(
    connection: &Connection,
    key: &str,
) -> Result<HashMap<u64, Quota>, StoreError> {
    let mut connection = connection.clone();
    let mut read = redis::cmd("HGETALL");
    read.arg(key);
    let entries: HashMap<String, String> = within(read.query_async(&mut connection)).await?;
    Ok(entries
        .into_iter()
        .filter_map(|(id, quota)| {
            let entry = u64::from_str_radix(&id, 16).ok().zip(decode(&quota));
            if entry.is_none() {
                tracing::warn!(id, quota, "unreadable quota change in Redis, ignored");
            }
            entry
        })
        .collect())
}

impl Shared {
    /// Writes the change of state `id` to `policy`'s quota (`None`: deletes it) and
    /// announces it; then it is on this store's board.
    pub(super) async fn change_quota(
        &self,
        id: u64,
        policy: Option<&Policy>,
    ) -> Result<(), StoreError> {
        let quota = policy.map(|policy| {
            Limits::of(policy)?;
            Ok(*policy.quota())
        });
        let quota = quota.transpose()?;
        let script = redis::Script::new(CHANGE);
        let mut call = script.key(&self.quotas_key);
        let encoded = quota.as_ref().map_or(String::new(), encode);
        call.arg(format!("{id:016x}"))
            .arg(encoded)
            .arg(&self.channel);
        let mut connection = self.connection.clone();
        within(call.invoke_async::<i64>(&mut connection)).await?;
        self.quotas.set(id, quota);
        Ok(())
    }
}

/// A Redis call within [`TIMEOUT`], its failure as a [`StoreError`].
async fn within<T>(
    call: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> Result<T, StoreError> {
    match tokio::time::timeout(TIMEOUT, call).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => {
            Err(StoreError::new(StoreErrorKind::Unavailable, "Redis failed").with_source(error))
        }
        Err(_) => Err(StoreError::new(
            StoreErrorKind::Timeout,
            format!("Redis did not answer within {TIMEOUT:?}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotas_are_written_and_read_back_exactly() {
        let third = Quota::per_secs_f64(7, 1.0 / 3.0).unwrap().burst(9);
        for quota in [
            Quota::per_second(5).burst(5),
            Quota::fixed(3).burst(3),
            third,
        ] {
            assert_eq!(decode(&encode(&quota)), Some(quota));
        }
        for bad in ["", "1 2", "1 2 3 4", "0 1000 1", "a 1 1", "5 1000000000 -1"] {
            assert_eq!(decode(bad), None, "{bad:?}");
        }
    }
}
