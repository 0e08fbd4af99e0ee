//! Text that people type and other people read: titles, names, labels, reasons.
//!
//! One rule for all of it, so that no field is the odd one out: the text is put in
//! Unicode's composed form (NFC, so `é` typed two ways is one string), trimmed, and
//! refused when it carries control characters, bidirectional overrides or isolates (a
//! right-to-left override makes `gpj.exe` read as `exe.jpg`), or when nothing of it is
//! visible (a title of one zero-width space).

use unicode_normalization::UnicodeNormalization;

use crate::ParseError;

/// Whether a text may span lines (descriptions) or is one line (titles, names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lines {
    One,
    Many,
}

/// The text in NFC, trimmed, at most `max_chars` characters; empty when `raw` is blank
/// (the caller says whether blank is allowed).
pub fn clean(raw: &str, max_chars: usize, lines: Lines) -> Result<String, ParseError> {
    let text: String = raw.trim().nfc().collect();
    if text.chars().count() > max_chars {
        return Err(ParseError::new(format!(
            "at most {max_chars} characters are allowed"
        )));
    }
    let line_break = |c: char| lines == Lines::Many && matches!(c, '\n' | '\r' | '\t');
    if text.chars().any(|c| c.is_control() && !line_break(c)) {
        return Err(ParseError::new("control characters are not allowed"));
    }
    if text.chars().any(is_bidi_control) {
        return Err(ParseError::new(
            "right-to-left and left-to-right overrides and isolates are not allowed",
        ));
    }
    if !text.is_empty() && text.chars().all(is_invisible) {
        return Err(ParseError::new("this has no visible character"));
    }
    Ok(text)
}

/// Like [`clean`], for a text that must not be blank; `what` names it in the answer.
pub fn required(
    raw: &str,
    max_chars: usize,
    lines: Lines,
    what: &str,
) -> Result<String, ParseError> {
    let text = clean(raw, max_chars, lines)?;
    if text.is_empty() {
        return Err(ParseError::new(format!("{what} is required")));
    }
    Ok(text)
}

/// Embeddings, overrides and isolates: they reorder what follows them on screen.
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// Characters that draw nothing: white space, zero-width and joining characters, marks
/// that only steer direction, fillers, variation selectors and tags.
fn is_invisible(c: char) -> bool {
    c.is_whitespace()
        || matches!(
            c,
            '\u{00AD}'
                | '\u{034F}'
                | '\u{061C}'
                | '\u{115F}'
                | '\u{1160}'
                | '\u{17B4}'
                | '\u{17B5}'
                | '\u{180B}'..='\u{180F}'
                | '\u{200B}'..='\u{200F}'
                | '\u{2060}'..='\u{206F}'
                | '\u{2800}'
                | '\u{3164}'
                | '\u{FE00}'..='\u{FE0F}'
                | '\u{FEFF}'
                | '\u{FFA0}'
                | '\u{1D173}'..='\u{1D17A}'
                | '\u{E0000}'..='\u{E0FFF}'
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_composed_and_trimmed() {
        // `e` + combining acute, and the precomposed `é`, are one string after parsing.
        let decomposed = clean("  Caf\u{0065}\u{0301} ", 50, Lines::One).unwrap();
        assert_eq!(decomposed, "Caf\u{00E9}");
        assert_eq!(decomposed, clean("Caf\u{00E9}", 50, Lines::One).unwrap());
    }

    #[test]
    fn overrides_isolates_and_invisible_only_text_are_refused() {
        for bad in [
            "Concert \u{202E}gpj.exe",
            "\u{2067}Hidden\u{2069}",
            "\u{200B}",
            "\u{200B}\u{2060}\u{FEFF} \u{3164}",
            "\u{E0041}\u{E0042}",
            "line\u{0007}bell",
        ] {
            assert!(clean(bad, 200, Lines::One).is_err(), "{bad:?}");
        }
        // Marks inside real text, and scripts written right to left, are fine.
        for good in [
            "שלום עולם",
            "مرحبا\u{200F} 2027",
            "Zoë & Chloé",
            "🎻 Strings",
        ] {
            assert!(clean(good, 200, Lines::One).is_ok(), "{good:?}");
        }
    }

    #[test]
    fn line_breaks_only_where_lines_are_allowed() {
        assert!(clean("one\ntwo", 50, Lines::One).is_err());
        assert_eq!(clean("one\ntwo", 50, Lines::Many).unwrap(), "one\ntwo");
    }

    #[test]
    fn blank_is_empty_and_required_names_what_is_missing() {
        assert_eq!(clean("   ", 10, Lines::One).unwrap(), "");
        assert_eq!(
            required(" ", 10, Lines::One, "a title").unwrap_err().0,
            "a title is required"
        );
        assert!(clean("abcdefghijk", 10, Lines::One).is_err());
    }
}
