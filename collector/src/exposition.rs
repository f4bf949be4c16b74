//! Scrape-page parser for the Prometheus text exposition format (0.0.4) and
//! OpenMetrics 1.0 text.
//!
//! [`Parser`] is a zero-copy, streaming iterator over the entries of one page:
//! `HELP`, `TYPE` and `UNIT` metadata and samples. Every name, and every label
//! value and help text without escapes, borrows from the input; the only
//! per-sample allocation is the labels `Vec`, plus an owned copy of a label
//! value that has escapes or a normalised `le`/`quantile` (see below). The
//! iterator yields at most one error, then ends.
//!
//! The behaviour follows Prometheus 3's `model/textparse` package
//! (`promparse.go`, `openmetricsparse.go` and their lexers), including its
//! error messages (`expected value after metric, got "\n" ("INVALID") while
//! parsing: "foo\n"`), prefixed in [`ParseError`]'s display with the line.
//!
//! # Prometheus text format
//! - Spaces and tabs may separate any two tokens; blank lines and comment
//!   lines (`#` not followed by `HELP`/`TYPE`) are skipped.
//! - `HELP` text unescapes `\\` and `\n`; other backslash sequences are kept.
//! - Label values unescape `\\`, `\"` and `\n`; other sequences are kept as
//!   written. A raw line feed inside a quoted label value is accepted, as
//!   Prometheus does. A trailing comma in a label set is allowed and, as in
//!   Prometheus, so is a missing comma between two labels (`{a="1" b="2"}`).
//! - The timestamp is an optional integer of milliseconds (digits only).
//! - The last line need not end with a line feed.
//!
//! # OpenMetrics
//! - Tokens are separated by exactly one space; there are no blank lines or
//!   free comments; the page must end with `# EOF` (optionally followed by a
//!   line feed, and nothing else).
//! - Timestamps are seconds (any float syntax), converted to milliseconds.
//! - Exemplars (`# {labels} value [timestamp]` after a sample) are validated
//!   and dropped. `_created` samples of counter, summary and histogram
//!   families (`<family>_created` after `# TYPE <family> counter|summary|histogram`)
//!   are validated and dropped.
//! - `# UNIT` must be a `_`-separated suffix of the metric name.
//!
//! # Both formats
//! - Metric names match `[a-zA-Z_:][a-zA-Z0-9_:]*`, label names
//!   `[a-zA-Z_][a-zA-Z0-9_]*` (Prometheus 3's quoted UTF-8 names are not
//!   accepted). A label name repeated within one sample, or a `__name__` label
//!   next to the metric name, is an error.
//! - Values use Go's `strconv.ParseFloat` syntax without hex floats or `_`:
//!   `1`, `-1.5e3`, `.5`, `NaN`, `+Inf`, `-Inf`, `Inf` (case-insensitive, as
//!   Go), while `0x10`, `1_000`, `+NaN` and out-of-range literals like `1e999`
//!   are errors. Every NaN is normalised to Prometheus' "normal NaN" bit
//!   pattern, so a page can never produce the staleness marker.
//! - Under `# TYPE x histogram` the `le` label values, and under
//!   `# TYPE x summary` the `quantile` label values, are normalised to
//!   Prometheus 3's float formatting (`le="1"` becomes `le="1.0"`), as
//!   Prometheus 3 does, so that both formats produce the same series.
//! - Line endings are `\n`. Like Prometheus, a `\r` before it is tolerated only
//!   where free text is allowed (comments; `HELP` text, which keeps the `\r`);
//!   in a sample, `TYPE` line or blank line it is an error.
//! - A NUL byte is accepted only inside label values, help text and comments.
//!
//! # Deliberate differences from Prometheus
//! - In the Prometheus format the value must be separated from the metric
//!   name or label set by whitespace (Prometheus reads `foo-1` as `foo` = -1).
//!   Likewise the metric name in `HELP`/`TYPE` must be followed by
//!   whitespace or the end of the line.
//! - A NUL byte at the start of a line is an error, not a silent end of page.
//! - OpenMetrics timestamps written as plain decimals are converted to
//!   milliseconds exactly (Prometheus multiplies the float by 1000 and
//!   truncates, which is 1 ms short for about 0.6% of timestamps).
//! - In OpenMetrics, anything after a sample's value other than a timestamp,
//!   an exemplar or the line end is reported right there (Prometheus' parser
//!   has no check at that point).
//! - Quoted excerpts in error messages are cut at 256 bytes.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::iter::FusedIterator;

#[cfg(test)]
mod tests;

/// Prometheus' `value.NormalNaN`: the bit pattern every parsed NaN gets.
const NORMAL_NAN_BITS: u64 = 0x7ff8_0000_0000_0001;

/// Longest input excerpt quoted in an error message, in bytes.
const MAX_EXCERPT: usize = 256;

/// Above this many labels in one sample, duplicates are found with a hash
/// set instead of a linear scan.
const LINEAR_DUP_CHECK_MAX: usize = 32;

/// The format of a scrape page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Format {
    /// The Prometheus text exposition format, version 0.0.4 (`text/plain`).
    #[default]
    PrometheusText,
    /// OpenMetrics 1.0 text (`application/openmetrics-text`).
    OpenMetrics,
}

impl Format {
    /// The format a `Content-Type` header value names:
    /// `application/openmetrics-text` (any parameters, any case) is
    /// [`Format::OpenMetrics`], everything else [`Format::PrometheusText`].
    pub fn from_content_type(ct: &str) -> Format {
        let media_type = ct.split(';').next().unwrap_or_default().trim();
        if media_type.eq_ignore_ascii_case("application/openmetrics-text") {
            Format::OpenMetrics
        } else {
            Format::PrometheusText
        }
    }
}

/// The type a `# TYPE` line declares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MetricType {
    /// `counter`.
    Counter,
    /// `gauge`.
    Gauge,
    /// `histogram`.
    Histogram,
    /// `summary`.
    Summary,
    /// `untyped` (Prometheus text) or `unknown` (OpenMetrics).
    Untyped,
    /// `gaugehistogram` (OpenMetrics only).
    GaugeHistogram,
    /// `info` (OpenMetrics only).
    Info,
    /// `stateset` (OpenMetrics only).
    StateSet,
}

