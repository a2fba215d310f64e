//! This process's turn on one execution. Writers of the same execution queue
//! here, in memory, before they take a database connection: a burst of
//! reports or resumes of one execution then costs one connection at a time
//! instead of a pool full of connections waiting on one row lock (which
//! starved every other call). Across replicas the execution's row lock
//! still orders them.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};

type Held = Arc<Mutex<HashMap<String, Arc<AsyncMutex<()>>>>>;

#[derive(Default)]
pub(super) struct Locks {
    held: Held,
}

/// The turn on one execution; dropping it hands the turn to the next writer.
pub(super) struct Turn {
    guard: Option<OwnedMutexGuard<()>>,
    id: String,
    held: Held,
}

impl Locks {
    pub(super) async fn turn(&self, execution_id: &str) -> Turn {
        let mutex = {
            let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
            held.entry(execution_id.to_owned()).or_default().clone()
        };
        let guard = mutex.lock_owned().await;
        Turn { guard: Some(guard), id: execution_id.to_owned(), held: self.held.clone() }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.held.lock().unwrap().len()
    }
}

impl Drop for Turn {
    /// Hands the turn on, and forgets the mutex of an execution nobody waits
    /// for, so the map holds only executions being written now.
    fn drop(&mut self) {
        drop(self.guard.take());
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(m) = held.get(&self.id)
            && Arc::strong_count(m) == 1
        {
            held.remove(&self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn turns_on_one_execution_queue_and_are_forgotten_after() {
        let locks = Locks::default();
        let first = locks.turn("e1").await;
        let other = locks.turn("e2").await;
        assert!(tokio::time::timeout(std::time::Duration::from_millis(20), locks.turn("e1")).await.is_err());
        drop(first);
        drop(other);
        let again = locks.turn("e1").await;
        drop(again);
        assert_eq!(locks.len(), 0);
    }
}
