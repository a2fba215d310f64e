//! The process's panic hook: one log line at ERROR per panic, never a
//! backtrace. A panic is a bug (or, in the CEL parser, malformed input that
//! is refused): the log says where and what, and stays one line however
//! often a caller triggers it.

/// How much of a panic's message is logged.
const MAX_MESSAGE: usize = 512;

/// Installs the hook; call once at start-up (serve, dev, worker).
pub fn install_hook() {
    std::panic::set_hook(Box::new(|info| {
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| info.payload().downcast_ref::<String>().map(String::as_str))
            .unwrap_or("(no message)");
        let message = crate::domain::limits::truncate_marked(&message.replace('\n', " "), MAX_MESSAGE);
        let location = info.location().map(|l| format!("{}:{}", l.file(), l.line())).unwrap_or_default();
        if crate::domain::condition::parsing_on_this_thread() {
            tracing::error!(%location, %message, "the CEL parser panicked; the expression is refused as malformed");
        } else {
            tracing::error!(%location, %message, "panic");
        }
    }));
}
