//! Go's view of PromQL string literals.
//!
//! Prometheus (Go) decodes `\xNN` and octal `\NNN` escapes in a string
//! literal to single bytes, so `"a\xc5z"` is the bytes `61 c5 7a`: not UTF-8,
//! hence an invalid label name. promql-parser decodes the same escapes to
//! chars (`"aÅz"`, valid UTF-8), and its AST keeps no source positions.
//! [`NonUtf8Literals::scan`] therefore rescans the query text for the
//! literals whose Go value is not UTF-8, keyed by their parsed value, so the
//! label-name checks can reject them as Prometheus does.

/// String literals of a query whose Go value is not valid UTF-8.
#[derive(Debug, Default)]
pub(crate) struct NonUtf8Literals {
    /// (value as promql-parser decodes it, bytes as Go decodes it).
    lits: Vec<(String, Vec<u8>)>,
}

impl NonUtf8Literals {
    /// Scans `query` (which has parsed) for its `"..."` and `'...'` literals
    /// (raw `` `...` `` ones have no escapes), skipping `#` comments.
    ///
    /// A parsed value that some other literal of the query produces as valid
    /// UTF-8 (`"\xc5"` next to `"Å"`) cannot be told apart after parsing and
    /// is left out, so such a value is accepted.
    pub(crate) fn scan(query: &str) -> Self {
        if !query.contains('\\') {
            return Self::default();
        }
        let mut all: Vec<(String, Vec<u8>)> = Vec::new();
        let mut chars = query.chars();
        while let Some(c) = chars.next() {
            match c {
                '#' => {
                    for c in chars.by_ref() {
                        if c == '\n' {
                            break;
                        }
                    }
                }
                '`' => {
                    for c in chars.by_ref() {
                        if c == '`' {
                            break;
                        }
                    }
                }
                '"' | '\'' => {
                    let mut body = String::new();
                    while let Some(d) = chars.next() {
                        if d == c {
                            break;
                        }
                        body.push(d);
                        if d == '\\' {
                            body.extend(chars.next());
                        }
                    }
                    if let Some(lit) = decode(&body) {
                        all.push(lit);
                    }
                }
                _ => {}
            }
        }
        let valid: Vec<&str> =
            all.iter().filter(|(_, b)| std::str::from_utf8(b).is_ok()).map(|(s, _)| s.as_str()).collect();
        let lits = all
            .iter()
            .filter(|(s, b)| std::str::from_utf8(b).is_err() && !valid.contains(&s.as_str()))
            .cloned()
            .collect();
        Self { lits }
    }

    /// Go's bytes for the literal that parsed to `parsed`, if they are not UTF-8.
    pub(crate) fn go_bytes(&self, parsed: &str) -> Option<&[u8]> {
        self.lits.iter().find(|(s, _)| s == parsed).map(|(_, b)| b.as_slice())
    }
}

/// Decodes a literal's body both ways: as promql-parser (escaped bytes
/// become chars U+0000..U+00FF) and as Go (they stay bytes). `None` for an
/// escape this does not know (the literal is then treated as valid).
fn decode(body: &str) -> Option<(String, Vec<u8>)> {
    let mut parsed = String::new();
    let mut go = Vec::new();
    let mut chars = body.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            push(&mut parsed, &mut go, c);
            continue;
        }
        let e = chars.next()?;
        let simple = match e {
            'a' => Some('\x07'),
            'b' => Some('\x08'),
            'f' => Some('\x0c'),
            'n' => Some('\n'),
            'r' => Some('\r'),
            't' => Some('\t'),
            'v' => Some('\x0b'),
            '\\' | '\'' | '"' => Some(e),
            _ => None,
        };
        if let Some(s) = simple {
            push(&mut parsed, &mut go, s);
            continue;
        }
        let (digits, radix) = match e {
            'x' => (2, 16),
            'u' => (4, 16),
            'U' => (8, 16),
            '0'..='7' => (2, 8),
            _ => return None,
        };
        let mut text: String = if radix == 8 { e.to_string() } else { String::new() };
        for _ in 0..digits {
            text.push(chars.next()?);
        }
        let v = u32::from_str_radix(&text, radix).ok()?;
        if matches!(e, 'u' | 'U') {
            push(&mut parsed, &mut go, char::from_u32(v)?);
        } else {
            let b = u8::try_from(v).ok()?;
            parsed.push(char::from(b));
            go.push(b);
        }
    }
    Some((parsed, go))
}

/// Appends a char that both decodings agree on.
fn push(parsed: &mut String, go: &mut Vec<u8>, c: char) {
    parsed.push(c);
    go.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes());
}

/// Go's `strconv.Quote` of `b` (approximating `IsPrint` for non-ASCII
/// chars by "not a control char").
pub(crate) fn go_quote(b: &[u8]) -> String {
    let mut out = String::from('"');
    for chunk in b.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\x07' => out.push_str("\\a"),
                '\x08' => out.push_str("\\b"),
                '\x0c' => out.push_str("\\f"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                '\x0b' => out.push_str("\\v"),
                c if c < ' ' || c == '\x7f' => out.push_str(&format!("\\x{:02x}", c as u32)),
                c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
                c => out.push(c),
            }
        }
        for x in chunk.invalid() {
            out.push_str(&format!("\\x{x:02x}"));
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_go_invalid_literals() {
        let l = NonUtf8Literals::scan(r#"count_values("a\xc5z", version)"#);
        assert_eq!(l.go_bytes("a\u{c5}z"), Some(&b"a\xc5z"[..]));
        let l = NonUtf8Literals::scan(r#"label_replace(m, '\377', "", "src", "(.*)")"#);
        assert_eq!(l.go_bytes("\u{ff}"), Some(&b"\xff"[..]));
        // Valid UTF-8 spelled with escapes, raw strings and comments are fine.
        let l = NonUtf8Literals::scan("count_values(\"\\xc3\\x85\", m) + `\\xff` # \"\\xff\"\n");
        assert!(l.lits.is_empty());
        assert_eq!(l.go_bytes("\u{c3}\u{85}"), None);
        // A value also written as valid UTF-8 cannot be told apart: accepted.
        let l = NonUtf8Literals::scan(r#"label_join(m, "\xc5", "", "Å")"#);
        assert_eq!(l.go_bytes("\u{c5}"), None);
        // Escaped quotes do not end a literal.
        let l = NonUtf8Literals::scan(r#"label_join(m, "x\"\xff", "", "a")"#);
        assert_eq!(l.go_bytes("x\"\u{ff}"), Some(&b"x\"\xff"[..]));
    }

    #[test]
    fn quotes_like_go() {
        assert_eq!(go_quote(b"a\xc5z"), r#""a\xc5z""#);
        assert_eq!(go_quote("Å\"\\\n\x01".as_bytes()), r#""Å\"\\\n\x01""#);
    }
}
