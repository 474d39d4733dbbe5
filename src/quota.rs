//! [`Quota`]: how much a key may spend, and how fast it comes back.

use std::fmt;
use std::num::NonZeroU64;
use std::time::Duration;

/// How many requests a key may make: `limit` per `period`, with room for a burst of `burst`.
///
/// The constructors say what they mean: `Quota::per_second(10)` admits 10 requests per
/// second. `burst` is the bucket size (the most a key can spend at once); it defaults to
/// `limit`. One unit of quota comes back every *emission interval* `T = period / limit`,
/// counted in whole nanoseconds and rounded up, so rounding never admits more than asked.
///
/// Constructors never fail; [`Quota::validate`] (called by
/// [`RateLimitLayer::try_new`](crate::RateLimitLayer::try_new)) rejects what cannot work
/// with a typed [`QuotaError`].
///
/// ```
/// use std::time::Duration;
/// use tower_ratelimit::Quota;
///
/// let quota = Quota::per_second(1).burst(5);
/// assert_eq!(quota.emission_interval(), Ok(Duration::from_secs(1)));
/// assert_eq!(Quota::per_minute(0).validate(), Err(tower_ratelimit::QuotaError::ZeroLimit));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Quota {
    limit: u64,
    period: Option<Duration>,
    burst: Option<u64>,
    /// `T` in nanoseconds (0 for a fixed quota), computed once.
    interval: u64,
}

impl Quota {
    /// `limit` requests per `period`.
    pub const fn new(limit: u64, period: Duration) -> Self {
        let period_ns = period.as_nanos();
        let interval = if limit == 0 || period_ns > u64::MAX as u128 {
            0
        } else {
            (period_ns as u64).div_ceil(limit)
        };
        Self {
            limit,
            period: Some(period),
            burst: None,
            interval,
        }
    }

    /// `limit` requests per second.
    pub const fn per_second(limit: u64) -> Self {
        Self::new(limit, Duration::from_secs(1))
    }

    /// `limit` requests per minute.
    pub const fn per_minute(limit: u64) -> Self {
        Self::new(limit, Duration::from_secs(60))
    }

    /// `limit` requests per hour.
    pub const fn per_hour(limit: u64) -> Self {
        Self::new(limit, Duration::from_secs(3600))
    }

    /// `limit` requests per day (86 400 s).
    pub const fn per_day(limit: u64) -> Self {
        Self::new(limit, Duration::from_secs(86_400))
    }

    /// `limit` requests per `period_secs` seconds given as a float (for configuration files
    /// and command lines). The period is rounded up to whole nanoseconds, so the quota never
    /// admits more than asked. NaN, infinite, negative or unrepresentable periods are an
    /// error.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_ratelimit::{Quota, QuotaError};
    ///
    /// let third = Quota::per_secs_f64(1, 1.0 / 3.0)?;
    /// assert_eq!(third.period(), Some(Duration::from_nanos(333_333_334)));
    /// assert_eq!(Quota::per_secs_f64(5, f64::NAN), Err(QuotaError::InvalidPeriod));
    /// # Ok::<(), QuotaError>(())
    /// ```
    pub fn per_secs_f64(limit: u64, period_secs: f64) -> Result<Self, QuotaError> {
        let nearest =
            Duration::try_from_secs_f64(period_secs).map_err(|_| QuotaError::InvalidPeriod)?;
        if period_secs > 0.0 && period_secs < limit as f64 / 1e9 {
            return Err(QuotaError::RateTooHigh);
        }
        // `nearest` is the nearest nanosecond; the next one when that is short of the period.
        // (0.1 is a little above a tenth in binary, but it is how 100 ms is written.)
        let period = if (nearest.as_nanos() as f64 / 1e9) < period_secs {
            nearest + Duration::from_nanos(1)
        } else {
            nearest
        };
        let quota = Self::new(limit, period);
        quota.validate()?;
        Ok(quota)
    }