impl MetricType {
    /// The type's name as OpenMetrics writes it (`Untyped` is `unknown`).
    pub fn as_str(self) -> &'static str {
        match self {
            MetricType::Counter => "counter",
            MetricType::Gauge => "gauge",
            MetricType::Histogram => "histogram",
            MetricType::Summary => "summary",
            MetricType::Untyped => "unknown",
            MetricType::GaugeHistogram => "gaugehistogram",
            MetricType::Info => "info",
            MetricType::StateSet => "stateset",
        }
    }

    /// The type a `TYPE` line's text names in `format`, if any.
    fn parse(text: &[u8], format: Format) -> Option<MetricType> {
        let t = match (text, format) {
            (b"counter", _) => MetricType::Counter,
            (b"gauge", _) => MetricType::Gauge,
            (b"histogram", _) => MetricType::Histogram,
            (b"summary", _) => MetricType::Summary,
            (b"untyped", Format::PrometheusText) => MetricType::Untyped,
            (b"unknown", Format::OpenMetrics) => MetricType::Untyped,
            (b"gaugehistogram", Format::OpenMetrics) => MetricType::GaugeHistogram,
            (b"info", Format::OpenMetrics) => MetricType::Info,
            (b"stateset", Format::OpenMetrics) => MetricType::StateSet,
            _ => return None,
        };
        Some(t)
    }
}

/// One entry of a scrape page.
#[derive(Debug, Clone, PartialEq)]
pub enum Entry<'a> {
    /// A `# HELP` line.
    Help {
        /// The metric (family) name.
        metric: &'a str,
        /// The help text, unescaped.
        text: Cow<'a, str>,
    },
    /// A `# TYPE` line.
    Type {
        /// The metric (family) name.
        metric: &'a str,
        /// The declared type.
        kind: MetricType,
    },
    /// A `# UNIT` line (OpenMetrics only).
    Unit {
        /// The metric (family) name.
        metric: &'a str,
        /// The unit; may be empty.
        unit: &'a str,
    },
    /// A sample line.
    Sample(SampleEntry<'a>),
}

/// One sample line.
#[derive(Debug, Clone, PartialEq)]
pub struct SampleEntry<'a> {
    /// The metric name.
    pub name: &'a str,
    /// The labels in page order, values unescaped (and `le`/`quantile`
    /// normalised, see the [module docs](self)). Names are unique and never
    /// `__name__`.
    pub labels: Vec<(&'a str, Cow<'a, str>)>,
    /// The value; any NaN has Prometheus' normal NaN bit pattern.
    pub value: f64,
    /// The sample's own timestamp in milliseconds, if the page gives one.
    pub timestamp_ms: Option<i64>,
}

/// Why a page could not be parsed.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
#[error("line {line}: {message}")]
pub struct ParseError {
    /// The 1-based line the error was found on.
    pub line: usize,
    /// What went wrong, worded as Prometheus words it.
    pub message: String,
}

/// The lexer's token kinds, named as Prometheus names them in errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Invalid,
    Eof,
    Linebreak,
    Whitespace,
    Help,
    Type,
    Unit,
    EofWord,
    Text,
    Comment,
    MName,
    BraceOpen,
    BraceClose,
    LName,
    LValue,
    Comma,
    Equal,
    Timestamp,
    Value,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Invalid => "INVALID",
            Kind::Eof => "EOF",
            Kind::Linebreak => "LINEBREAK",
            Kind::Whitespace => "WHITESPACE",
            Kind::Help => "HELP",
            Kind::Type => "TYPE",
            Kind::Unit => "UNIT",
            Kind::EofWord => "EOFWORD",
            Kind::Text => "TEXT",
            Kind::Comment => "COMMENT",
            Kind::MName => "MNAME",
            Kind::BraceOpen => "BOPEN",
            Kind::BraceClose => "BCLOSE",
            Kind::LName => "LNAME",
            Kind::LValue => "LVALUE",
            Kind::Comma => "COMMA",
            Kind::Equal => "EQUAL",
            Kind::Timestamp => "TIMESTAMP",
            Kind::Value => "VALUE",
        }
    }
}

/// A token: its kind and byte range. For [`Kind::Invalid`], `end` is the
/// position of the byte that could not be matched.
#[derive(Debug, Clone, Copy)]
struct Token {
    kind: Kind,
    start: usize,
    end: usize,
}

/// The lexer's start conditions, as in Prometheus' `promlex.l` and
/// `openmetricslex.l`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Init,
    Comment,
    Meta1,
    Meta2,
    Labels,
    LValue,
    Value,
    Timestamp,
    Exemplar,
    EValue,
    ETimestamp,
}

fn is_mname_start(c: u8) -> bool {
    c.is_ascii_alphabetic() || c == b'_' || c == b':'
}

fn is_mname_char(c: u8) -> bool {
    is_mname_start(c) || c.is_ascii_digit()
}

fn is_lname_start(c: u8) -> bool {
    c.is_ascii_alphabetic() || c == b'_'
}

fn is_lname_char(c: u8) -> bool {
    is_lname_start(c) || c.is_ascii_digit()
}

/// The tokenizer. For the Prometheus format the input is read as if a line
/// feed were appended, as Prometheus' parser appends one.
struct Lexer<'a> {
    b: &'a [u8],
    /// `b.len()`, plus one for the Prometheus format's virtual line feed.
    len: usize,
    om: bool,
    /// The next byte to read.
    i: usize,
    /// Start of the last token (kept for [`Kind::Eof`], as Prometheus does).
    start: usize,
    state: State,
}

impl<'a> Lexer<'a> {
    fn new(b: &'a [u8], format: Format) -> Self {
        let om = format == Format::OpenMetrics;
        Lexer { b, len: b.len() + usize::from(!om), om, i: 0, start: 0, state: State::Init }
    }

    /// The byte at `i`, counting the virtual line feed.
    fn at(&self, i: usize) -> Option<u8> {
        match self.b.get(i) {
            Some(&c) => Some(c),
            None if i < self.len => Some(b'\n'),
            None => None,
        }
    }

