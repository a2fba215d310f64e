//! The panic hook of `serve`, `dev` and `worker` (issue 9): a caught panic
//! is one log line at ERROR, without a backtrace even when RUST_BACKTRACE
//! asks for one. Its own test binary: the hook is process-wide.

use std::{
    io::Write,
    sync::{Arc, Mutex},
};

use reprise::domain::{condition, limits::Limits};

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_caught_panic_is_one_error_line_without_a_backtrace() {
    // SAFETY: set before any other thread of this test binary runs.
    unsafe { std::env::set_var("RUST_BACKTRACE", "full") };
    let log = Captured::default();
    let writer = log.clone();
    tracing_subscriber::fmt().with_writer(move || writer.clone()).with_ansi(false).init();
    reprise::panic::install_hook();

    // The CEL parser panics on this; the panic is caught and the expression refused.
    let refused = condition::check("region ==", &["region"], &[], &Limits::default()).unwrap_err();
    assert!(refused.contains("does not parse"), "{refused}");
    let caught = std::panic::catch_unwind(|| panic!("boom\nacross lines {}", "x".repeat(10_000)));
    assert!(caught.is_err());

    let text = String::from_utf8(log.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "one line per panic:\n{text}");
    assert!(lines[0].contains("ERROR") && lines[0].contains("the CEL parser panicked"), "{}", lines[0]);
    assert!(lines[1].contains("ERROR") && lines[1].contains("boom across lines"), "{}", lines[1]);
    assert!(lines[1].len() < 1024, "the message is cut: {} bytes", lines[1].len());
    assert!(!text.contains("backtrace") && !text.contains("rust_begin_unwind"), "{text}");
}
