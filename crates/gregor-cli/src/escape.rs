//! Text from the outside world made safe for the operator's terminal (P10).
//!
//! Keys, headers, topic names and error texts come from whoever could produce to a topic or
//! write an outbox row. Printed raw, `ESC ] 52 ; c ; …` writes the clipboard, `ESC [ 1 A
//! ESC [ 2 K` hides the lines above, and U+202E reverses what the operator reads. Every
//! human-readable line the CLI prints goes through [`shown`] (JSON output is escaped by
//! serde_json and by [`shown`] for what JSON leaves raw).

use std::borrow::Cow;
use std::fmt::Write as _;

/// Whether `c` must not reach a terminal raw: C0 controls (tab and newline included: a
/// value must not start a new line of output), DEL, C1 controls, and the invisible
/// characters that reorder or hide text (bidirectional marks, embeddings, overrides and
/// isolates; zero-width characters; line and paragraph separators; the BOM).
fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061c}'
                | '\u{200b}'..='\u{200f}'
                | '\u{2028}'..='\u{202e}'
                | '\u{2060}'..='\u{2069}'
                | '\u{feff}'
        )
}

/// `text` with every unsafe character written as a Rust-style `\u{…}` escape; borrowed when
/// there is none.
pub(crate) fn shown(text: &str) -> Cow<'_, str> {
    if !text.chars().any(is_unsafe) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if is_unsafe(c) {
            // Writing to a String cannot fail.
            let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// Serialized JSON made safe: serde_json escapes C0 controls but writes DEL, C1 controls and
/// bidirectional characters raw; they are written as JSON `\uXXXX` escapes instead (they
/// only occur inside strings, so the document means the same).
pub(crate) fn json_safe(json: &str) -> Cow<'_, str> {
    if !json.chars().any(is_unsafe) {
        return Cow::Borrowed(json);
    }
    let mut out = String::with_capacity(json.len() + 16);
    for c in json.chars() {
        if is_unsafe(c) {
            // Every unsafe character is in the Basic Multilingual Plane.
            let _ = write!(out, "\\u{:04x}", u32::from(c));
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// [`shown`] for a multi-line text printed as several lines: each line escaped on its own.
pub(crate) fn shown_lines(text: &str) -> String {
    text.split('\n').map(shown).collect::<Vec<_>>().join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_and_bidi_are_escaped_and_the_rest_kept() {
        assert!(matches!(shown("order-1 ünïcødé 注文 ✓"), Cow::Borrowed(_)));
        assert_eq!(
            shown("a\u{1b}]52;c;eA==\u{7}b"),
            "a\\u{1b}]52;c;eA==\\u{7}b"
        );
        assert_eq!(
            shown("\u{9b}1A\u{7f}\t\r\n"),
            "\\u{9b}1A\\u{7f}\\u{9}\\u{d}\\u{a}"
        );
        assert_eq!(
            shown("x\u{202e}y\u{2066}z\u{200b}"),
            "x\\u{202e}y\\u{2066}z\\u{200b}"
        );
        assert_eq!(shown_lines("a\u{1b}\nb"), "a\\u{1b}\nb");
        let json = serde_json::json!({"k": "a\u{7f}\u{9b}\u{202e}\u{1b}"}).to_string();
        let safe = json_safe(&json);
        assert!(!safe.chars().any(is_unsafe), "{safe}");
        let back: serde_json::Value = serde_json::from_str(&safe).expect("still JSON");
        assert_eq!(back["k"], "a\u{7f}\u{9b}\u{202e}\u{1b}");
    }
}