    /// The input bytes in `start..end`, with the virtual line feed if the
    /// range covers it (only ever needed for error excerpts).
    fn excerpt(&self, start: usize, end: usize) -> Cow<'a, [u8]> {
        let end = end.min(self.len);
        let start = start.min(end);
        if end <= self.b.len() {
            Cow::Borrowed(&self.b[start..end])
        } else {
            let mut v = self.b[start.min(self.b.len())..].to_vec();
            v.push(b'\n');
            Cow::Owned(v)
        }
    }

    fn tok(&mut self, kind: Kind, end: usize) -> Token {
        self.i = end;
        Token { kind, start: self.start, end }
    }

    /// An invalid token that failed to match at `fail`.
    fn invalid(&mut self, fail: usize) -> Token {
        self.i = fail;
        Token { kind: Kind::Invalid, start: self.start, end: fail }
    }

    /// The end of the run of bytes from `i` on that satisfy `f`.
    fn run(&self, mut i: usize, f: impl Fn(u8) -> bool) -> usize {
        while let Some(c) = self.at(i) {
            if !f(c) {
                break;
            }
            i += 1;
        }
        i
    }

    fn lex(&mut self) -> Token {
        if self.i >= self.len {
            return Token { kind: Kind::Eof, start: self.start, end: self.len };
        }
        self.start = self.i;
        if self.om { self.lex_om() } else { self.lex_prom() }
    }

    /// Scans a quoted string `"(\\.|[^\\"])*"` starting at `self.i`; with
    /// `!newline` a raw line feed is not allowed, with `!nul` a NUL byte is
    /// not allowed.
    fn quoted(&mut self, kind: Kind, next: State, newline: bool, nul: bool) -> Token {
        let mut j = self.i + 1;
        loop {
            match self.at(j) {
                None => return self.invalid(j),
                Some(b'"') => {
                    self.state = next;
                    return self.tok(kind, j + 1);
                }
                Some(b'\\') => match self.at(j + 1) {
                    None | Some(b'\n') => return self.invalid(j + 1),
                    Some(0) if !nul => return self.invalid(j + 1),
                    Some(_) => j += 2,
                },
                Some(b'\n') if !newline => return self.invalid(j),
                Some(0) if !nul => return self.invalid(j),
                Some(_) => j += 1,
            }
        }
    }

    /// The end of `word` if the input at `self.i` starts with it.
    fn keyword(&self, word: &[u8]) -> Option<usize> {
        let end = self.i + word.len();
        if self.b.get(self.i..end) == Some(word) { Some(end) } else { None }
    }

    fn lex_prom(&mut self) -> Token {
        let i = self.i;
        let Some(c) = self.at(i) else {
            return self.invalid(i);
        };
        if self.state == State::Meta2 {
            // `<sMeta2>{C}*` against `<*>[ \t]+`: the longer wins, whitespace
            // on a tie.
            let end = self.run(i, |c| c != b'\n');
            let ws_end = self.run(i, |c| c == b' ' || c == b'\t');
            if ws_end == end && end > i {
                return self.tok(Kind::Whitespace, end);
            }
            if end > i && c != b' ' && c != b'\t' {
                // Stricter than Prometheus, which drops the first byte.
                return self.invalid(i);
            }
            self.state = State::Init;
            return self.tok(Kind::Text, end);
        }
        if c == b' ' || c == b'\t' {
            let end = self.run(i, |c| c == b' ' || c == b'\t');
            return self.tok(Kind::Whitespace, end);
        }
        match self.state {
            State::Init => match c {
                b'\n' => self.tok(Kind::Linebreak, i + 1),
                b'#' => {
                    let ws_end = self.run(i + 1, |c| c == b' ' || c == b'\t');
                    if ws_end == i + 1 {
                        return self.prom_comment(i + 1);
                    }
                    self.i = ws_end;
                    self.state = State::Comment;
                    self.lex_prom_comment()
                }
                b'{' => {
                    self.state = State::Labels;
                    self.tok(Kind::BraceOpen, i + 1)
                }
                c if is_mname_start(c) => {
                    self.state = State::Value;
                    let end = self.run(i, is_mname_char);
                    self.tok(Kind::MName, end)
                }
                _ => self.invalid(i),
            },
            State::Comment => self.lex_prom_comment(),
            State::Meta1 => {
                if is_mname_start(c) {
                    self.state = State::Meta2;
                    let end = self.run(i, is_mname_char);
                    self.tok(Kind::MName, end)
                } else {
                    self.invalid(i)
                }
            }
            State::Labels => self.lex_label_punct(c, State::Value, State::LValue),
            State::LValue => {
                if c == b'"' {
                    self.quoted(Kind::LValue, State::Labels, true, true)
                } else {
                    self.invalid(i)
                }
            }
            State::Value => match c {
                b'{' => {
                    self.state = State::Labels;
                    self.tok(Kind::BraceOpen, i + 1)
                }
                b'\n' | 0 => self.invalid(i),
                _ => {
                    self.state = State::Timestamp;
                    let end = self.run(i, |c| !matches!(c, b'{' | b' ' | b'\t' | b'\n' | 0));
                    self.tok(Kind::Value, end)
                }
            },
            State::Timestamp => match c {
                b'\n' => {
                    self.state = State::Init;
                    self.tok(Kind::Linebreak, i + 1)
                }
                c if c.is_ascii_digit() => {
                    let end = self.run(i, |c| c.is_ascii_digit());
                    self.tok(Kind::Timestamp, end)
                }
                _ => self.invalid(i),
            },
            // OpenMetrics-only states.
            State::Meta2 | State::Exemplar | State::EValue | State::ETimestamp => self.invalid(i),
        }
    }

    /// After `#[ \t]+`: `HELP` or `TYPE` followed by whitespace, or else a
    /// comment.
    fn lex_prom_comment(&mut self) -> Token {
        for (word, kind) in [(b"HELP", Kind::Help), (b"TYPE", Kind::Type)] {
            if let Some(end) = self.keyword(word) {
                let ws_end = self.run(end, |c| c == b' ' || c == b'\t');
                if ws_end > end {
                    self.state = State::Meta1;
                    return self.tok(kind, ws_end);
                }
            }
        }
        self.prom_comment(self.i)
    }

    /// A comment running from `from` to the end of the line.
    fn prom_comment(&mut self, from: usize) -> Token {
        let end = self.run(from, |c| c != b'\n');
        self.state = State::Init;
        self.tok(Kind::Comment, end)
    }

    /// The tokens inside braces: label names, `=`, `,` and `}`.
    fn lex_label_punct(&mut self, c: u8, after_close: State, after_equal: State) -> Token {
        let i = self.i;
        match c {
            b'}' => {
                self.state = after_close;
                self.tok(Kind::BraceClose, i + 1)
            }
            b'=' => {
                self.state = after_equal;
                self.tok(Kind::Equal, i + 1)
            }
            b',' => self.tok(Kind::Comma, i + 1),
            c if is_lname_start(c) => {
                let end = self.run(i, is_lname_char);
                self.tok(Kind::LName, end)
            }
            _ => self.invalid(i),
        }
    }

    /// `{S}[^ \n]+` (a NUL ends the run, as in Prometheus' lexer).
    fn spaced_run(&mut self, kind: Kind, next: State) -> Token {
        let i = self.i;
        if self.at(i) != Some(b' ') {
            return self.invalid(i);
        }
        let end = self.run(i + 1, |c| !matches!(c, b' ' | b'\n' | 0));
        if end == i + 1 {
            return self.invalid(end);
        }
        self.state = next;
        self.tok(kind, end)
    }

    fn lex_om(&mut self) -> Token {
        let i = self.i;
        let Some(c) = self.at(i) else {
            return self.invalid(i);
        };
        match self.state {
            State::Init => match c {
                b'#' => {
                    if self.at(i + 1) != Some(b' ') {
                        return self.invalid(i + 1);
                    }
                    self.i = i + 2;
                    self.state = State::Comment;
                    self.lex_om_comment()
                }
                b'{' => {
                    self.state = State::Labels;
                    self.tok(Kind::BraceOpen, i + 1)
                }
                c if is_mname_start(c) => {
                    self.state = State::Value;
                    let end = self.run(i, is_mname_char);
                    self.tok(Kind::MName, end)
                }
                _ => self.invalid(i),
            },
            State::Comment => self.lex_om_comment(),
            State::Meta1 => {
                if is_mname_start(c) {
                    self.state = State::Meta2;
                    let end = self.run(i, is_mname_char);
                    self.tok(Kind::MName, end)
                } else {
                    self.invalid(i)
                }
            }
            State::Meta2 => {
                // `{S}{C}*\n`
                if c != b' ' {
                    return self.invalid(i);
                }
                let end = self.run(i, |c| c != b'\n');
                if self.at(end) != Some(b'\n') {
                    return self.invalid(end);
                }
                self.state = State::Init;
                self.tok(Kind::Text, end + 1)
            }
            State::Labels => self.lex_label_punct(c, State::Value, State::LValue),
            State::LValue => {
                if c == b'"' {
                    self.quoted(Kind::LValue, State::Labels, false, true)
                } else {
                    self.invalid(i)
                }
            }
            State::Value => {
                if c == b'{' {
                    self.state = State::Labels;
                    self.tok(Kind::BraceOpen, i + 1)
                } else {
                    self.spaced_run(Kind::Value, State::Timestamp)
                }
            }
            State::Timestamp => match c {
                b'\n' => {
                    self.state = State::Init;
                    self.tok(Kind::Linebreak, i + 1)
                }
                _ if self.b.get(i..i + 4) == Some(b" # {") => {
                    self.state = State::Exemplar;
                    self.tok(Kind::Comment, i + 4)
                }
                _ => self.spaced_run(Kind::Timestamp, State::Timestamp),
            },
            State::Exemplar => self.lex_label_punct(c, State::EValue, State::EValue),
            State::EValue => {
                if c == b'"' {
                    self.quoted(Kind::LValue, State::Exemplar, false, false)
                } else {
                    self.spaced_run(Kind::Value, State::ETimestamp)
                }
            }
            State::ETimestamp => {
                if c == b'\n' {
                    self.state = State::Init;
                    self.tok(Kind::Linebreak, i + 1)
                } else {
                    self.spaced_run(Kind::Timestamp, State::ETimestamp)
                }
            }
        }
    }

    /// After `# `: `HELP `, `TYPE `, `UNIT ` or `EOF` (with an optional line
    /// feed).
    fn lex_om_comment(&mut self) -> Token {
        for (word, kind) in [(&b"HELP "[..], Kind::Help), (&b"TYPE "[..], Kind::Type), (&b"UNIT "[..], Kind::Unit)] {
            if let Some(end) = self.keyword(word) {
                self.state = State::Meta1;
                return self.tok(kind, end);
            }
        }
        if let Some(end) = self.keyword(b"EOF") {
            self.state = State::Init;
            let end = if self.at(end) == Some(b'\n') { end + 1 } else { end };
            return self.tok(Kind::EofWord, end);
        }
        // Fail where the longest keyword prefix stops matching.
        let matched = [&b"HELP "[..], &b"TYPE "[..], &b"UNIT "[..], &b"EOF"[..]]
            .iter()
            .map(|w| w.iter().zip(self.b.get(self.i..).unwrap_or_default()).take_while(|(a, b)| a == b).count())
            .max()
            .unwrap_or(0);
        self.invalid(self.i + matched)
    }
}