    /// `total` requests, never refilled: a fixed allowance (a trial, a one-off budget).
    /// Once spent, requests are denied with no `Retry-After`, since waiting does not help.
    pub const fn fixed(total: u64) -> Self {
        Self {
            limit: total,
            period: None,
            burst: None,
            interval: 0,
        }
    }

    /// Sets the bucket size: how much a key may spend at once after being idle.
    pub const fn burst(mut self, burst: u64) -> Self {
        self.burst = Some(burst);
        self
    }

    /// Requests per period.
    pub const fn limit(&self) -> u64 {
        self.limit
    }

    /// The refill period, or `None` for a [`fixed`](Quota::fixed) quota.
    pub const fn period(&self) -> Option<Duration> {
        self.period
    }

    /// The bucket size (defaults to `limit`).
    pub const fn burst_size(&self) -> u64 {
        match self.burst {
            Some(burst) => burst,
            None => self.limit,
        }
    }

    /// The time one unit of quota takes to come back (`period / limit`, rounded up to whole
    /// nanoseconds), or [`Duration::MAX`] for a fixed quota.
    pub fn emission_interval(&self) -> Result<Duration, QuotaError> {
        self.validate()?;
        Ok(self
            .interval_nanos()
            .map_or(Duration::MAX, |ns| Duration::from_nanos(ns.get())))
    }

    /// Checks that the quota can be enforced.
    pub fn validate(&self) -> Result<(), QuotaError> {
        if self.limit == 0 {
            return Err(QuotaError::ZeroLimit);
        }
        if self.burst_size() == 0 {
            return Err(QuotaError::ZeroBurst);
        }
        let Some(period) = self.period else {
            return Ok(());
        };
        if period.is_zero() {
            return Err(QuotaError::ZeroPeriod);
        }
        let period_ns = u64::try_from(period.as_nanos()).map_err(|_| QuotaError::TooLarge)?;
        if period_ns < self.limit {
            return Err(QuotaError::RateTooHigh);
        }
        // The bucket's depth in time (`burst · T`) must fit in nanoseconds, with room to
        // add it to a timestamp.
        match self.interval.checked_mul(self.burst_size()) {
            Some(tolerance) if tolerance <= MAX_TOLERANCE_NANOS => Ok(()),
            _ => Err(QuotaError::TooLarge),
        }
    }

    /// `T` in nanoseconds, `None` for a fixed quota. Assumes a validated quota, whose `T`
    /// is at least a nanosecond: a division by it cannot fail, so the compiler drops the
    /// divisions whose results go unread.
    pub(crate) fn interval_nanos(&self) -> Option<NonZeroU64> {
        NonZeroU64::new(self.interval)
    }
}

/// The deepest bucket, in time, that a quota may describe: 100 years.
const MAX_TOLERANCE_NANOS: u64 = 100 * 365 * 86_400 * 1_000_000_000;

/// Why a [`Quota`] cannot be enforced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum QuotaError {
    /// `limit` is 0: nothing could ever pass.
    ZeroLimit,
    /// `burst` is 0: nothing could ever pass.
    ZeroBurst,
    /// The period is zero.
    ZeroPeriod,
    /// The period is NaN, infinite, negative or too large to represent.
    InvalidPeriod,
    /// More than one request per nanosecond.
    RateTooHigh,
    /// `burst · period / limit` is longer than 100 years, or the burst is too large for
    /// the algorithm's state (fixed window: `burst < period in ns`; sliding window:
    /// `(burst + 1)² ≤ 4 · period in ns`, e.g. up to 63 245 per second).
    TooLarge,
    /// The algorithm needs a refill period, and a [fixed](Quota::fixed) quota has none.
    NeedsPeriod,
}

