//! Runs every case of a suite, each on a fresh context, and reports all that failed
//! (a panic in one case does not hide the others).

use std::future::Future;
use std::pin::Pin;

/// A case's future.
pub type CaseFuture = Pin<Box<dyn Future<Output = ()> + Send>>;
/// A named case taking a fresh context.
pub type Case<T> = (&'static str, fn(T) -> CaseFuture);

/// Runs `cases`, each on a context from `setup`; fails listing every failed case.
pub async fn run<T, F, Fut>(label: &str, cases: &[Case<T>], mut setup: F)
where
    T: Send + 'static,
    F: FnMut() -> Fut,
    Fut: Future<Output = T>,
{
    let mut failed = Vec::new();
    for (name, case) in cases {
        let context = setup().await;
        if tokio::spawn(case(context)).await.is_err() {
            eprintln!("FAILED: {label}: {name}");
            failed.push(*name);
        }
    }
    assert!(
        failed.is_empty(),
        "{label}: {} of {} cases failed: {failed:?}",
        failed.len(),
        cases.len()
    );
    eprintln!("{label}: all {} cases passed", cases.len());
}