/// A streaming parser over one scrape page; iterate it for the page's
/// [`Entry`]s. It yields at most one error, after which it is exhausted.
///
/// ```
/// use strata_collector::exposition::{Entry, Format, Parser};
///
/// let page = "# TYPE up gauge\nup{job=\"node\"} 1\n";
/// let samples: Vec<_> = Parser::new(page, Format::PrometheusText)
///     .filter_map(|e| match e {
///         Ok(Entry::Sample(s)) => Some(s),
///         _ => None,
///     })
///     .collect();
/// assert_eq!(samples[0].name, "up");
/// assert_eq!(samples[0].labels[0].1, "node");
/// ```
pub struct Parser<'a> {
    lx: Lexer<'a>,
    format: Format,
    /// Start of the entry being parsed.
    entry_start: usize,
    /// The type of the last `# TYPE` line.
    mtype: MetricType,
    /// The metric name of the last `# TYPE` line.
    family: &'a str,
    done: bool,
    /// Scratch buffers for `le`/`quantile` normalisation.
    fbuf: String,
    fout: String,
}

impl std::fmt::Debug for Parser<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Parser")
            .field("format", &self.format)
            .field("offset", &self.lx.i)
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

/// What the parser keeps of a label set.
enum LabelSink<'s, 'a> {
    /// A sample's labels, collected.
    Sample(&'s mut Vec<(&'a str, Cow<'a, str>)>),
    /// An exemplar's or a nameless sample's labels: validated, dropped.
    Discard,
}

impl<'a> Parser<'a> {
    /// A parser over `input` (a `&str`, `&[u8]`, `&Vec<u8>`, `&Bytes`, ...).
    pub fn new<B: AsRef<[u8]> + ?Sized>(input: &'a B, format: Format) -> Self {
        Parser {
            lx: Lexer::new(input.as_ref(), format),
            format,
            entry_start: 0,
            mtype: MetricType::Untyped,
            family: "",
            done: false,
            fbuf: String::new(),
            fout: String::new(),
        }
    }

