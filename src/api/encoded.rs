//! An execution as GetExecution and WatchExecution send it, encoded once
//! per view of it rather than once per read or per subscriber: a 20 × 4
//! execution is 15 KB of protobuf built from some 400 strings, and building
//! and encoding it was most of what a read cost the server (prost's
//! encoding, malloc and copies: about a third of its CPU under 16 callers).

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

/// The encodings of each view, by execution id: BASIC and FULL for
/// GetExecution, the one without output for WatchExecution (whose
/// subscribers are then sent one encoding of each change).
pub struct EncodedViews {
    none: Cache<String, Arc<Encoded>>,
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
        EncodedViews { none: cache(), tail: cache(), full: cache() }
    }
}

impl EncodedViews {
    /// `d` in `view` with its resume points (none for a watch), encoded as
    /// an `Execution` message: the earlier encoding when it was made from
    /// this very view with the same points.
    pub fn execution(&self, id: &str, d: &Arc<ExecutionDetail>, view: OutputView, points: ResumePoints) -> Bytes {
        let cache = match view {
            OutputView::Tail => &self.tail,
            OutputView::Full => &self.full,
            OutputView::None => &self.none,
        };
        if let Some(e) = cache.get(id).filter(|e| Weak::as_ptr(&e.detail) == Arc::as_ptr(d) && e.points == points) {
            return e.bytes.clone();
        }
        let bytes = encode(d, view, points.clone());
        cache.insert(id.to_owned(), Arc::new(Encoded { detail: Arc::downgrade(d), points, bytes: bytes.clone() }));
        bytes
    }
}

/// Equal executions encode to equal bytes (a watch sends a change only
/// when the bytes differ): prost writes fields in tag order, and build.rs
/// makes every map a `BTreeMap`, written in key order.
fn encode(d: &ExecutionDetail, view: OutputView, points: ResumePoints) -> Bytes {
    convert::with_resume_points(convert::execution_view(d, view), points).encode_to_vec().into()
}

#[cfg(test)]
mod tests {
    use prost::Message as _;

    use crate::proto as pb;

    fn execution(pairs: &[(&str, &str)]) -> pb::Execution {
        let map = |prefix: &str| pairs.iter().map(|(k, v)| (format!("{prefix}{k}"), v.to_string())).collect();
        pb::Execution {
            id: "e-1".into(),
            variables: map("v_"),
            artifacts: map("a_"),
            stages: vec![pb::StageExecution { name: "build".into(), ..Default::default() }],
            ..Default::default()
        }
    }

    #[test]
    fn equal_executions_encode_to_equal_bytes_that_decode_to_them() {
        let pairs: Vec<(String, String)> = (0..40).map(|i| (format!("k{i:02}"), format!("value {i}"))).collect();
        let pairs: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let reversed: Vec<(&str, &str)> = pairs.iter().rev().copied().collect();
        let (a, b) = (execution(&pairs), execution(&reversed));
        assert_eq!(a, b);
        let bytes = a.encode_to_vec();
        assert_eq!(bytes, b.encode_to_vec(), "the maps' order is the keys', whatever the order of insertion");
        assert_eq!(pb::Execution::decode(bytes.as_slice()).unwrap(), a);
    }
}
