//! How output looks on the terminal it goes to: colours (only on a terminal,
//! never under `NO_COLOR`, forced by `CLICOLOR_FORCE`, as anstream decides for
//! clap's own help) and the width tables must fit in.
//!
//! Decided once per process by [`init`]; until then (unit tests, library
//! callers) there are no colours and no width limit, so rendered text is
//! stable.

use std::{io::IsTerminal as _, sync::OnceLock};

use anstyle::{AnsiColor, Style};

/// What the process's stdout can show.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Terminal {
    /// Colours are wanted.
    pub colour: bool,
    /// Tables are cut to this many columns; None: no limit (a pipe or a file).
    pub width: Option<usize>,
}

static TERMINAL: OnceLock<Terminal> = OnceLock::new();

/// Looks at stdout and the environment. `COLUMNS`, when set, wins over the
/// terminal's size (and applies to pipes too, as it does for `ls`).
pub fn init() {
    let stdout = std::io::stdout();
    let colour = !matches!(anstream::AutoStream::choice(&stdout), anstream::ColorChoice::Never);
    let columns = std::env::var("COLUMNS").ok().and_then(|c| c.trim().parse::<usize>().ok()).filter(|&c| c > 0);
    let width = columns
        .or_else(|| stdout.is_terminal().then(|| terminal_size::terminal_size().map(|(w, _)| w.0 as usize)).flatten());
    let _ = TERMINAL.set(Terminal { colour, width });
}

pub fn terminal() -> Terminal {
    TERMINAL.get().copied().unwrap_or_default()
}

/// The colour of a status word (execution, stage or workflow, short name).
fn status_style(status: &str) -> Option<Style> {
    let word: String = status.chars().take_while(|c| c.is_ascii_uppercase() || *c == '_').collect();
    let colour = match word.as_str() {
        "SUCCEEDED" | "APPROVED" => AnsiColor::Green,
        "FAILED" | "EXPIRED" | "REJECTED" => AnsiColor::Red,
        "ABORTED" | "CANCELLED" | "PAUSED" | "WAITING_APPROVAL" => AnsiColor::Yellow,
        "RUNNING" => AnsiColor::Cyan,
        "SKIPPED" | "NOT_RUN" | "PENDING" | "QUEUED" => return Some(Style::new().dimmed()),
        _ => return None,
    };
    Some(colour.on_default().bold())
}

/// `text` in the colour of the status it starts with, when colours are on.
pub fn status(text: &str) -> String {
    paint_with(terminal().colour, text)
}

/// [`status`] with the decision given (for tests).
pub fn paint_with(colour: bool, text: &str) -> String {
    match status_style(text) {
        Some(style) if colour => format!("{style}{text}{style:#}"),
        _ => text.to_owned(),
    }
}

/// Dim text (hints, headers of log sections), when colours are on.
pub fn dim(text: &str) -> String {
    if terminal().colour {
        let style = Style::new().dimmed();
        format!("{style}{text}{style:#}")
    } else {
        text.to_owned()
    }
}

/// How many columns `text` takes, leaving out ANSI escape sequences.
#[cfg(test)]
fn visible_width(text: &str) -> usize {
    let mut width = 0;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            // CSI: ESC [ parameters final-byte (a letter).
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            width += 1;
        }
    }
    width
}

/// The first `width` characters of `text`, the last one an ellipsis when cut.
pub fn cut(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        return text.to_owned();
    }
    if width == 0 {
        return String::new();
    }
    let mut out: String = text.chars().take(width - 1).collect();
    out.push('…');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_painted_only_when_asked() {
        assert_eq!(paint_with(false, "FAILED"), "FAILED");
        let painted = paint_with(true, "FAILED: workflow ship/b failed");
        assert!(painted.starts_with("\x1b[") && painted.contains("FAILED: workflow"), "{painted:?}");
        assert_eq!(visible_width(&painted), "FAILED: workflow ship/b failed".len());
        assert_eq!(paint_with(true, "ship"), "ship", "not a status");
    }

    #[test]
    fn cutting_keeps_the_width() {
        assert_eq!(cut("abcdef", 4), "abc…");
        assert_eq!(cut("abc", 4), "abc");
        assert_eq!(cut("é_long", 2), "é…");
    }

    #[test]
    fn without_init_there_is_no_colour_and_no_limit() {
        assert_eq!(terminal(), Terminal::default());
    }
}