    /// The format this parser reads.
    pub fn format(&self) -> Format {
        self.format
    }

    /// The next token, skipping whitespace.
    fn next_token(&mut self) -> Token {
        loop {
            let t = self.lx.lex();
            if t.kind != Kind::Whitespace {
                return t;
            }
        }
    }

    /// An error found at byte `pos`.
    fn error_at(&self, pos: usize, message: String) -> ParseError {
        let upto = pos.min(self.lx.b.len());
        let line = 1 + self.lx.b[..upto].iter().filter(|&&c| c == b'\n').count();
        ParseError { line, message }
    }

    /// Prometheus' `parseError`: `<exp>, got "<token>" ("<KIND>") while
    /// parsing: "<entry so far>"`.
    fn parse_error(&self, exp: &str, got: Token) -> ParseError {
        let e = got.end.saturating_add(1);
        let message = format!(
            "{exp}, got {} ({}) while parsing: {}",
            go_quote(&self.lx.excerpt(got.start, e)),
            go_quote(got.kind.name().as_bytes()),
            go_quote(&self.lx.excerpt(self.entry_start, e)),
        );
        self.error_at(got.start, message)
    }

    /// `<what> while parsing: "<entry up to end>"`.
    fn while_parsing(&self, pos: usize, what: &str, end: usize) -> ParseError {
        let message = format!("{what} while parsing: {}", go_quote(&self.lx.excerpt(self.entry_start, end)));
        self.error_at(pos, message)
    }

    fn no_eof_error(&self) -> ParseError {
        self.error_at(self.lx.b.len(), "data does not end with # EOF".to_owned())
    }

    /// The token's bytes as `&str`; only for tokens the lexer restricts to
    /// ASCII (names).
    fn ascii(&self, t: Token) -> Result<&'a str, ParseError> {
        let b: &'a [u8] = self.lx.b;
        b.get(t.start..t.end)
            .and_then(|s| std::str::from_utf8(s).ok())
            .ok_or_else(|| self.parse_error("unexpected token", t))
    }

    /// A float token's value, as Prometheus' `parseFloat`.
    fn float(&self, t: Token, from: usize) -> Result<f64, ParseError> {
        let s = self.lx.b.get(from..t.end).unwrap_or_default();
        parse_go_float(s).map_err(|e| {
            let what = match e {
                FloatError::Unsupported => "unsupported character in float".to_owned(),
                FloatError::Syntax => format!("strconv.ParseFloat: parsing {}: invalid syntax", go_quote(s)),
                FloatError::Range => {
                    format!("strconv.ParseFloat: parsing {}: value out of range", go_quote(s))
                }
            };
            self.while_parsing(t.start, &what, t.end)
        })
    }

    /// Parses a label set after `{`, up to and including `}`.
    fn parse_labels(&mut self, mut sink: LabelSink<'_, 'a>) -> Result<(), ParseError> {
        let om = self.format == Format::OpenMetrics;
        let mut seen: Option<std::collections::HashSet<&'a str>> = None;
        let mut t = self.next_token();
        loop {
            match t.kind {
                Kind::BraceClose => return Ok(()),
                Kind::LName => {}
                _ => return Err(self.parse_error("expected label name", t)),
            }
            let name = self.ascii(t)?;
            let eq = self.next_token();
            if eq.kind != Kind::Equal {
                return Err(self.parse_error("expected equal", eq));
            }
            let v = self.next_token();
            if v.kind != Kind::LValue {
                return Err(self.parse_error("expected label value", v));
            }
            let b: &'a [u8] = self.lx.b;
            let raw = b.get(v.start + 1..v.end - 1).unwrap_or_default();
            let Ok(raw) = std::str::from_utf8(raw) else {
                let quoted = go_quote(b.get(v.start..v.end).unwrap_or_default());
                return Err(self.error_at(v.start, format!("invalid UTF-8 label value: {quoted}")));
            };
            if let LabelSink::Sample(labels) = &mut sink {
                let duplicate = name == "__name__"
                    || if labels.len() < LINEAR_DUP_CHECK_MAX {
                        labels.iter().any(|(n, _)| *n == name)
                    } else {
                        let set = seen.get_or_insert_with(|| labels.iter().map(|(n, _)| *n).collect());
                        !set.insert(name)
                    };
                if duplicate {
                    let what = format!("duplicate label name {}", go_quote(name.as_bytes()));
                    return Err(self.while_parsing(t.start, &what, v.end));
                }
                let value = unescape(raw, true);
                let value = self.normalize(name, value);
                labels.push((name, value));
            }
            t = self.next_token();
            if t.kind == Kind::Comma {
                t = self.next_token();
            } else if om && t.kind != Kind::BraceClose {
                return Err(self.parse_error("expected comma or brace close", t));
            }
        }
    }

