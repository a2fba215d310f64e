//! A bounded buffer for task output: a chatty task must not exhaust the
//! worker's memory, and the server only keeps the tail anyway.

use std::collections::VecDeque;

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
        let mut bytes = Vec::from(self.bytes);
        let partial = bytes.iter().take(3).take_while(|b| (**b & 0b1100_0000) == 0b1000_0000).count();
        bytes.drain(..partial);
        match String::from_utf8(bytes) {
            Ok(text) => text,
            Err(err) => String::from_utf8_lossy(err.as_bytes()).into_owned(),
        }
    }
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
    fn oversized_chunk_keeps_its_end() {
        let mut tail = TailBuffer::new(4);
        tail.push(b"abcdefghij");
        assert_eq!(tail.into_string(), "ghij");
    }

    #[test]
    fn drops_a_split_utf8_character_at_the_front() {
        let mut tail = TailBuffer::new(4);
        tail.push("xé€".as_bytes()); // é is 2 bytes, € is 3: keeps the last byte of é
        assert_eq!(tail.into_string(), "€");
    }
}
