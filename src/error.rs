//! How an error is shown to people: its chain of causes on one line, each
//! cause once.
//!
//! Our own error types say everything in their own message, including the
//! cause's text, so that a log field `error = %e` is complete. Third-party
//! errors differ: DataFusion and rdkafka put the inner error's text into
//! their message *and* return it as `source()`, so a naive walk of the chain
//! prints it again at every level (a bad SQL file printed DataFusion's
//! message four times). [`Chain`] walks the chain and skips every cause whose
//! text is already on the line.

use std::error::Error;
use std::fmt;

/// Displays an error and its causes as `outer: inner: root`, each text once.
pub struct Chain<'a>(pub &'a (dyn Error + 'static));

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&render(self.0))
    }
}

/// The text [`Chain`] displays.
pub fn render(error: &(dyn Error + 'static)) -> String {
    let mut line = error.to_string();
    let mut cause = error.source();
    while let Some(inner) = cause {
        let text = inner.to_string();
        if !text.is_empty() && !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        cause = inner.source();
    }
    line
}

/// A third-party message with the data values taken out, for dead-letter
/// headers and logs. DataFusion quotes the value it failed on (`Cannot cast
/// string '4111111111111111' to value of Float64 type`), and a card number
/// must not travel on. Quoted literals become `'…'`, and runs of six or more
/// digits (card numbers, account numbers) become `…`; names of columns and
/// functions, and small numbers such as positions, stay.
pub fn without_values(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\'' {
            // Skip to the closing quote (or the end), keeping the quotes.
            for inner in chars.by_ref() {
                if inner == '\'' {
                    break;
                }
            }
            out.push_str("'…'");
        } else if c.is_ascii_digit() {
            let mut digits = String::from(c);
            while let Some(&d) = chars.peek().filter(|d| d.is_ascii_digit()) {
                digits.push(d);
                chars.next();
            }
            out.push_str(if digits.len() >= 6 { "…" } else { &digits });
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_taken_out_of_messages() {
        assert_eq!(
            without_values("Cast error: Cannot cast string '4111 1111' to value of Float64 type"),
            "Cast error: Cannot cast string '…' to value of Float64 type"
        );
        assert_eq!(
            without_values("Overflow on 4111111111111111 * 2 at line 3"),
            "Overflow on … * 2 at line 3"
        );
        assert_eq!(without_values("unterminated 'abc"), "unterminated '…'");
    }

    #[derive(Debug, thiserror::Error)]
    #[error("outer failed: {0}")]
    struct Repeats(#[source] std::io::Error);

    #[derive(Debug, thiserror::Error)]
    #[error("outer failed")]
    struct Hides(#[source] std::io::Error);

    #[test]
    fn each_cause_appears_once() {
        let io = || std::io::Error::other("disk on fire");
        assert_eq!(render(&Repeats(io())), "outer failed: disk on fire");
        assert_eq!(render(&Hides(io())), "outer failed: disk on fire");
        assert_eq!(Chain(&Hides(io())).to_string().matches("fire").count(), 1);
    }
}