    /// Prometheus 3's normalisation of `le` (histograms) and `quantile`
    /// (summaries) label values to its float formatting.
    fn normalize(&mut self, name: &str, value: Cow<'a, str>) -> Cow<'a, str> {
        let applies = match self.mtype {
            MetricType::Histogram => name == "le",
            MetricType::Summary => name == "quantile",
            _ => false,
        };
        if !applies {
            return value;
        }
        let Ok(f) = parse_go_float(value.as_bytes()) else {
            return value;
        };
        format_om_float(f, &mut self.fbuf, &mut self.fout);
        if self.fout == value { value } else { Cow::Owned(self.fout.clone()) }
    }

    /// Parses the value and optional timestamp of a Prometheus-format sample,
    /// starting at token `t`; `prev_end` is where the name or labels ended.
    fn prom_sample_suffix(&mut self, t: Token, prev_end: usize) -> Result<(f64, Option<i64>), ParseError> {
        if t.kind != Kind::Value {
            return Err(self.parse_error("expected value after metric", t));
        }
        if t.start == prev_end {
            return Err(self.parse_error("expected whitespace before value", t));
        }
        let value = normal_nan(self.float(t, t.start)?);
        let t2 = self.next_token();
        match t2.kind {
            Kind::Linebreak => Ok((value, None)),
            Kind::Timestamp => {
                let digits = self.lx.b.get(t2.start..t2.end).unwrap_or_default();
                let ts = std::str::from_utf8(digits).ok().and_then(|s| s.parse::<i64>().ok()).ok_or_else(|| {
                    let what = format!("strconv.ParseInt: parsing {}: value out of range", go_quote(digits));
                    self.while_parsing(t2.start, &what, t2.end)
                })?;
                let t3 = self.next_token();
                if t3.kind != Kind::Linebreak {
                    return Err(self.parse_error("expected next entry after timestamp", t3));
                }
                Ok((value, Some(ts)))
            }
            _ => Err(self.parse_error("expected timestamp or new record", t2)),
        }
    }

    fn next_prom(&mut self) -> Result<Option<Entry<'a>>, ParseError> {
        loop {
            self.entry_start = self.lx.i;
            let t = self.next_token();
            match t.kind {
                Kind::Eof => return Ok(None),
                Kind::Linebreak => continue,
                Kind::Comment => {
                    let lb = self.next_token();
                    if lb.kind != Kind::Linebreak {
                        return Err(self.parse_error("linebreak expected after comment", lb));
                    }
                    continue;
                }
                Kind::Help | Kind::Type => {
                    let entry = self.metadata(t.kind)?;
                    let lb = self.next_token();
                    if lb.kind != Kind::Linebreak {
                        return Err(self.parse_error("linebreak expected after metadata", lb));
                    }
                    return Ok(Some(entry));
                }
                Kind::MName => return self.sample(t).map(Some),
                Kind::BraceOpen => return Err(self.nameless_sample()),
                _ => return Err(self.parse_error("expected a valid start token", t)),
            }
        }
    }

