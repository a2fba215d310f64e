//! A bounded buffer for task output: a chatty task must not exhaust the
//! worker's memory, and the server only keeps the tail anyway.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};

/// How much output we keep; matches what the server stores per task.
pub(crate) const OUTPUT_TAIL_LIMIT: usize = 64 * 1024;

/// Keeps the last `limit` bytes written to it.
#[derive(Debug)]
pub(crate) struct TailBuffer {
    bytes: VecDeque<u8>,
    limit: usize,
}

impl TailBuffer {
    pub(crate) fn new(limit: usize) -> Self {
        Self { bytes: VecDeque::with_capacity(limit.min(8 * 1024)), limit }
    }

    pub(crate) fn push(&mut self, chunk: &[u8]) {
        // Only the end of an oversized chunk can survive, so skip copying the rest.
        let chunk = &chunk[chunk.len().saturating_sub(self.limit)..];
        let overflow = (self.bytes.len() + chunk.len()).saturating_sub(self.limit);
        self.bytes.drain(..overflow);
        self.bytes.extend(chunk);
    }

    /// Puts `text` back before what is buffered (a heartbeat that carried
    /// it failed), keeping the last `limit` bytes of the whole.
    pub(crate) fn unshift(&mut self, text: &str) {
        let mut bytes: VecDeque<u8> = text.bytes().collect();
        bytes.append(&mut self.bytes);
        let overflow = bytes.len().saturating_sub(self.limit);
        bytes.drain(..overflow);
        self.bytes = bytes;
    }

    /// The tail as text. Cutting may have split a UTF-8 character at the
    /// front; we drop its remnant rather than show a replacement character.
    pub(crate) fn into_string(self) -> String {
        text(Vec::from(self.bytes))
    }

    /// Takes what is buffered so far, leaving behind only the start of a
    /// character whose remaining bytes have not arrived yet, so a chunk sent
    /// now never splits a character in two.
    pub(crate) fn take_text(&mut self) -> String {
        let keep = unfinished_suffix(self.bytes.make_contiguous());
        let taken: Vec<u8> = self.bytes.drain(..self.bytes.len() - keep).collect();
        text(taken)
    }
}

/// Output shared between the running script, which appends to it, and the
/// heartbeats, which send what has accumulated since the last one. Bounded
/// like [`TailBuffer`]: if the server cannot be reached for a while, the
/// oldest unsent output is dropped rather than the worker's memory.
#[derive(Debug, Clone)]
pub(crate) struct OutputSink(Arc<Mutex<TailBuffer>>);

impl OutputSink {
    pub(crate) fn new() -> Self {
        Self(Arc::new(Mutex::new(TailBuffer::new(OUTPUT_TAIL_LIMIT))))
    }

    pub(crate) fn push(&self, chunk: &[u8]) {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).push(chunk);
    }

    /// Output not yet taken, in whole characters.
    pub(crate) fn take(&self) -> String {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).take_text()
    }

    /// Puts back a piece whose heartbeat failed, to go with the next one.
    pub(crate) fn put_back(&self, piece: &str) {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).unshift(piece);
    }

    /// Everything not yet taken, at the end of the run.
    pub(crate) fn take_rest(&self) -> String {
        let mut tail = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        std::mem::replace(&mut *tail, TailBuffer::new(OUTPUT_TAIL_LIMIT)).into_string()
    }
}

/// Text of raw output: a character remnant at the front (left by cutting) is
/// dropped, other invalid bytes become replacement characters.
fn text(mut bytes: Vec<u8>) -> String {
    let partial = bytes.iter().take(3).take_while(|b| is_continuation(**b)).count();
    bytes.drain(..partial);
    match String::from_utf8(bytes) {
        Ok(text) => text,
        Err(err) => String::from_utf8_lossy(err.as_bytes()).into_owned(),
    }
}

fn is_continuation(byte: u8) -> bool {
    (byte & 0b1100_0000) == 0b1000_0000
}

/// How many bytes at the end belong to a character that is not complete yet.
fn unfinished_suffix(bytes: &[u8]) -> usize {
    for back in 1..=bytes.len().min(4) {
        let byte = bytes[bytes.len() - back];
        if is_continuation(byte) {
            continue;
        }
        let width = match byte {
            0xF0..=0xF7 => 4,
            0xE0..=0xEF => 3,
            0xC0..=0xDF => 2,
            _ => 1,
        };
        return if width > back { back } else { 0 };
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_only_the_last_bytes() {
        let mut tail = TailBuffer::new(8);
        tail.push(b"hello ");
        tail.push(b"world");
        assert_eq!(tail.into_string(), "lo world");
    }

    #[test]
    fn a_piece_put_back_goes_first_and_the_whole_stays_bounded() {
        let mut tail = TailBuffer::new(8);
        tail.push(b"new");
        tail.unshift("old ");
        assert_eq!(tail.take_text(), "old new");
        tail.push(b"later");
        tail.unshift("sent again");
        assert_eq!(tail.take_text(), "ainlater", "the oldest bytes go first");
    }

    #[test]
    fn oversized_chunk_keeps_its_end() {
        let mut tail = TailBuffer::new(4);
        tail.push(b"abcdefghij");
        assert_eq!(tail.into_string(), "ghij");
    }

    #[test]
    fn taking_never_splits_a_character() {
        let mut tail = TailBuffer::new(64);
        let euro = "€".as_bytes();
        tail.push(b"a");
        tail.push(&euro[..2]);
        assert_eq!(tail.take_text(), "a");
        tail.push(&euro[2..]);
        tail.push(b"b");
        assert_eq!(tail.take_text(), "€b");
        assert_eq!(tail.take_text(), "");
    }

    #[test]
    fn sink_hands_out_each_byte_once() {
        let sink = OutputSink::new();
        sink.push(b"one\n");
        assert_eq!(sink.take(), "one\n");
        sink.push(b"two\n");
        sink.push(&"é".as_bytes()[..1]);
        assert_eq!(sink.take(), "two\n");
        assert_eq!(sink.take_rest(), "\u{FFFD}");
        assert_eq!(sink.take_rest(), "");
    }

    #[test]
    fn drops_a_split_utf8_character_at_the_front() {
        let mut tail = TailBuffer::new(4);
        tail.push("xé€".as_bytes()); // é is 2 bytes, € is 3: keeps the last byte of é
        assert_eq!(tail.into_string(), "€");
    }
}