impl fmt::Display for QuotaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::ZeroLimit => "quota limit must be at least 1",
            Self::ZeroBurst => "quota burst must be at least 1",
            Self::ZeroPeriod => "quota period must be longer than zero",
            Self::InvalidPeriod => "quota period must be a finite, non-negative number of seconds",
            Self::RateTooHigh => "quota rate must be at most one request per nanosecond",
            Self::TooLarge => "quota burst is too large for its period",
            Self::NeedsPeriod => "this algorithm needs a quota with a refill period",
        })
    }
}

impl std::error::Error for QuotaError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constructors_mean_what_they_say() {
        assert_eq!(
            Quota::per_second(10).emission_interval(),
            Ok(Duration::from_millis(100))
        );
        assert_eq!(
            Quota::per_minute(60).emission_interval(),
            Ok(Duration::from_secs(1))
        );
        assert_eq!(Quota::per_hour(2).burst_size(), 2);
        assert_eq!(Quota::per_day(1).burst(7).burst_size(), 7);
        assert_eq!(Quota::fixed(3).emission_interval(), Ok(Duration::MAX));
    }

    #[test]
    fn interval_rounds_up() {
        // 1 s / 3 = 333_333_333.3 ns: rounding up never admits more than 3 per second.
        assert_eq!(
            Quota::per_second(3).interval_nanos().map(NonZeroU64::get),
            Some(333_333_334)
        );
    }

    #[test]
    fn invalid_quotas_are_typed_errors() {
        assert_eq!(Quota::per_second(0).validate(), Err(QuotaError::ZeroLimit));
        assert_eq!(Quota::fixed(0).validate(), Err(QuotaError::ZeroLimit));
        assert_eq!(
            Quota::per_second(1).burst(0).validate(),
            Err(QuotaError::ZeroBurst)
        );
        assert_eq!(
            Quota::new(1, Duration::ZERO).validate(),
            Err(QuotaError::ZeroPeriod)
        );
        assert_eq!(
            Quota::per_second(2_000_000_000).validate(),
            Err(QuotaError::RateTooHigh)
        );
        assert_eq!(
            Quota::new(1, Duration::MAX).validate(),
            Err(QuotaError::TooLarge)
        );
        assert_eq!(
            Quota::per_day(1).burst(u64::MAX).validate(),
            Err(QuotaError::TooLarge)
        );
        for bad in [f64::NAN, f64::INFINITY, -1.0, 1e30] {
            assert_eq!(
                Quota::per_secs_f64(1, bad),
                Err(QuotaError::InvalidPeriod),
                "{bad}"
            );
        }
        assert_eq!(Quota::per_secs_f64(1, 0.0), Err(QuotaError::ZeroPeriod));
        // 2.5 and 3 requests per nanosecond: too fast, however the period rounds.
        assert_eq!(Quota::per_secs_f64(1, 0.4e-9), Err(QuotaError::RateTooHigh));
        assert_eq!(Quota::per_secs_f64(3, 1e-9), Err(QuotaError::RateTooHigh));
    }

    #[test]
    fn float_periods_round_up_to_the_nanosecond() {
        let third = Quota::per_secs_f64(1, 1.0 / 3.0).unwrap();
        assert_eq!(third.period(), Some(Duration::from_nanos(333_333_334)));
        assert_eq!(
            third.interval_nanos(),
            Quota::per_second(3).interval_nanos()
        );
        assert_eq!(Quota::per_secs_f64(3, 1.0), Ok(Quota::per_second(3)));
        // 0.1 is a little above a tenth in binary; that is not a nanosecond more.
        let tenth = Quota::per_secs_f64(1, 0.1).unwrap();
        assert_eq!(tenth.period(), Some(Duration::from_millis(100)));
        let long = Quota::per_secs_f64(1, 519.849_219_518).unwrap();
        assert_eq!(long.period(), Some(Duration::from_nanos(519_849_219_518)));
        assert!(Quota::per_secs_f64(1, 1e-9).is_ok());
    }
}