    fn next_om(&mut self) -> Result<Option<Entry<'a>>, ParseError> {
        loop {
            self.entry_start = self.lx.i;
            let t = self.next_token();
            match t.kind {
                Kind::EofWord => {
                    let t2 = self.next_token();
                    if t2.kind != Kind::Eof {
                        return Err(self.error_at(t2.start, "unexpected data after # EOF".to_owned()));
                    }
                    return Ok(None);
                }
                Kind::Eof => return Err(self.no_eof_error()),
                Kind::Help | Kind::Type | Kind::Unit => return self.metadata(t.kind).map(Some),
                Kind::MName => {
                    let entry = self.sample(t)?;
                    if let Entry::Sample(s) = &entry
                        && self.is_created_series(s.name)
                    {
                        continue;
                    }
                    return Ok(Some(entry));
                }
                Kind::BraceOpen => return Err(self.nameless_sample()),
                _ => return Err(self.parse_error("expected a valid start token", t)),
            }
        }
    }

    /// Whether `name` is the `_created` series of the current counter,
    /// summary or histogram family.
    fn is_created_series(&self, name: &str) -> bool {
        matches!(self.mtype, MetricType::Counter | MetricType::Summary | MetricType::Histogram)
            && name.strip_suffix("_created") == Some(self.family)
    }

    /// The rest of a `HELP`, `TYPE` or `UNIT` line (without the Prometheus
    /// format's line feed).
    fn metadata(&mut self, kind: Kind) -> Result<Entry<'a>, ParseError> {
        let name_tok = self.next_token();
        if name_tok.kind != Kind::MName {
            let exp = format!("expected metric name after {}", kind.name());
            return Err(self.parse_error(&exp, name_tok));
        }
        let metric = self.ascii(name_tok)?;
        let text_tok = self.next_token();
        if text_tok.kind != Kind::Text {
            let message = match self.format {
                Format::OpenMetrics => format!("expected text in {}", kind.name()),
                Format::PrometheusText => {
                    format!("expected text in {}, got {}", kind.name(), text_tok.kind.name())
                }
            };
            return Err(self.error_at(text_tok.start, message));
        }
        let b: &'a [u8] = self.lx.b;
        let (from, to) = match self.format {
            // `{S}{C}*\n`
            Format::OpenMetrics => (text_tok.start + 1, text_tok.end - 1),
            // `[ \t]{C}*` or empty
            Format::PrometheusText => ((text_tok.start + 1).min(text_tok.end), text_tok.end),
        };
        let text = b.get(from..to).unwrap_or_default();
        match kind {
            Kind::Type => {
                let Some(t) = MetricType::parse(text, self.format) else {
                    let message = format!("invalid metric type {}", go_quote(text));
                    return Err(self.error_at(text_tok.start, message));
                };
                self.mtype = t;
                self.family = metric;
                Ok(Entry::Type { metric, kind: t })
            }
            Kind::Help => {
                let Ok(text) = std::str::from_utf8(text) else {
                    let message = format!("help text {} is not a valid utf8 string", go_quote(text));
                    return Err(self.error_at(text_tok.start, message));
                };
                let text = unescape(text, self.format == Format::OpenMetrics);
                Ok(Entry::Help { metric, text })
            }
            _ => {
                let unit_ok = text.is_empty()
                    || (metric.len() > text.len()
                        && metric.as_bytes().ends_with(text)
                        && metric.as_bytes()[metric.len() - text.len() - 1] == b'_');
                match std::str::from_utf8(text) {
                    Ok(unit) if unit_ok => Ok(Entry::Unit { metric, unit }),
                    _ => {
                        let message =
                            format!("unit {} not a suffix of metric {}", go_quote(text), go_quote(metric.as_bytes()));
                        Err(self.error_at(text_tok.start, message))
                    }
                }
            }
        }
    }

    /// A sample line, from its metric name token on.
    fn sample(&mut self, name_tok: Token) -> Result<Entry<'a>, ParseError> {
        let name = self.ascii(name_tok)?;
        let mut labels = Vec::new();
        let mut prev_end = name_tok.end;
        let mut t = self.next_token();
        if t.kind == Kind::BraceOpen {
            self.parse_labels(LabelSink::Sample(&mut labels))?;
            prev_end = self.lx.i;
            t = self.next_token();
        }
        let (value, timestamp_ms) = match self.format {
            Format::PrometheusText => self.prom_sample_suffix(t, prev_end)?,
            Format::OpenMetrics => self.om_sample_suffix(t)?,
        };
        Ok(Entry::Sample(SampleEntry { name, labels, value, timestamp_ms }))
    }

    /// A line starting with `{`: Prometheus 3 reads a quoted metric name
    /// there, which Strata does not support, so it is always an error.
    fn nameless_sample(&mut self) -> ParseError {
        if let Err(e) = self.parse_labels(LabelSink::Discard) {
            return e;
        }
        let t = self.next_token();
        self.while_parsing(t.start, "metric name not set", t.end)
    }

    /// An OpenMetrics value token's value (`{S}[^ \n]+`).
    fn om_float(&self, t: Token, after: &str) -> Result<f64, ParseError> {
        if t.kind != Kind::Value {
            return Err(self.parse_error(&format!("expected value after {after}"), t));
        }
        Ok(normal_nan(self.float(t, t.start + 1)?))
    }

    /// An OpenMetrics timestamp token in milliseconds.
    fn om_timestamp(&self, t: Token, what: &str) -> Result<i64, ParseError> {
        let secs = self.float(t, t.start + 1)?;
        if !secs.is_finite() {
            let shown = if secs.is_nan() {
                "NaN"
            } else if secs > 0.0 {
                "+Inf"
            } else {
                "-Inf"
            };
            return Err(self.error_at(t.start, format!("invalid {what} {shown}")));
        }
        let s = self.lx.b.get(t.start + 1..t.end).unwrap_or_default();
        seconds_to_ms(s, secs)
            .ok_or_else(|| self.while_parsing(t.start, &format!("{what} {} out of range", go_quote(s)), t.end))
    }

    /// Parses the value, optional timestamp and optional exemplar of an
    /// OpenMetrics sample, starting at token `t`.
    fn om_sample_suffix(&mut self, t: Token) -> Result<(f64, Option<i64>), ParseError> {
        let value = self.om_float(t, "metric")?;
        let t2 = self.next_token();
        let ts = match t2.kind {
            Kind::Eof => return Err(self.no_eof_error()),
            Kind::Linebreak => None,
            Kind::Comment => {
                self.exemplar()?;
                None
            }
            Kind::Timestamp => {
                let ts = self.om_timestamp(t2, "timestamp")?;
                let t3 = self.next_token();
                match t3.kind {
                    Kind::Linebreak => {}
                    Kind::Comment => self.exemplar()?,
                    _ => return Err(self.parse_error("expected next entry after timestamp", t3)),
                }
                Some(ts)
            }
            _ => return Err(self.parse_error("expected timestamp or new record", t2)),
        };
        Ok((value, ts))
    }

    /// An exemplar after ` # {`, validated and dropped.
    fn exemplar(&mut self) -> Result<(), ParseError> {
        self.parse_labels(LabelSink::Discard)?;
        let v = self.next_token();
        self.om_float(v, "exemplar labels")?;
        let t2 = self.next_token();
        match t2.kind {
            Kind::Eof => Err(self.no_eof_error()),
            Kind::Linebreak => Ok(()),
            Kind::Timestamp => {
                self.om_timestamp(t2, "exemplar timestamp")?;
                let t3 = self.next_token();
                if t3.kind != Kind::Linebreak {
                    return Err(self.parse_error("expected next entry after exemplar timestamp", t3));
                }
                Ok(())
            }
            _ => Err(self.parse_error("expected timestamp or comment", t2)),
        }
    }
}

impl<'a> Iterator for Parser<'a> {
    type Item = Result<Entry<'a>, ParseError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let r = match self.format {
            Format::PrometheusText => self.next_prom(),
            Format::OpenMetrics => self.next_om(),
        };
        match r {
            Ok(Some(e)) => Some(Ok(e)),
            Ok(None) => {
                self.done = true;
                None
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

impl FusedIterator for Parser<'_> {}

/// Replaces any NaN by Prometheus' normal NaN.
fn normal_nan(v: f64) -> f64 {
    if v.is_nan() { f64::from_bits(NORMAL_NAN_BITS) } else { v }
}

/// Unescapes `\\`, `\n` and (with `quote`) `\"`, keeping any other backslash
/// sequence as written; borrows when there is nothing to unescape.
fn unescape(s: &str, quote: bool) -> Cow<'_, str> {
    if !s.contains('\\') {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        let mut lookahead = chars.clone();
        match lookahead.next() {
            Some('\\') => out.push('\\'),
            Some('n') => out.push('\n'),
            Some('"') if quote => out.push('"'),
            _ => {
                out.push('\\');
                continue;
            }
        }
        chars = lookahead;
    }
    Cow::Owned(out)
}

/// Why a float literal was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FloatError {
    /// `p`, `P` or `_`: Prometheus keeps to pre-Go-1.13 float syntax.
    Unsupported,
    /// Not a float.
    Syntax,
    /// A finite literal too large for `f64`.
    Range,
}

