//! HL7 v2 escaping of text for a field, with the standard delimiters `|^~\&`
//! (v2.5.1 chapter 2, section 2.7 "Use of escape sequences in text fields").

/// Escapes `text` for any field, component or subcomponent of a message using the standard
/// delimiters: `\` → `\E\` (first, so the other sequences are not escaped again), `|` → `\F\`,
/// `^` → `\S\`, `&` → `\T\`, `~` → `\R\`.
///
/// Control characters (CR, LF, tab and the rest of C0, and DEL) are written as the hexadecimal
/// escape `\Xhh\`: a raw CR would end the segment, and ST/TX text may hold only printable
/// characters. Everything else, non-ASCII included, is kept (the message declares UTF-8 in
/// MSH-18 when it holds any).
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\E\\"),
            '|' => out.push_str("\\F\\"),
            '^' => out.push_str("\\S\\"),
            '&' => out.push_str("\\T\\"),
            '~' => out.push_str("\\R\\"),
            c if c.is_ascii_control() => out.push_str(&format!("\\X{:02X}\\", u32::from(c))),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::escape;

    /// The reverse, for the round trip: the five delimiter sequences and `\Xhh\`.
    fn unescape(text: &str) -> String {
        let mut out = String::new();
        let mut rest = text;
        while let Some(start) = rest.find('\\') {
            out.push_str(&rest[..start]);
            let after = &rest[start + 1..];
            let end = after.find('\\').expect("unterminated escape sequence");
            match &after[..end] {
                "E" => out.push('\\'),
                "F" => out.push('|'),
                "S" => out.push('^'),
                "T" => out.push('&'),
                "R" => out.push('~'),
                hex if hex.starts_with('X') => out.push(char::from(u8::from_str_radix(&hex[1..], 16).unwrap())),
                other => panic!("unknown escape sequence {other}"),
            }
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        out
    }

    fn check(text: &str, expected: &str) {
        let escaped = escape(text);
        assert_eq!(escaped, expected, "escape({text:?})");
        assert!(!escaped.contains(['|', '^', '~', '&', '\r', '\n']), "{escaped:?} keeps a delimiter");
        assert_eq!(unescape(&escaped), text, "round trip of {text:?}");
    }

    #[test]
    fn each_delimiter_becomes_its_escape_sequence_and_comes_back() {
        check("", "");
        check("plain text 0.5", "plain text 0.5");
        check("a|b", "a\\F\\b");
        check("a^b", "a\\S\\b");
        check("a&b", "a\\T\\b");
        check("a~b", "a\\R\\b");
        check("a\\b", "a\\E\\b");
        check("|^~\\&", "\\F\\\\S\\\\R\\\\E\\\\T\\");
    }

    #[test]
    fn an_escape_character_in_the_text_is_not_taken_for_a_sequence() {
        check("\\F\\", "\\E\\F\\E\\");
        check("C:\\dir\\", "C:\\E\\dir\\E\\");
        check("\\\\", "\\E\\\\E\\");
    }

    #[test]
    fn line_breaks_and_other_control_characters_are_hex_escaped() {
        check("one\rtwo\nthree", "one\\X0D\\two\\X0A\\three");
        check("tab\there", "tab\\X09\\here");
        check("\u{7f}", "\\X7F\\");
    }

    #[test]
    fn urls_and_non_ascii_text_survive() {
        check("https://r.example/x?a=1&b=2~3", "https://r.example/x?a=1\\T\\b=2\\R\\3");
        check("Müller^Zoë", "Müller\\S\\Zoë");
        check("肺結節", "肺結節");
    }
}
