//! One read for every caller that asks the same question meanwhile. A
//! caller never takes the answer of a read that began before it asked (that
//! read may have missed a change committed just before the call): it joins
//! the next read, which starts as soon as the one under way ends. So sixteen
//! callers polling one execution cost about one query per database round
//! trip instead of one each, and every answer is still at least as recent
//! as its call.

use std::{
    collections::HashMap,
    future::Future,
    sync::{Arc, Mutex},
};

use tokio::sync::oneshot;

type Waiting<T> = Arc<Mutex<HashMap<String, Vec<oneshot::Sender<T>>>>>;

/// Reads under way, by key; the callers waiting for the next one of each.
pub(super) struct Coalesced<T> {
    waiting: Waiting<T>,
}

impl<T> Default for Coalesced<T> {
    fn default() -> Self {
        Self { waiting: Arc::default() }
    }
}

impl<T: Clone + Send + 'static> Coalesced<T> {
    /// The answer of a `read` of `key` that began after this call. The reads
    /// run in a task of their own, so a caller that goes away leaves the
    /// others their answer. None only if that task died (the runtime shuts
    /// down): the caller then reads for itself.
    pub async fn read<F, Fut>(&self, key: &str, read: F) -> Option<T>
    where
        F: Fn() -> Fut + Send + 'static,
        Fut: Future<Output = T> + Send + 'static,
    {
        let (sender, answer) = oneshot::channel();
        let first = {
            let mut waiting = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
            match waiting.get_mut(key) {
                Some(next) => {
                    next.push(sender);
                    None
                }
                None => {
                    waiting.insert(key.to_owned(), Vec::new());
                    Some(sender)
                }
            }
        };
        if let Some(sender) = first {
            tokio::spawn(reads(self.waiting.clone(), key.to_owned(), vec![sender], read));
        }
        answer.await.ok()
    }
}

/// Reads for `batch`, then for whoever asked meanwhile, until nobody did.
async fn reads<T, F, Fut>(waiting: Waiting<T>, key: String, mut batch: Vec<oneshot::Sender<T>>, read: F)
where
    T: Clone,
    F: Fn() -> Fut,
    Fut: Future<Output = T>,
{
    loop {
        let answer = read().await;
        for caller in batch {
            let _ = caller.send(answer.clone());
        }
        let mut waiting = waiting.lock().unwrap_or_else(|p| p.into_inner());
        batch = match waiting.get_mut(&key) {
            Some(next) if !next.is_empty() => std::mem::take(next),
            _ => {
                waiting.remove(&key);
                return;
            }
        };
    }
}

#[cfg(test)]
mod tests {
    use std::{
        sync::atomic::{AtomicU64, Ordering},
        time::Duration,
    };

    use super::*;

    /// A read that takes 20 ms and answers how many reads began before it.
    fn counter() -> (Arc<AtomicU64>, impl Fn() -> std::pin::Pin<Box<dyn Future<Output = u64> + Send>> + Send + 'static)
    {
        let reads = Arc::new(AtomicU64::new(0));
        let count = reads.clone();
        let read = move || {
            let count = count.clone();
            Box::pin(async move {
                let n = count.fetch_add(1, Ordering::SeqCst) + 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
                n
            }) as std::pin::Pin<Box<dyn Future<Output = u64> + Send>>
        };
        (reads, read)
    }

    #[tokio::test]
    async fn callers_during_a_read_share_the_next_one_and_never_an_earlier_one() {
        let (reads, read) = counter();
        let read = Arc::new(read);
        let shared = Arc::new(Coalesced::<u64>::default());
        let ask = |shared: Arc<Coalesced<u64>>| {
            let read = read.clone();
            tokio::spawn(async move { shared.read("e1", move || read()).await })
        };
        let first = ask(shared.clone());
        tokio::time::sleep(Duration::from_millis(5)).await;
        // Asked while read 1 runs: all three get read 2, which began after them.
        let later: Vec<_> = (0..3).map(|_| ask(shared.clone())).collect();
        assert_eq!(first.await.unwrap(), Some(1));
        for l in later {
            assert_eq!(l.await.unwrap(), Some(2));
        }
        assert_eq!(reads.load(Ordering::SeqCst), 2);
        assert!(shared.waiting.lock().unwrap().is_empty(), "nothing left waiting");
        // A later call reads anew.
        assert_eq!(shared.read("e1", move || read()).await, Some(3));
    }

    #[tokio::test]
    async fn a_caller_that_goes_away_leaves_the_others_their_answer() {
        let (_, read) = counter();
        let read = Arc::new(read);
        let shared = Arc::new(Coalesced::<u64>::default());
        let r = read.clone();
        let gone = tokio::spawn({
            let shared = shared.clone();
            async move { shared.read("e1", move || r()).await }
        });
        tokio::time::sleep(Duration::from_millis(5)).await;
        gone.abort();
        let r = read.clone();
        assert_eq!(shared.read("e1", move || r()).await, Some(2));
    }
}
