//! The in-process hot path allocates nothing: counted by a global allocator.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::net::IpAddr;

use tower_ratelimit::store::{Change, MemoryStore, Store};
use tower_ratelimit::{
    key, Algorithm, Policies, Policy, Quota, RateLimitHeaders, RateLimitLayer, ResponseBody,
};

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
    /// Bytes allocated and not yet freed by this thread.
    static LIVE: Cell<isize> = const { Cell::new(0) };
}

// SAFETY: forwards to the system allocator; only counts, per thread.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.with(|n| n.set(n.get() + 1));
        LIVE.with(|n| n.set(n.get() + layout.size() as isize));
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.with(|n| n.set(n.get() - layout.size() as isize));
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations_during(f: impl FnOnce()) -> usize {
    let before = ALLOCATIONS.with(Cell::get);
    f();
    ALLOCATIONS.with(Cell::get) - before
}

#[test]
fn deciding_for_a_known_key_allocates_nothing() {
    let store = MemoryStore::new();
    let policy: Policies = Policy::new(
        "default",
        Quota::per_second(10).burst(3),
        Algorithm::TokenBucket,
    )
    .unwrap()
    .into();
    let key: IpAddr = "192.0.2.1".parse().unwrap();
    assert!(store
        .apply(&key, Change::Charge(1), &policy)
        .into_inner()
        .unwrap()
        .is_allowed());
    let allocations = allocations_during(|| {
        for _ in 0..1000 {
            // Admissions, denials and zero-cost looks alike.
            let _ = store
                .apply(&key, Change::Charge(1), &policy)
                .into_inner()
                .unwrap();
            let _ = store
                .apply(&key, Change::Charge(0), &policy)
                .into_inner()
                .unwrap();
        }
    });
    assert_eq!(allocations, 0);
    // The counter works: new keys make the map grow.
    let grow = || {
        for n in 0..100u8 {
            drop(store.apply(&IpAddr::from([198, 51, 100, n]), Change::Charge(1), &policy));
        }
    };
    assert!(allocations_during(grow) > 0);
}

/// Calls `service` once and polls the response to completion (it is ready at once).
fn call_once<S>(service: &mut S) -> http::StatusCode
where
    S: tower::Service<http::Request<()>, Response = http::Response<ResponseBody<()>>>,
    S::Error: std::fmt::Debug,
{
    use std::future::Future;
    use std::task::{Context, Poll, Waker};
    let mut cx = Context::from_waker(Waker::noop());
    assert!(service.poll_ready(&mut cx).is_ready());
    let mut future = std::pin::pin!(service.call(http::Request::new(())));
    match future.as_mut().poll(&mut cx) {
        Poll::Ready(response) => response.unwrap().status(),
        Poll::Pending => panic!("an in-process decision is ready at once"),
    }
}

#[test]
fn the_layer_adds_no_allocation_to_an_allowed_request_without_headers() {
    let inner = tower::service_fn(|_: http::Request<()>| {
        std::future::ready(Ok::<_, std::convert::Infallible>(http::Response::new(())))
    });
    let layer = RateLimitLayer::new(key::Global, MemoryStore::new(), Quota::per_hour(1000))
        .headers(RateLimitHeaders::None);
    let mut service = tower::Layer::layer(&layer, inner);
    assert_eq!(call_once(&mut service), 200);
    let allocations = allocations_during(|| {
        for _ in 0..100 {
            assert_eq!(call_once(&mut service), 200);
        }
    });
    assert_eq!(allocations, 0);
}

/// The bytes a store holds after 10 000 keys of `len` bytes each, one request each.
fn bytes_held(len: usize) -> isize {
    let store = MemoryStore::<Vec<u8>>::new();
    let policy: Policies = Policy::new("default", Quota::per_hour(1), Algorithm::TokenBucket)
        .unwrap()
        .into();
    let before = LIVE.with(Cell::get);
    for i in 0..10_000u32 {
        let mut key = vec![b'k'; len];
        key[..4].copy_from_slice(&i.to_le_bytes());
        let decided = store.apply(&key, Change::Charge(1), &policy).into_inner();
        assert!(decided.unwrap().is_allowed());
    }
    let held = LIVE.with(Cell::get) - before;
    assert_eq!(store.len(), 10_000);
    held
}

#[test]
fn a_state_costs_the_same_whatever_the_key_holds() {
    // A 250-byte header value costs what a 16-byte one does: keys are kept as digests.
    let (short, long) = (bytes_held(16), bytes_held(250));
    assert!(
        long <= short + short / 20,
        "{short} bytes for short keys, {long} for long ones"
    );
    // At most about 70 bytes per state, as documented for `max_bytes`.
    assert!(short / 10_000 <= 70, "{} bytes per state", short / 10_000);
}

#[test]
fn a_budget_in_bytes_bounds_a_flood_of_long_keys() {
    let store = MemoryStore::<Vec<u8>>::new().max_bytes(700_000);
    let policy: Policies = Policy::new("default", Quota::per_hour(1), Algorithm::TokenBucket)
        .unwrap()
        .into();
    let before = LIVE.with(Cell::get);
    for i in 0..100_000u32 {
        let mut key = vec![b'k'; 250];
        key[..4].copy_from_slice(&i.to_le_bytes());
        let decided = store.apply(&key, Change::Charge(1), &policy).into_inner();
        assert!(decided.unwrap().is_allowed(), "a newcomer is never refused");
    }
    assert!(store.len() <= 10_000);
    let held = LIVE.with(Cell::get) - before;
    assert!(
        held <= 2 * 700_000,
        "{held} bytes held for a 700 000-byte budget"
    );
}