/// Parses `s` as Prometheus' `parseFloat` does (Go's `strconv.ParseFloat`
/// without hex floats and underscores).
fn parse_go_float(s: &[u8]) -> Result<f64, FloatError> {
    if s.iter().any(|c| matches!(c, b'p' | b'P' | b'_')) {
        return Err(FloatError::Unsupported);
    }
    let st = std::str::from_utf8(s).map_err(|_| FloatError::Syntax)?;
    let (neg, body) = match st.as_bytes().first() {
        Some(b'-') => (true, &st[1..]),
        Some(b'+') => (false, &st[1..]),
        _ => (false, st),
    };
    if body.eq_ignore_ascii_case("inf") || body.eq_ignore_ascii_case("infinity") {
        return Ok(if neg { f64::NEG_INFINITY } else { f64::INFINITY });
    }
    if body.eq_ignore_ascii_case("nan") {
        // Go takes no sign on NaN.
        return if body.len() == st.len() { Ok(f64::NAN) } else { Err(FloatError::Syntax) };
    }
    // Only decimal literals are left; Rust's grammar for those matches Go's.
    if !body.bytes().all(|c| c.is_ascii_digit() || matches!(c, b'.' | b'e' | b'E' | b'+' | b'-')) {
        return Err(FloatError::Syntax);
    }
    match st.parse::<f64>() {
        Ok(v) if v.is_infinite() => Err(FloatError::Range),
        Ok(v) => Ok(v),
        Err(_) => Err(FloatError::Syntax),
    }
}

/// Converts an OpenMetrics timestamp in seconds to milliseconds, truncating
/// toward zero as Prometheus does. Plain decimals (`[+-]digits[.digits]`) are
/// converted exactly from their digits; other syntax goes through `secs`.
/// `None` if the result does not fit an `i64`.
fn seconds_to_ms(s: &[u8], secs: f64) -> Option<i64> {
    let (neg, body) = match s.first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let (int, frac) = match body.iter().position(|&c| c == b'.') {
        Some(p) => (&body[..p], &body[p + 1..]),
        None => (body, &body[body.len()..]),
    };
    let decimal = !(int.is_empty() && frac.is_empty()) && int.iter().chain(frac).all(u8::is_ascii_digit);
    if !decimal {
        let ms = (secs * 1000.0).trunc();
        // i64::MAX as f64 rounds up to 2^63, so the upper bound is exclusive.
        return (ms >= i64::MIN as f64 && ms < i64::MAX as f64).then_some(ms as i64);
    }
    // Accumulate in i128 so that `i64::MIN` ms is reachable; any more than
    // 20 integer digits is out of range anyway.
    if int.len() > 20 {
        return None;
    }
    let mut ms: i128 = 0;
    for &d in int {
        ms = ms * 10 + i128::from(d - b'0');
    }
    ms *= 1000;
    let mut scale = 100;
    for &d in frac.iter().take(3) {
        ms += i128::from(d - b'0') * scale;
        scale /= 10;
    }
    i64::try_from(if neg { -ms } else { ms }).ok()
}

/// Formats `f` as Prometheus' `formatOpenMetricsFloat`: Go's shortest `%g`
/// (exponent form below 1e-4 and from 1e6), with `.0` appended to integers,
/// `NaN`, `+Inf`, `-Inf`. `tmp` is scratch space; the result is in `out`.
fn format_om_float(f: f64, tmp: &mut String, out: &mut String) {
    out.clear();
    if f.is_nan() {
        out.push_str("NaN");
        return;
    }
    if f.is_infinite() {
        out.push_str(if f > 0.0 { "+Inf" } else { "-Inf" });
        return;
    }
    tmp.clear();
    // Rust's `{:e}` is the shortest round-tripping form: `-1.25e-7`, `0e0`.
    let _ = write!(tmp, "{f:e}");
    let (mantissa, exp) = tmp.split_once('e').unwrap_or((tmp.as_str(), "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let (neg, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => (true, m),
        None => (false, mantissa),
    };
    if neg {
        out.push('-');
    }
    let (first, rest) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    if !(-4..6).contains(&exp) {
        out.push_str(first);
        if !rest.is_empty() {
            out.push('.');
            out.push_str(rest);
        }
        let _ = write!(out, "e{}{:02}", if exp < 0 { '-' } else { '+' }, exp.unsigned_abs());
        return;
    }
    let digits = || first.chars().chain(rest.chars());
    let nd = first.len() + rest.len();
    if exp < 0 {
        out.push_str("0.");
        for _ in 0..(-exp - 1) {
            out.push('0');
        }
        out.extend(digits());
    } else {
        let dp = usize::try_from(exp).unwrap_or(0) + 1;
        out.extend(digits().take(dp));
        for _ in nd..dp {
            out.push('0');
        }
        if nd > dp {
            out.push('.');
            out.extend(digits().skip(dp));
        } else {
            out.push_str(".0");
        }
    }
}

/// Quotes bytes as Go's `%q` does: `"..."` with Go escapes, invalid UTF-8
/// as `\xNN`; cut at [`MAX_EXCERPT`] bytes with `...` after the quote.
fn go_quote(b: &[u8]) -> String {
    let (b, cut) = if b.len() > MAX_EXCERPT { (&b[..MAX_EXCERPT], true) } else { (b, false) };
    let mut out = String::with_capacity(b.len() + 2);
    out.push('"');
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
                c if (c as u32) < 0x20 || c == '\x7f' => {
                    let _ = write!(out, "\\x{:02x}", c as u32);
                }
                c if c.is_control() => {
                    let _ = write!(out, "\\u{:04x}", c as u32);
                }
                c => out.push(c),
            }
        }
        for byte in chunk.invalid() {
            let _ = write!(out, "\\x{byte:02x}");
        }
    }
    out.push('"');
    if cut {
        out.push_str("...");
    }
    out
}
