//! GetExecution's execution, encoded once per view of it rather than once
//! per read: a 20 × 4 execution is 15 KB of protobuf built from some 400
//! strings, and building and encoding it was most of what a read cost the
//! server (prost's encoding, malloc and copies: about a third of its CPU
//! under 16 callers).

use std::{
    sync::{Arc, Weak},
    time::Duration,
};

use bytes::Bytes;
use moka::sync::Cache;
use prost::Message as _;

use super::convert::{self, OutputView};
use crate::domain::{execution::ExecutionDetail, resume::Block};

/// For each stage: None if it is a valid resume point, else why not.
pub type ResumePoints = Vec<Option<(Block, String)>>;

/// One view's encoding, with what it was made from.
struct Encoded {
    /// The execution as the engine showed it. Held weakly, so this cache
    /// keeps no view alive, and compared by address: while this Weak lives
    /// the allocation does too, so no other view can take its address.
    detail: Weak<ExecutionDetail>,
    /// They change with time as well (a chain grows too old to resume).
    points: ResumePoints,
    bytes: Bytes,
}

/// The encodings of the BASIC and of the FULL view, by execution id.
pub struct EncodedViews {
    tail: Cache<String, Arc<Encoded>>,
    full: Cache<String, Arc<Encoded>>,
}

impl Default for EncodedViews {
    fn default() -> Self {
        let cache = || {
            Cache::builder()
                .max_capacity(16 * 1024 * 1024)
                .weigher(|id: &String, e: &Arc<Encoded>| {
                    let points: usize = e.points.iter().flatten().map(|(_, m)| m.len() + 32).sum();
                    (256 + id.len() + points + e.bytes.len()).min(u32::MAX as usize) as u32
                })
                .time_to_idle(Duration::from_secs(600))
                .build()
        };
        EncodedViews { tail: cache(), full: cache() }
    }
}

impl EncodedViews {
    /// `d` in `view` with its resume points, encoded as an `Execution`
    /// message: the earlier encoding when it was made from this very view
    /// with the same points.
    pub fn execution(&self, id: &str, d: &Arc<ExecutionDetail>, view: OutputView, points: ResumePoints) -> Bytes {
        let cache = match view {
            OutputView::Tail => &self.tail,
            OutputView::Full => &self.full,
            OutputView::None => return encode(d, view, points),
        };
        if let Some(e) = cache.get(id).filter(|e| Weak::as_ptr(&e.detail) == Arc::as_ptr(d) && e.points == points) {
            return e.bytes.clone();
        }
        let bytes = encode(d, view, points.clone());
        cache.insert(id.to_owned(), Arc::new(Encoded { detail: Arc::downgrade(d), points, bytes: bytes.clone() }));
        bytes
    }
}

fn encode(d: &ExecutionDetail, view: OutputView, points: ResumePoints) -> Bytes {
    convert::with_resume_points(convert::execution_view(d, view), points).encode_to_vec().into()
}
