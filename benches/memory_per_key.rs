//! Bytes per key held in process by `MemoryStore` and by governor's keyed `RateLimiter`,
//! after 1 000 000 keys (`IpAddr`) were each admitted once under a quota that keeps them
//! all (no key is idle within a day). Each side runs in its own child process so their
//! heaps do not mix; both the live heap (a counting allocator) and the resident set grow
//! are reported.

use std::alloc::{GlobalAlloc, Layout, System};
use std::net::{IpAddr, Ipv4Addr};
use std::num::NonZeroU32;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

use governor::{DefaultKeyedRateLimiter, Quota as GQuota, RateLimiter};
use tower_ratelimit::store::{Change, MemoryStore, Store};
use tower_ratelimit::{Algorithm, Policies, Policy, Quota};

const KEYS: u32 = 1_000_000;

/// The system allocator, counting the bytes currently allocated.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Relaxed);
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size, Relaxed);
        LIVE.fetch_sub(layout.size(), Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Resident set size in bytes.
fn rss() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("Linux /proc");
    let pages: usize = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

fn key(n: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(n))
}

/// Fills one limiter with `KEYS` keys; prints heap and RSS growth per key.
fn measure(side: &str) {
    let (heap, resident) = (LIVE.load(Relaxed), rss());
    let check: Box<dyn Fn(&IpAddr) -> bool> = match side {
        "ours" => {
            let store = MemoryStore::<IpAddr>::new();
            let policy = Policy::new("default", Quota::per_day(1), Algorithm::TokenBucket);
            let policy = Policies::from(policy.unwrap());
            Box::new(move |key| {
                let decided = store.apply(key, Change::Charge(1), &policy).into_inner();
                decided.unwrap().is_allowed()
            })
        }
        "governor" => {
            let quota = GQuota::with_period(Duration::from_secs(86_400)).unwrap();
            let limiter: DefaultKeyedRateLimiter<IpAddr> =
                RateLimiter::keyed(quota.allow_burst(NonZeroU32::MIN));
            Box::new(move |key| limiter.check_key(key).is_ok())
        }
        _ => panic!("unknown side {side}"),
    };
    for n in 0..KEYS {
        assert!(check(&key(n)));
    }
    let per_key = |after: usize, before: usize| (after - before) as f64 / f64::from(KEYS);
    println!(
        "{side} heap_bytes_per_key={:.1} rss_bytes_per_key={:.1}",
        per_key(LIVE.load(Relaxed), heap),
        per_key(rss(), resident)
    );
}

fn main() {
    // `cargo bench` passes `--bench`; a side name runs that side only.
    match std::env::args().skip(1).find(|arg| !arg.starts_with("--")) {
        Some(side) => measure(&side),
        None => {
            for side in ["ours", "governor"] {
                let exe = std::env::current_exe().unwrap();
                let status = Command::new(exe).arg(side).status().unwrap();
                assert!(status.success());
            }
        }
    }
}
