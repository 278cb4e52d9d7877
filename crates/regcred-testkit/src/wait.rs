//! Waiting for the cluster to get somewhere: everything in it is eventually consistent.

use std::fmt::Debug;
use std::future::Future;
use std::panic::Location;
use std::time::{Duration, Instant};

use kube::runtime::wait::{Condition, await_condition};
use kube::{Api, Resource};
use serde::de::DeserializeOwned;

/// Calls `check` every `interval` until it returns `Some`, and returns that value. Panics
/// (naming the caller's line) if `timeout` passes first.
#[track_caller]
pub fn wait_for<T, F, Fut>(
    timeout: Duration,
    interval: Duration,
    mut check: F,
) -> impl Future<Output = T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    // `#[track_caller]` does not reach into an async fn's body: take the caller here.
    let caller = Location::caller();
    async move {
        let start = Instant::now();
        loop {
            if let Some(value) = check().await {
                return value;
            }
            if start.elapsed() >= timeout {
                panic!("wait_for at {caller}: condition not met within {timeout:?}");
            }
            tokio::time::sleep(interval).await;
        }
    }
}

/// Watches the object `name` until `condition` holds (it sees `None` while the object does
/// not exist), and returns the object then. Panics (naming the caller's line) after
/// `timeout` or if the watch fails.
#[track_caller]
pub fn watch_until<K>(
    api: Api<K>,
    name: &str,
    timeout: Duration,
    condition: impl Condition<K>,
) -> impl Future<Output = Option<K>>
where
    K: Clone + Debug + Send + DeserializeOwned + Resource + 'static,
{
    let caller = Location::caller();
    let name = name.to_owned();
    async move {
        match tokio::time::timeout(timeout, await_condition(api, &name, condition)).await {
            Ok(Ok(object)) => object,
            Ok(Err(e)) => panic!("watch_until at {caller}: watching {name}: {e}"),
            Err(_) => panic!("watch_until at {caller}: {name} not as expected within {timeout:?}"),
        }
    }
}
