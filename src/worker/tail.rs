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
///
/// What a heartbeat carried stays here until the server acknowledged it: a
/// heartbeat that failed (or was cut short by the end of the run) sends it
/// again, and the report carries it, each with the offset the server counts
/// from, so the server keeps every character once.
#[derive(Debug, Clone)]
pub(crate) struct OutputSink(Arc<Mutex<Sink>>);

#[derive(Debug)]
struct Sink {
    tail: TailBuffer,
    /// Sent with a heartbeat whose answer has not come.
    in_flight: String,
    /// Characters the server acknowledged (or that were given up).
    sent: i64,
    /// Where the output `take_rest` returned begins; None if no heartbeat
    /// carried output (then the server has none, and the report need not
    /// say where its output begins: that costs the server a read).
    rest_offset: Option<i64>,
    carried: bool,
}

impl OutputSink {
    pub(crate) fn new() -> Self {
        let tail = TailBuffer::new(OUTPUT_TAIL_LIMIT);
        Self(Arc::new(Mutex::new(Sink { tail, in_flight: String::new(), sent: 0, rest_offset: None, carried: false })))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Sink> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn push(&self, chunk: &[u8]) {
        self.lock().tail.push(chunk);
    }

    /// Output for the next heartbeat, in whole characters, and the offset it
    /// begins at: what the last one carried if it was not acknowledged, then
    /// what is new. At most [`OUTPUT_TAIL_LIMIT`] bytes: what is cut from the
    /// front is given up (the server sees a gap and keeps what follows).
    pub(crate) fn take(&self) -> (String, i64) {
        let mut sink = self.lock();
        let new = sink.tail.take_text();
        sink.in_flight.push_str(&new);
        if sink.in_flight.len() > OUTPUT_TAIL_LIMIT {
            let mut cut = sink.in_flight.len() - OUTPUT_TAIL_LIMIT;
            while !sink.in_flight.is_char_boundary(cut) {
                cut += 1;
            }
            sink.sent += sink.in_flight[..cut].chars().count() as i64;
            sink.in_flight.drain(..cut);
        }
        sink.carried |= !sink.in_flight.is_empty();
        (sink.in_flight.clone(), sink.sent)
    }

    /// The server has what the last heartbeat carried.
    pub(crate) fn acknowledge(&self) {
        let mut sink = self.lock();
        sink.sent += sink.in_flight.chars().count() as i64;
        sink.in_flight.clear();
    }

    /// Everything not yet acknowledged, at the end of the run (see
    /// [`OutputSink::rest_offset`] for where it begins).
    pub(crate) fn take_rest(&self) -> String {
        let mut sink = self.lock();
        let tail = std::mem::replace(&mut sink.tail, TailBuffer::new(OUTPUT_TAIL_LIMIT));
        let mut rest = std::mem::take(&mut sink.in_flight);
        rest.push_str(&tail.into_string());
        sink.rest_offset = sink.carried.then_some(sink.sent);
        rest
    }

    /// Characters of output sent before what `take_rest` returned, if any
    /// heartbeat carried output.
    pub(crate) fn rest_offset(&self) -> Option<i64> {
        self.lock().rest_offset
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
    fn output_stays_until_acknowledged_and_the_rest_says_where_it_begins() {
        let sink = OutputSink::new();
        sink.push(b"one ");
        assert_eq!(sink.take(), ("one ".to_owned(), 0));
        sink.acknowledge();
        sink.push("twé ".as_bytes());
        assert_eq!(sink.take(), ("twé ".to_owned(), 4));
        // No answer: it goes again, with what is new.
        sink.push(b"three ");
        assert_eq!(sink.take(), ("twé three ".to_owned(), 4));
        sink.acknowledge();
        sink.push(b"four");
        assert_eq!(sink.take(), ("four".to_owned(), 14));
        // The run ends before its answer: the report carries it.
        sink.push(b" five");
        assert_eq!((sink.take_rest(), sink.rest_offset()), ("four five".to_owned(), Some(14)));
        let quiet = OutputSink::new();
        assert_eq!(quiet.take(), (String::new(), 0));
        quiet.push(b"all at the end");
        assert_eq!((quiet.take_rest(), quiet.rest_offset()), ("all at the end".to_owned(), None));
    }

    #[test]
    fn output_in_flight_is_bounded_and_what_is_cut_counts_as_given_up() {
        let sink = OutputSink::new();
        sink.push(&vec![b'a'; OUTPUT_TAIL_LIMIT]);
        let _ = sink.take();
        sink.push(b"bc");
        let (piece, offset) = sink.take();
        assert_eq!((piece.len(), offset), (OUTPUT_TAIL_LIMIT, 2));
        assert!(piece.ends_with("abc"));
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
    fn sink_hands_out_each_acknowledged_byte_once() {
        let sink = OutputSink::new();
        sink.push(b"one\n");
        assert_eq!(sink.take(), ("one\n".to_owned(), 0));
        sink.acknowledge();
        sink.push(b"two\n");
        sink.push(&"é".as_bytes()[..1]);
        assert_eq!(sink.take(), ("two\n".to_owned(), 4));
        sink.acknowledge();
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
