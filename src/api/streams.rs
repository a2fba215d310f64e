//! Bounds on watch streams: how many one caller may hold open at once, and
//! how long any one may live (clients reconnect). A stream holds a
//! [`Permit`] for its whole life; dropping the stream gives it back.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use tonic::Status;

/// The limits, from the server's flags.
#[derive(Debug, Clone, Copy)]
pub struct StreamLimits {
    /// Watch streams one caller (subject) may hold open at once.
    pub per_caller: usize,
    /// The longest a stream lives; it then ends UNAVAILABLE and the client
    /// reconnects (so access is checked afresh and no stream lives forever).
    pub max_lifetime: Duration,
}

impl Default for StreamLimits {
    fn default() -> Self {
        StreamLimits { per_caller: 100, max_lifetime: Duration::from_secs(3600) }
    }
}

/// The open streams of each caller.
#[derive(Default)]
pub struct Streams {
    pub limits: StreamLimits,
    open: Arc<Mutex<HashMap<String, usize>>>,
}

/// One open stream of one caller.
pub struct Permit {
    subject: String,
    open: Arc<Mutex<HashMap<String, usize>>>,
}

impl Streams {
    pub fn new(limits: StreamLimits) -> Self {
        Streams { limits, open: Arc::default() }
    }

    /// A permit for one more stream of `subject`, or RESOURCE_EXHAUSTED.
    pub fn open(&self, subject: &str) -> Result<Permit, Status> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let n = open.entry(subject.to_owned()).or_default();
        if *n >= self.limits.per_caller {
            return Err(super::error::too_many_streams(
                &format!(
                    "this caller already holds {} watch streams, the most it may hold at once; close one first",
                    self.limits.per_caller
                ),
                self.limits.per_caller,
            ));
        }
        *n += 1;
        Ok(Permit { subject: subject.to_owned(), open: self.open.clone() })
    }

    #[cfg(test)]
    fn held(&self, subject: &str) -> usize {
        self.open.lock().unwrap().get(subject).copied().unwrap_or(0)
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = open.get_mut(&self.subject) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.subject);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_caller_holds_at_most_its_limit_and_gets_permits_back() {
        let streams = Streams::new(StreamLimits { per_caller: 2, ..Default::default() });
        let a = streams.open("ann").unwrap();
        let _b = streams.open("ann").unwrap();
        assert_eq!(streams.open("ann").err().map(|s| s.code()), Some(tonic::Code::ResourceExhausted));
        assert!(streams.open("bob").is_ok(), "another caller is not affected");
        drop(a);
        assert!(streams.open("ann").is_ok());
        assert_eq!(streams.held("bob"), 0);
    }
}
