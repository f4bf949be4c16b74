//! Tests of the exposition parser: Prometheus' own error cases, the format
//! details, golden pages under `collector/testdata/exposition/`, and proptest
//! fuzzing (no panic on any bytes; generated pages round-trip).

use super::*;
use proptest::prelude::*;
use strata_model::is_stale_nan;
use strata_model::labels::{is_valid_label_name, is_valid_metric_name};

const PROM: Format = Format::PrometheusText;
const OM: Format = Format::OpenMetrics;

/// All entries of a page, and the error that ended it, if any.
fn parse_all(input: &[u8], format: Format) -> (Vec<Entry<'_>>, Option<ParseError>) {
    let mut entries = Vec::new();
    for r in Parser::new(input, format) {
        match r {
            Ok(e) => entries.push(e),
            Err(e) => return (entries, Some(e)),
        }
    }
    (entries, None)
}

/// The entries of a page that must parse.
fn entries(input: &str, format: Format) -> Vec<Entry<'_>> {
    let (entries, err) = parse_all(input.as_bytes(), format);
    if let Some(e) = err {
        panic!("unexpected error for {input:?}: {e}");
    }
    entries
}

/// The samples of a page that must parse.
fn samples(input: &str, format: Format) -> Vec<SampleEntry<'_>> {
    entries(input, format)
        .into_iter()
        .filter_map(|e| match e {
            Entry::Sample(s) => Some(s),
            _ => None,
        })
        .collect()
}

/// The one sample of a page that must parse to exactly one sample.
fn sample(input: &str, format: Format) -> SampleEntry<'_> {
    let mut s = samples(input, format);
    assert_eq!(s.len(), 1, "{input:?}");
    s.remove(0)
}

/// The error a page must end with.
fn error(input: &[u8], format: Format) -> ParseError {
    match parse_all(input, format) {
        (_, Some(e)) => e,
        (entries, None) => panic!("no error for {:?}: {entries:?}", String::from_utf8_lossy(input)),
    }
}

fn error_message(input: &[u8], format: Format) -> String {
    error(input, format).message
}

fn fmt_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".to_owned()
    } else if v == f64::INFINITY {
        "+Inf".to_owned()
    } else if v == f64::NEG_INFINITY {
        "-Inf".to_owned()
    } else {
        format!("{v:?}")
    }
}

/// One line per entry, as the golden files hold them.
fn dump(entry: &Entry<'_>) -> String {
    match entry {
        Entry::Help { metric, text } => format!("HELP {metric} {text:?}"),
        Entry::Type { metric, kind } => format!("TYPE {metric} {kind:?}"),
        Entry::Unit { metric, unit } => format!("UNIT {metric} {unit:?}"),
        Entry::Sample(s) => {
            let labels: Vec<String> = s.labels.iter().map(|(n, v)| format!("{n}={v:?}")).collect();
            let mut line = format!("SAMPLE {}{{{}}} {}", s.name, labels.join(","), fmt_value(s.value));
            if let Some(ts) = s.timestamp_ms {
                line.push_str(&format!(" @{ts}"));
            }
            line
        }
    }
}

// ---------------------------------------------------------------------------
// Content type

#[test]
fn format_from_content_type() {
    for (ct, f) in [
        ("application/openmetrics-text; version=1.0.0; charset=utf-8", OM),
        ("application/openmetrics-text", OM),
        (" Application/OpenMetrics-Text ;version=0.0.1", OM),
        ("text/plain; version=0.0.4; charset=utf-8", PROM),
        ("text/plain", PROM),
        ("application/json", PROM),
        ("", PROM),
        ("application/openmetrics-textual", PROM),
    ] {
        assert_eq!(Format::from_content_type(ct), f, "{ct:?}");
    }
}

// ---------------------------------------------------------------------------
// Prometheus text format

#[test]
fn prom_basic_page() {
    let page = "# HELP m Some help.\n# TYPE m counter\n# a comment\n\nm{a=\"1\",b=\"2\"} 3 1000\nm 4\n";
    let got = entries(page, PROM);
    assert_eq!(
        got,
        vec![
            Entry::Help { metric: "m", text: Cow::Borrowed("Some help.") },
            Entry::Type { metric: "m", kind: MetricType::Counter },
            Entry::Sample(SampleEntry {
                name: "m",
                labels: vec![("a", Cow::Borrowed("1")), ("b", Cow::Borrowed("2"))],
                value: 3.0,
                timestamp_ms: Some(1000),
            }),
            Entry::Sample(SampleEntry { name: "m", labels: vec![], value: 4.0, timestamp_ms: None }),
        ]
    );
}

#[test]
fn prom_empty_and_comment_only_pages() {
    assert!(entries("", PROM).is_empty());
    assert!(entries("\n\n\n", PROM).is_empty());
    assert!(entries("# just a comment", PROM).is_empty());
    assert!(entries("#\n#x\n# \n#\t\n# HELP\n# TYPE\n", PROM).is_empty());
}

#[test]
fn prom_whitespace_is_flexible() {
    let s = sample("  m \t{ a = \"1\" , b=\"2\" , }\t 5 \t 7 \t", PROM);
    assert_eq!(s.name, "m");
    assert_eq!(s.labels, vec![("a", Cow::Borrowed("1")), ("b", Cow::Borrowed("2"))]);
    assert_eq!(s.value, 5.0);
    assert_eq!(s.timestamp_ms, Some(7));
    // As in Prometheus, whitespace may separate the name and the label set.
    assert_eq!(sample("m {a=\"1\"} 1", PROM).labels.len(), 1);
    // The last line needs no line feed.
    assert_eq!(sample("m 1", PROM).value, 1.0);
    // Empty braces.
    assert!(sample("m{} 1", PROM).labels.is_empty());
}

#[test]
fn prom_label_commas_as_prometheus() {
    // Trailing comma.
    assert_eq!(sample("m{a=\"1\",} 1", PROM).labels.len(), 1);
    // Prometheus' text parser also takes labels without a comma between.
    assert_eq!(sample("m{a=\"1\" b=\"2\"} 1", PROM).labels.len(), 2);
    assert_eq!(sample("m{a=\"1\"b=\"2\"} 1", PROM).labels.len(), 2);
    // But not a leading or a double comma.
    assert!(error_message(b"m{,a=\"1\"} 1", PROM).starts_with("expected label name, got \",a\" (\"COMMA\")"));
    assert!(error_message(b"m{a=\"1\",,} 1", PROM).starts_with("expected label name, got \",}\" (\"COMMA\")"));
}

#[test]
fn prom_help_text() {
    let help = |page: &'static str| match entries(page, PROM).remove(0) {
        Entry::Help { metric, text } => (metric, text),
        e => panic!("not help: {e:?}"),
    };
    assert_eq!(help("# HELP m\n"), ("m", Cow::Borrowed("")));
    assert_eq!(help("# HELP m   \n"), ("m", Cow::Borrowed("")));
    assert_eq!(help("# HELP m"), ("m", Cow::Borrowed("")));
    assert_eq!(help("#\tHELP\tm\tx"), ("m", Cow::Borrowed("x")));
    // Only the first separator is dropped, trailing whitespace is kept.
    assert_eq!(help("# HELP m  two spaces \n"), ("m", Cow::Borrowed(" two spaces ")));
    // `\\` and `\n` are escapes; anything else is kept as written.
    let (_, text) = help("# HELP m a\\\\b\\nc\\\"d\\te\\");
    assert_eq!(text, "a\\b\nc\\\"d\\te\\");
    assert!(matches!(text, Cow::Owned(_)));
    // UTF-8 and NUL are fine.
    assert_eq!(help("# HELP m Grüße \0 ✓").1, "Grüße \0 ✓");
    assert_eq!(error_message(b"# HELP m \xff\n", PROM), "help text \"\\xff\" is not a valid utf8 string");
    // Stricter than Prometheus: the name must end at whitespace.
    assert_eq!(error_message(b"# HELP m{ x\n", PROM), "expected text in HELP, got INVALID");
    // `#HELP` and `# HELPx` are comments.
    assert!(entries("#HELP m x\n# HELPm x\n", PROM).is_empty());
}

#[test]
fn prom_types() {
    for (text, kind) in [
        ("counter", MetricType::Counter),
        ("gauge", MetricType::Gauge),
        ("histogram", MetricType::Histogram),
        ("summary", MetricType::Summary),
        ("untyped", MetricType::Untyped),
    ] {
        let page = format!("# TYPE m {text}\n");
        assert_eq!(entries(&page, PROM), vec![Entry::Type { metric: "m", kind }], "{text}");
    }
    for text in ["unknown", "info", "stateset", "gaugehistogram", "Counter", "counter ", ""] {
        let page = format!("# TYPE m {text}\n");
        assert_eq!(error_message(page.as_bytes(), PROM), format!("invalid metric type {text:?}"), "{text}");
    }
}

#[test]
fn prom_label_value_escapes() {
    let s = sample(r#"m{a="x\\y\"z\nw\tq",b="plain",c=""} 1"#, PROM);
    assert_eq!(s.labels[0], ("a", Cow::Owned("x\\y\"z\nw\\tq".to_owned())));
    assert!(matches!(s.labels[1].1, Cow::Borrowed("plain")));
    assert!(matches!(s.labels[2].1, Cow::Borrowed("")));
    // `\\n` is an escaped backslash followed by `n`.
    assert_eq!(sample(r#"m{a="\\n"} 1"#, PROM).labels[0].1, "\\n");
    // UTF-8 and NUL in values are fine; Prometheus also accepts a raw line
    // feed inside the quotes.
    assert_eq!(sample("m{a=\"ü\0✓\"} 1", PROM).labels[0].1, "ü\0✓");
    assert_eq!(sample("m{a=\"x\ny\"} 1\n", PROM).labels[0].1, "x\ny");
}

#[test]
fn prom_names() {
    assert_eq!(sample("a:b_C9 1", PROM).name, "a:b_C9");
    assert_eq!(sample(":m 1", PROM).name, ":m");
    assert_eq!(sample("_ 1", PROM).name, "_");
    assert_eq!(sample("m{_a9=\"1\"} 1", PROM).labels[0].0, "_a9");
    assert!(error_message(b"9m 1", PROM).starts_with("expected a valid start token, got \"9\""));
    assert!(error_message(b"m{a:b=\"1\"} 1", PROM).starts_with("expected equal, got \":\""));
    assert!(error_message(b"m{9=\"1\"} 1", PROM).starts_with("expected label name, got \"9\""));
    assert!(error_message(b"m.x 1", PROM).starts_with("expected whitespace before value"));
    // Prometheus 3's quoted UTF-8 names are not supported.
    assert!(error_message(b"{\"m.x\"} 1", PROM).starts_with("expected label name"));
    assert!(error_message(b"m{\"a.b\"=\"1\"} 1", PROM).starts_with("expected label name"));
    assert_eq!(error_message(b"{a=\"ok\"} 1", PROM), "metric name not set while parsing: \"{a=\\\"ok\\\"} 1\"");
}

#[test]
fn prom_value_must_follow_whitespace() {
    // Prometheus reads these as `m` = -1 and `m{}` = 1; Strata rejects them.
    assert_eq!(
        error_message(b"m-1\n", PROM),
        "expected whitespace before value, got \"-1\\n\" (\"VALUE\") while parsing: \"m-1\\n\""
    );
    assert!(error_message(b"m{}1\n", PROM).starts_with("expected whitespace before value"));
}

#[test]
fn prom_timestamps() {
    assert_eq!(sample("m 1 0", PROM).timestamp_ms, Some(0));
    assert_eq!(sample("m 1 1718704530123", PROM).timestamp_ms, Some(1_718_704_530_123));
    assert_eq!(sample("m 1 9223372036854775807", PROM).timestamp_ms, Some(i64::MAX));
    assert_eq!(
        error_message(b"m 1 9223372036854775808", PROM),
        "strconv.ParseInt: parsing \"9223372036854775808\": value out of range while parsing: \"m 1 9223372036854775808\""
    );
    // Digits only: no sign, no fraction, no exponent.
    assert!(error_message(b"m 1 -5", PROM).starts_with("expected timestamp or new record, got \"-\""));
    assert!(error_message(b"m 1 1.5", PROM).starts_with("expected next entry after timestamp, got \".\""));
    assert!(error_message(b"m 1 1e3", PROM).starts_with("expected next entry after timestamp, got \"e\""));
    assert!(error_message(b"m 1 2 3", PROM).starts_with("expected next entry after timestamp, got \"3"));
    // No exemplars in the Prometheus format.
    assert!(error_message(b"m 1 # {a=\"b\"} 1", PROM).starts_with("expected timestamp or new record, got \"#\""));
}

/// Prometheus' `TestPromParseErrors` and `TestPromNullByteHandling` cases.
#[test]
fn prom_errors_match_prometheus() {
    let cases: &[(&[u8], &str)] = &[
        (b"a", r#"expected value after metric, got "\n" ("INVALID") while parsing: "a\n""#),
        (b"a{b='c'} 1\n", r#"expected label value, got "'" ("INVALID") while parsing: "a{b='""#),
        (b"a{b=\n", r#"expected label value, got "\n" ("INVALID") while parsing: "a{b=\n""#),
        (b"a{\xff=\"foo\"} 1\n", r#"expected label name, got "\xff" ("INVALID") while parsing: "a{\xff""#),
        (b"a{b=\"\xff\"} 1\n", r#"invalid UTF-8 label value: "\"\xff\"""#),
        (b"a true\n", r#"strconv.ParseFloat: parsing "true": invalid syntax while parsing: "a true""#),
        (
            b"something_weird{problem=\"",
            r#"expected label value, got "\"\n" ("INVALID") while parsing: "something_weird{problem=\"\n""#,
        ),
        (
            b"empty_label_name{=\"\"} 0",
            r#"expected label name, got "=\"" ("EQUAL") while parsing: "empty_label_name{=\"""#,
        ),
        (b"foo 1_2\n", r#"unsupported character in float while parsing: "foo 1_2""#),
        (b"foo 0x1p-3\n", r#"unsupported character in float while parsing: "foo 0x1p-3""#),
        (b"foo 0x1P-3\n", r#"unsupported character in float while parsing: "foo 0x1P-3""#),
        (b"foo 0 1_2\n", r#"expected next entry after timestamp, got "_" ("INVALID") while parsing: "foo 0 1_""#),
        (b"# TYPE #\n#EOF\n", r##"expected metric name after TYPE, got "#" ("INVALID") while parsing: "# TYPE #""##),
        (b"# HELP #\n#EOF\n", r##"expected metric name after HELP, got "#" ("INVALID") while parsing: "# HELP #""##),
        (b"a{b=\x00\"ssss\"} 1\n", r#"expected label value, got "\x00" ("INVALID") while parsing: "a{b=\x00""#),
        (b"a{b=\"\x00", r#"expected label value, got "\"\x00\n" ("INVALID") while parsing: "a{b=\"\x00\n""#),
        (b"a{b\x00=\"hiih\"}\t1", r#"expected equal, got "\x00" ("INVALID") while parsing: "a{b\x00""#),
        (b"a\x00{b=\"ddd\"} 1", r#"expected value after metric, got "\x00" ("INVALID") while parsing: "a\x00""#),
        (b"a 0 1\x00", r#"expected next entry after timestamp, got "\x00" ("INVALID") while parsing: "a 0 1\x00""#),
    ];
    for (input, want) in cases {
        assert_eq!(&error_message(input, PROM), want, "{:?}", String::from_utf8_lossy(input));
    }
    for ok in [&b"null_byte_metric{a=\"abc\x00\"} 1"[..], b"a{b=\"\x00ss\"} 1\n", b"a{b=\"\x00\"} 1\n"] {
        let (_, err) = parse_all(ok, PROM);
        assert_eq!(err, None, "{:?}", String::from_utf8_lossy(ok));
    }
}

#[test]
fn prom_nul_at_line_start_is_an_error() {
    // Prometheus' lexer silently ends the page here; Strata reports it.
    assert!(error_message(b"a 1\n\0b 2\n", PROM).starts_with("expected a valid start token, got \"\\x00\""));
}

/// Prometheus tolerates `\r` only in free text; so does Strata.
#[test]
fn prom_crlf_as_prometheus() {
    // Comments and HELP: accepted, HELP text keeps the `\r`.
    let got = entries("# a comment\r\n# HELP m help\r\n", PROM);
    assert_eq!(got, vec![Entry::Help { metric: "m", text: Cow::Borrowed("help\r") }]);
    // Sample lines, TYPE lines and blank lines: errors.
    assert_eq!(
        error_message(b"m 1\r\n", PROM),
        r#"strconv.ParseFloat: parsing "1\r": invalid syntax while parsing: "m 1\r""#
    );
    assert!(error_message(b"m 1 1000\r\n", PROM).starts_with(r#"expected next entry after timestamp, got "\r""#));
    assert!(error_message(b"m{a=\"b\"}\r\n", PROM).starts_with("expected whitespace before value, got \"\\r"));
    assert!(error_message(b"m\r\n", PROM).starts_with("expected whitespace before value, got \"\\r"));
    assert_eq!(error_message(b"# TYPE m counter\r\n", PROM), r#"invalid metric type "counter\r""#);
    assert!(error_message(b"m 1\n\r\nm 2\n", PROM).starts_with(r#"expected a valid start token, got "\r""#));
    assert!(error_message(b"m 1\r\n# EOF\r\n", OM).starts_with(r#"strconv.ParseFloat: parsing "1\r""#));
}

// ---------------------------------------------------------------------------
// Values

#[test]
fn float_syntax_as_go() {
    let ok: &[(&str, f64)] = &[
        ("1", 1.0),
        ("-1.5e3", -1500.0),
        ("1e3", 1000.0),
        ("1E-3", 0.001),
        ("1e+3", 1000.0),
        (".5", 0.5),
        ("5.", 5.0),
        ("+1", 1.0),
        ("-0", -0.0),
        ("007", 7.0),
        ("1e-400", 0.0),
        ("1.7976931348623157e308", f64::MAX),
        ("+Inf", f64::INFINITY),
        ("-Inf", f64::NEG_INFINITY),
        ("Inf", f64::INFINITY),
        ("inf", f64::INFINITY),
        ("-INF", f64::NEG_INFINITY),
        ("+infinity", f64::INFINITY),
        ("Infinity", f64::INFINITY),
    ];
    for (text, want) in ok {
        let page = format!("m {text}");
        let got = sample(&page, PROM).value;
        assert_eq!(got.to_bits(), want.to_bits(), "{text}");
    }
    for text in ["NaN", "nan", "NAN"] {
        let page = format!("m {text}");
        let v = sample(&page, PROM).value;
        assert_eq!(v.to_bits(), NORMAL_NAN_BITS, "{text}");
        assert!(!is_stale_nan(v));
    }
    let bad: &[(&str, &str)] = &[
        ("0x10", "invalid syntax"),
        ("0X1A", "invalid syntax"),
        ("0x1p3", "unsupported character in float"),
        ("1_000", "unsupported character in float"),
        ("+NaN", "invalid syntax"),
        ("-nan", "invalid syntax"),
        ("1e999", "value out of range"),
        ("-1e999", "value out of range"),
        ("infin", "invalid syntax"),
        ("infinityy", "invalid syntax"),
        ("1e", "invalid syntax"),
        ("--1", "invalid syntax"),
        ("1.2.3", "invalid syntax"),
        (".", "invalid syntax"),
        ("+", "invalid syntax"),
        ("١", "invalid syntax"),
        ("1,5", "invalid syntax"),
        ("true", "invalid syntax"),
    ];
    for (text, want) in bad {
        let page = format!("m {text}\n");
        let msg = error_message(page.as_bytes(), PROM);
        assert!(msg.contains(want), "{text}: {msg}");
        let page = format!("m {text}\n# EOF\n");
        let msg = error_message(page.as_bytes(), OM);
        assert!(msg.contains(want), "OM {text}: {msg}");
    }
    assert_eq!(
        error_message(b"m 1e999", PROM),
        r#"strconv.ParseFloat: parsing "1e999": value out of range while parsing: "m 1e999""#
    );
}

#[test]
fn om_float_formatting_matches_go() {
    let cases: &[(f64, &str)] = &[
        (0.0, "0.0"),
        (-0.0, "-0.0"),
        (1.0, "1.0"),
        (-1.0, "-1.0"),
        (10.0, "10.0"),
        (100_000.0, "100000.0"),
        (999_999.0, "999999.0"),
        (1e6, "1e+06"),
        (1_234_567.0, "1.234567e+06"),
        (123_456_789.0, "1.23456789e+08"),
        (1.5, "1.5"),
        (0.1, "0.1"),
        (0.25, "0.25"),
        (0.005, "0.005"),
        (0.0001, "0.0001"),
        (0.00012, "0.00012"),
        (0.00001, "1e-05"),
        (2.5e-10, "2.5e-10"),
        (1e21, "1e+21"),
        (1e100, "1e+100"),
        (-1.5e-7, "-1.5e-07"),
        (5e-324, "5e-324"),
        (f64::MAX, "1.7976931348623157e+308"),
        (123_456.5, "123456.5"),
        (f64::INFINITY, "+Inf"),
        (f64::NEG_INFINITY, "-Inf"),
        (f64::NAN, "NaN"),
    ];
    let (mut tmp, mut out) = (String::new(), String::new());
    for (f, want) in cases {
        format_om_float(*f, &mut tmp, &mut out);
        assert_eq!(&out, want, "{f:?}");
    }
}

#[test]
fn le_and_quantile_are_normalized_as_prometheus_3() {
    let page = "# TYPE h histogram\n\
                h_bucket{le=\"1\"} 0\n\
                h_bucket{le=\"0.005\"} 0\n\
                h_bucket{le=\"1e6\"} 0\n\
                h_bucket{le=\"+Inf\"} 0\n\
                h_bucket{le=\"inf\"} 0\n\
                h_bucket{le=\"garbage\"} 0\n\
                h_sum{quantile=\"1\"} 0\n\
                # TYPE s summary\n\
                s{quantile=\"0\",le=\"1\"} 0\n\
                s{quantile=\"0.99\"} 0\n\
                # TYPE g gauge\n\
                g{le=\"1\",quantile=\"1\"} 0\n";
    let got: Vec<Vec<(&str, Cow<'_, str>)>> = samples(page, PROM).into_iter().map(|s| s.labels).collect();
    let want: Vec<Vec<(&str, &str)>> = vec![
        vec![("le", "1.0")],
        vec![("le", "0.005")],
        vec![("le", "1e+06")],
        vec![("le", "+Inf")],
        vec![("le", "+Inf")],
        vec![("le", "garbage")],
        vec![("quantile", "1")],
        vec![("quantile", "0.0"), ("le", "1")],
        vec![("quantile", "0.99")],
        vec![("le", "1"), ("quantile", "1")],
    ];
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(&want) {
        let g: Vec<(&str, &str)> = g.iter().map(|(n, v)| (*n, v.as_ref())).collect();
        assert_eq!(&g, w);
    }
    // Already-canonical values stay borrowed.
    assert!(matches!(got[1][0].1, Cow::Borrowed(_)));
    assert!(matches!(got[3][0].1, Cow::Borrowed(_)));
    // OpenMetrics too; gauge histograms are left alone, as in Prometheus.
    let om = "# TYPE h histogram\nh_bucket{le=\"2\"} 0\n# TYPE gh gaugehistogram\ngh_bucket{le=\"2\"} 0\n# EOF\n";
    let s = samples(om, OM);
    assert_eq!(s[0].labels[0].1, "2.0");
    assert_eq!(s[1].labels[0].1, "2");
}

// ---------------------------------------------------------------------------
// Labels

#[test]
fn duplicate_label_names_are_errors() {
    assert_eq!(
        error_message(b"m{a=\"1\",b=\"2\",a=\"3\"} 1\n", PROM),
        r#"duplicate label name "a" while parsing: "m{a=\"1\",b=\"2\",a=\"3\"""#
    );
    assert!(error_message(b"m{a=\"1\",a=\"1\"} 1\n# EOF\n", OM).starts_with("duplicate label name \"a\""));
    assert!(error_message(b"m{__name__=\"x\"} 1\n", PROM).starts_with("duplicate label name \"__name__\""));
    // Many labels: the hash-set path.
    let mut page = String::from("m{");
    for i in 0..100 {
        page.push_str(&format!("l{i}=\"v\","));
    }
    assert_eq!(sample(&format!("{page}}} 1"), PROM).labels.len(), 100);
    page.push_str("l57=\"again\"} 1");
    assert!(error_message(page.as_bytes(), PROM).starts_with("duplicate label name \"l57\""));
    // Exemplar labels are not sample labels.
    let s = sample("m_total{a=\"1\"} 1 # {a=\"2\"} 1\n# EOF\n", OM);
    assert_eq!(s.labels, vec![("a", Cow::Borrowed("1"))]);
}

// ---------------------------------------------------------------------------
// OpenMetrics

#[test]
fn om_basic_page() {
    let page = "# TYPE c counter\n# UNIT c_seconds seconds\n# HELP c Help \\\"x\\\".\nc_total{a=\"1\"} 3 1.5 # {t=\"x\"} 1 2\nc_total 4\n# EOF\n";
    assert_eq!(
        entries(page, OM),
        vec![
            Entry::Type { metric: "c", kind: MetricType::Counter },
            Entry::Unit { metric: "c_seconds", unit: "seconds" },
            Entry::Help { metric: "c", text: Cow::Owned("Help \"x\".".to_owned()) },
            Entry::Sample(SampleEntry {
                name: "c_total",
                labels: vec![("a", Cow::Borrowed("1"))],
                value: 3.0,
                timestamp_ms: Some(1500),
            }),
            Entry::Sample(SampleEntry { name: "c_total", labels: vec![], value: 4.0, timestamp_ms: None }),
        ]
    );
}

#[test]
fn om_eof() {
    assert!(entries("# EOF", OM).is_empty());
    assert!(entries("# EOF\n", OM).is_empty());
    assert_eq!(sample("m 1\n# EOF", OM).value, 1.0);
    for page in [&b""[..], b"m 1", b"m 1\n", b"# TYPE m gauge\n", b"m_total 1 # {a=\"b\"} 4"] {
        assert_eq!(error_message(page, OM), "data does not end with # EOF");
    }
    for page in [&b"# EOF\nm 1"[..], b"# EOF\n\n", b"# EOFa 1", b"# EOF\n# EOF\n", b"# EOF "] {
        assert_eq!(error_message(page, OM), "unexpected data after # EOF");
    }
}

#[test]
fn om_types_and_units() {
    for (text, kind) in [
        ("counter", MetricType::Counter),
        ("gauge", MetricType::Gauge),
        ("histogram", MetricType::Histogram),
        ("gaugehistogram", MetricType::GaugeHistogram),
        ("summary", MetricType::Summary),
        ("info", MetricType::Info),
        ("stateset", MetricType::StateSet),
        ("unknown", MetricType::Untyped),
    ] {
        let page = format!("# TYPE m {text}\n# EOF\n");
        assert_eq!(entries(&page, OM), vec![Entry::Type { metric: "m", kind }]);
        assert_eq!(kind.as_str(), text);
    }
    assert_eq!(
        entries("# UNIT m_seconds seconds\n# UNIT m \n# EOF\n", OM),
        vec![Entry::Unit { metric: "m_seconds", unit: "seconds" }, Entry::Unit { metric: "m", unit: "" },]
    );
    assert_eq!(error_message(b"# TYPE u untyped\n# EOF\n", OM), r#"invalid metric type "untyped""#);
    assert_eq!(
        error_message(b"# UNIT seconds seconds\n# EOF\n", OM),
        r#"unit "seconds" not a suffix of metric "seconds""#
    );
}

#[test]
fn om_timestamps_are_seconds() {
    let ts = |t: &str| {
        let page = format!("m 1 {t}\n# EOF\n");
        sample(&page, OM).timestamp_ms
    };
    assert_eq!(ts("1520879607.789"), Some(1_520_879_607_789));
    assert_eq!(ts("1520879607"), Some(1_520_879_607_000));
    assert_eq!(ts("1.5e3"), Some(1_500_000));
    assert_eq!(ts("-1.5"), Some(-1500));
    assert_eq!(ts("-0.0015"), Some(-1));
    assert_eq!(ts("0.0001"), Some(0));
    assert_eq!(ts(".5"), Some(500));
    assert_eq!(ts("5."), Some(5000));
    assert_eq!(ts("+2"), Some(2000));
    // Prometheus truncates 1234.567 * 1000.0 to 1234566; Strata is exact.
    assert_eq!(ts("1234.567"), Some(1_234_567));
    assert_eq!(ts("9223372036854775.807"), Some(i64::MAX));
    assert!(error_message(b"m 1 9223372036854775.808\n# EOF\n", OM).contains("out of range"));
    assert!(error_message(b"m 1 1e300\n# EOF\n", OM).contains("out of range"));
    assert_eq!(error_message(b"m 1 NaN\n# EOF\n", OM), "invalid timestamp NaN");
    assert_eq!(error_message(b"m 1 Inf", OM), "invalid timestamp +Inf");
    assert_eq!(error_message(b"m 1 -Inf", OM), "invalid timestamp -Inf");
}

#[test]
fn om_created_series_are_dropped() {
    let page = "# TYPE c counter\n\
                c_total 1\n\
                c_created 1000.5\n\
                other_created 3\n\
                # TYPE h histogram\n\
                h_bucket{le=\"+Inf\"} 1\n\
                h_count 1\n\
                h_sum 1\n\
                h_created{a=\"b\"} 1000\n\
                # TYPE s summary\n\
                s_created 1000\n\
                # TYPE g gauge\n\
                g_created 5\n\
                # TYPE gh gaugehistogram\n\
                gh_created 5\n\
                # TYPE u unknown\n\
                u_created 5\n\
                # EOF\n";
    let names: Vec<&str> = samples(page, OM).iter().map(|s| s.name).collect();
    assert_eq!(
        names,
        ["c_total", "other_created", "h_bucket", "h_count", "h_sum", "g_created", "gh_created", "u_created"]
    );
    // Dropped lines are still validated.
    assert!(error_message(b"# TYPE c counter\nc_created x\n# EOF\n", OM).contains("invalid syntax"));
    // The Prometheus format has no `_created` convention: kept.
    assert_eq!(samples("# TYPE c counter\nc_total 1\nc_created 2\n", PROM).len(), 2);
}

#[test]
fn om_exemplars_are_validated_and_dropped() {
    let page = "# TYPE h histogram\n\
                h_bucket{le=\"0.5\"} 1 # {trace_id=\"abc\",span=\"\\\"q\\\"\"} 0.3 1672531200.5\n\
                h_bucket{le=\"1\"} 2 1672531201 # {} 0.7\n\
                h_bucket{le=\"+Inf\"} 3 # {a=\"b\",} NaN\n\
                # EOF\n";
    let got = samples(page, OM);
    assert_eq!(got.len(), 3);
    assert_eq!(got[0].value, 1.0);
    assert_eq!(got[0].timestamp_ms, None);
    assert_eq!(got[1].timestamp_ms, Some(1_672_531_201_000));
    assert_eq!(got[2].labels, vec![("le", Cow::Borrowed("+Inf"))]);
    assert_eq!(error_message(b"m_total 1 # {a=\"b\"} 4 NaN\n# EOF\n", OM), "invalid exemplar timestamp NaN");
    assert!(
        error_message(b"m_total 1 # {a=\"b\"} 4 5 6\n# EOF\n", OM)
            .starts_with("expected next entry after exemplar timestamp")
    );
    assert!(error_message(b"m_total 1 # {a=\"\xff\"} 4\n# EOF\n", OM).starts_with("invalid UTF-8 label value"));
    assert!(error_message(b"m_total 1 # x\n# EOF\n", OM).starts_with("strconv.ParseFloat: parsing \"#\""));
}

/// Prometheus' `TestOpenMetricsParseErrors` and `TestOMNullByteHandling`
/// cases (those about syntax Strata shares).
#[test]
fn om_errors_match_prometheus() {
    let cases: &[(&[u8], &str)] = &[
        (b"\n", r#"expected a valid start token, got "\n" ("INVALID") while parsing: "\n""#),
        (b"metric", r#"expected value after metric, got "metric" ("EOF") while parsing: "metric""#),
        (b"a\n#EOF\n", r#"expected value after metric, got "\n" ("INVALID") while parsing: "a\n""#),
        (b"\n\n#EOF\n", r#"expected a valid start token, got "\n" ("INVALID") while parsing: "\n""#),
        (b" a 1\n#EOF\n", r#"expected a valid start token, got " " ("INVALID") while parsing: " ""#),
        (b"9\n#EOF\n", r#"expected a valid start token, got "9" ("INVALID") while parsing: "9""#),
        (b"# TYPE u untyped\n#EOF\n", r#"invalid metric type "untyped""#),
        (b"# TYPE c counter \n#EOF\n", r#"invalid metric type "counter ""#),
        (b"# TYPE \n#EOF\n", r##"expected metric name after TYPE, got "\n" ("INVALID") while parsing: "# TYPE \n""##),
        (b"# TYPE m\n#EOF\n", "expected text in TYPE"),
        (b"# UNIT metric suffix\n#EOF\n", r#"unit "suffix" not a suffix of metric "metric""#),
        (b"# UNIT metricsuffix suffix\n#EOF\n", r#"unit "suffix" not a suffix of metric "metricsuffix""#),
        (b"# UNIT m suffix\n#EOF\n", r#"unit "suffix" not a suffix of metric "m""#),
        (b"# UNIT \n#EOF\n", r##"expected metric name after UNIT, got "\n" ("INVALID") while parsing: "# UNIT \n""##),
        (b"# UNIT m\n#EOF\n", "expected text in UNIT"),
        (b"# HELP \n#EOF\n", r##"expected metric name after HELP, got "\n" ("INVALID") while parsing: "# HELP \n""##),
        (b"# HELP m\n#EOF\n", "expected text in HELP"),
        (b"a\t1\n#EOF\n", r#"expected value after metric, got "\t" ("INVALID") while parsing: "a\t""#),
        (b"a 1\t2\n#EOF\n", r#"strconv.ParseFloat: parsing "1\t2": invalid syntax while parsing: "a 1\t2""#),
        (b"a 1 2 \n#EOF\n", r#"expected next entry after timestamp, got " \n" ("INVALID") while parsing: "a 1 2 \n""#),
        (
            b"a 1 2 #\n#EOF\n",
            r##"expected next entry after timestamp, got " #\n" ("TIMESTAMP") while parsing: "a 1 2 #\n""##,
        ),
        (b"a 1 1z\n#EOF\n", r#"strconv.ParseFloat: parsing "1z": invalid syntax while parsing: "a 1 1z""#),
        (b" # EOF\n", r#"expected a valid start token, got " " ("INVALID") while parsing: " ""#),
        (b"#\tTYPE c counter\n", r##"expected a valid start token, got "#\t" ("INVALID") while parsing: "#\t""##),
        (b"# TYPE c  counter\n", r#"invalid metric type " counter""#),
        (
            b"a 1 1 1\n# EOF\n",
            r#"expected next entry after timestamp, got " 1\n" ("TIMESTAMP") while parsing: "a 1 1 1\n""#,
        ),
        (b"a{b='c'} 1\n# EOF\n", r#"expected label value, got "'" ("INVALID") while parsing: "a{b='""#),
        (b"a{,b=\"c\"} 1\n# EOF\n", r#"expected label name, got ",b" ("COMMA") while parsing: "a{,b""#),
        (
            b"a{b=\"c\"d=\"e\"} 1\n# EOF\n",
            r#"expected comma or brace close, got "d=" ("LNAME") while parsing: "a{b=\"c\"d=""#,
        ),
        (b"a{b=\"c\",,d=\"e\"} 1\n# EOF\n", r#"expected label name, got ",d" ("COMMA") while parsing: "a{b=\"c\",,d""#),
        (b"a{b=\n# EOF\n", r#"expected label value, got "\n" ("INVALID") while parsing: "a{b=\n""#),
        (b"a{\xff=\"foo\"} 1\n# EOF\n", r#"expected label name, got "\xff" ("INVALID") while parsing: "a{\xff""#),
        (b"a{b=\"\xff\"} 1\n# EOF\n", r#"invalid UTF-8 label value: "\"\xff\"""#),
        (b"a true\n", r#"strconv.ParseFloat: parsing "true": invalid syntax while parsing: "a true""#),
        (
            b"something_weird{problem=\"\n# EOF\n",
            r#"expected label value, got "\"\n" ("INVALID") while parsing: "something_weird{problem=\"\n""#,
        ),
        (
            b"empty_label_name{=\"\"} 0\n# EOF\n",
            r#"expected label name, got "=\"" ("EQUAL") while parsing: "empty_label_name{=\"""#,
        ),
        (b"foo 1_2\n\n# EOF\n", r#"unsupported character in float while parsing: "foo 1_2""#),
        (b"foo 0x1p-3\n\n# EOF\n", r#"unsupported character in float while parsing: "foo 0x1p-3""#),
        (b"foo 0 1_2\n\n# EOF\n", r#"unsupported character in float while parsing: "foo 0 1_2""#),
        (
            b"custom_metric_total 1 # {aa=bb}\n# EOF\n",
            r#"expected label value, got "b" ("INVALID") while parsing: "custom_metric_total 1 # {aa=b""#,
        ),
        (
            b"custom_metric_total 1 # {aa=\"bb\"}\n# EOF\n",
            r#"expected value after exemplar labels, got "\n" ("INVALID") while parsing: "custom_metric_total 1 # {aa=\"bb\"}\n""#,
        ),
        (
            b"custom_metric_total 1 # {aa=\"bb\"}",
            r#"expected value after exemplar labels, got "}" ("EOF") while parsing: "custom_metric_total 1 # {aa=\"bb\"}""#,
        ),
        (
            b"custom_metric_total 1 # {aa=\"bb\",,cc=\"dd\"} 1",
            r#"expected label name, got ",c" ("COMMA") while parsing: "custom_metric_total 1 # {aa=\"bb\",,c""#,
        ),
        (
            b"custom_metric_total 1 # {aa=\"bb\"} 1_2",
            r#"unsupported character in float while parsing: "custom_metric_total 1 # {aa=\"bb\"} 1_2""#,
        ),
        (
            b"custom_metric_total 1 # {aa=\"bb\"} true",
            r#"strconv.ParseFloat: parsing "true": invalid syntax while parsing: "custom_metric_total 1 # {aa=\"bb\"} true""#,
        ),
        (
            b"custom_metric_total 1 # {aa=\"bb\",cc=}",
            r#"expected label value, got "}" ("INVALID") while parsing: "custom_metric_total 1 # {aa=\"bb\",cc=}""#,
        ),
        (b"{b=\"c\",} 1", r#"metric name not set while parsing: "{b=\"c\",} 1""#),
        (b"a 1 NaN", "invalid timestamp NaN"),
        (b"a 1 -Inf", "invalid timestamp -Inf"),
        (b"a 1 Inf", "invalid timestamp +Inf"),
        (b"# TYPE hhh histogram\nhhh_bucket{le=\"+Inf\"} 1 # {aa=\"bb\"} 4 NaN", "invalid exemplar timestamp NaN"),
        (b"# TYPE hhh histogram\nhhh_bucket{le=\"+Inf\"} 1 # {aa=\"bb\"} 4 -Inf", "invalid exemplar timestamp -Inf"),
        (b"a{b=\x00\"ssss\"} 1\n# EOF\n", r#"expected label value, got "\x00" ("INVALID") while parsing: "a{b=\x00""#),
        (b"a{b=\"\x00", r#"expected label value, got "\"\x00" ("INVALID") while parsing: "a{b=\"\x00""#),
        (b"a{b\x00=\"hiih\"}\t1", r#"expected equal, got "\x00" ("INVALID") while parsing: "a{b\x00""#),
        (b"a\x00{b=\"ddd\"} 1", r#"expected value after metric, got "\x00" ("INVALID") while parsing: "a\x00""#),
        (b"#", r##"expected a valid start token, got "#" ("INVALID") while parsing: "#""##),
        (b"# H", r##"expected a valid start token, got "# H" ("INVALID") while parsing: "# H""##),
        (
            b"custom_metric_total 1 # {b=\x00\"ssss\"} 1\n",
            r#"expected label value, got "\x00" ("INVALID") while parsing: "custom_metric_total 1 # {b=\x00""#,
        ),
        (
            b"custom_metric_total 1 # {b=\"\x00ss\"} 1\n",
            r#"expected label value, got "\"\x00" ("INVALID") while parsing: "custom_metric_total 1 # {b=\"\x00""#,
        ),
    ];
    for (input, want) in cases {
        assert_eq!(&error_message(input, OM), want, "{:?}", String::from_utf8_lossy(input));
    }
    for ok in
        [&b"null_byte_metric{a=\"abc\x00\"} 1\n# EOF\n"[..], b"a{b=\"\x00ss\"} 1\n# EOF\n", b"a{b=\"\x00\"} 1\n# EOF"]
    {
        let (_, err) = parse_all(ok, OM);
        assert_eq!(err, None, "{:?}", String::from_utf8_lossy(ok));
    }
}

#[test]
fn om_is_strict_about_layout() {
    for page in [
        &b"m  1\n# EOF\n"[..],
        b"m 1  2\n# EOF\n",
        b"m 1 \n# EOF\n",
        b"m 1 x\n# EOF\n",
        b"m{a=\"1\", b=\"2\"} 1\n# EOF\n",
        b"m {a=\"1\"} 1\n# EOF\n",
        b"m 1\n\n# EOF\n",
        b"# a comment\n# EOF\n",
        b"m{a=\"x\ny\"} 1\n# EOF\n",
        b"m 1 # {a=\"b\"}  1\n# EOF\n",
        b"m 1 2 #{a=\"b\"} 1\n# EOF\n",
    ] {
        let (_, err) = parse_all(page, OM);
        assert!(err.is_some(), "{:?}", String::from_utf8_lossy(page));
    }
}

// ---------------------------------------------------------------------------
// Iterator and error reporting

#[test]
fn stops_after_first_error() {
    let mut p = Parser::new("a 1\nb\nc 2\n", PROM);
    assert!(matches!(p.next(), Some(Ok(Entry::Sample(_)))));
    assert!(matches!(p.next(), Some(Err(_))));
    assert!(p.next().is_none());
    assert!(p.next().is_none());
    let mut p = Parser::new("a 1\n# EOF\n", OM);
    assert!(matches!(p.next(), Some(Ok(Entry::Sample(_)))));
    assert!(p.next().is_none());
    assert!(p.next().is_none());
}

#[test]
fn errors_carry_the_line() {
    let e = error(b"# HELP m x\nm 1\n\nm{a=\"b\"} x\nm 2\n", PROM);
    assert_eq!(e.line, 4);
    assert_eq!(
        e.to_string(),
        r#"line 4: strconv.ParseFloat: parsing "x": invalid syntax while parsing: "m{a=\"b\"} x""#
    );
    // A raw line feed inside a label value counts.
    assert_eq!(error(b"m{a=\"x\ny\"} 1\nm 1 q\n", PROM).line, 3);
    assert_eq!(error(b"a\n", PROM).line, 1);
    assert_eq!(error(b"m 1\n", OM).line, 2);
    assert_eq!(error(b"m 1\nm x\n# EOF\n", OM).line, 2);
}

#[test]
fn long_excerpts_are_cut() {
    let page = format!("m{{a=\"{}\"}} x\n", "v".repeat(10_000));
    let msg = error_message(page.as_bytes(), PROM);
    assert!(msg.len() < 400, "{}", msg.len());
    assert!(msg.ends_with("\"..."), "{msg}");
}

#[test]
fn input_types() {
    let text = String::from("m 1\n");
    let bytes = text.clone().into_bytes();
    assert_eq!(Parser::new(&text, PROM).count(), 1);
    assert_eq!(Parser::new(text.as_str(), PROM).count(), 1);
    assert_eq!(Parser::new(&bytes, PROM).count(), 1);
    assert_eq!(Parser::new(&bytes[..], PROM).count(), 1);
    assert_eq!(Parser::new(&bytes, PROM).format(), PROM);
}

#[test]
fn parsed_strings_borrow_from_the_input() {
    let page = String::from("# HELP m plain\nm{a=\"plain\"} 1\n");
    let range = page.as_bytes().as_ptr_range();
    let inside = |s: &str| range.contains(&s.as_ptr());
    for e in Parser::new(&page, PROM) {
        match e.expect("valid") {
            Entry::Help { metric, text } => {
                assert!(inside(metric));
                assert!(matches!(text, Cow::Borrowed(t) if inside(t)));
            }
            Entry::Sample(s) => {
                assert!(inside(s.name));
                assert!(inside(s.labels[0].0));
                assert!(matches!(s.labels[0].1, Cow::Borrowed(v) if inside(v)));
            }
            e => panic!("unexpected {e:?}"),
        }
    }
}

// ---------------------------------------------------------------------------
// Golden pages

fn check_golden(page_file: &str, format: Format) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/exposition");
    let page = std::fs::read(dir.join(page_file)).expect("read page");
    let (entries, err) = parse_all(&page, format);
    let mut got: Vec<String> = entries.iter().map(dump).collect();
    if let Some(e) = err {
        got.push(format!("ERROR {e}"));
    }
    let got = got.join("\n") + "\n";
    let golden = dir.join(format!("{page_file}.golden"));
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&golden, &got).expect("write golden");
    }
    let want = std::fs::read_to_string(&golden).expect("read golden");
    assert_eq!(got, want, "{page_file} no longer parses as {}", golden.display());
}

#[test]
fn golden_node_exporter_page() {
    check_golden("node_exporter.prom", PROM);
}

#[test]
fn golden_openmetrics_page() {
    check_golden("openmetrics.om.txt", OM);
}

// ---------------------------------------------------------------------------
// Fuzzing

/// Parses `input` to the end in both formats; checks that only the last
/// item may be an error.
fn parse_to_end(input: &[u8]) {
    for format in [PROM, OM] {
        let items: Vec<_> = Parser::new(input, format).collect();
        for (i, item) in items.iter().enumerate() {
            if item.is_err() {
                assert_eq!(i, items.len() - 1, "error before the end");
            }
            if let Ok(Entry::Sample(s)) = item {
                assert!(is_valid_metric_name(s.name));
                assert!(!is_stale_nan(s.value));
                for (n, _) in &s.labels {
                    assert!(is_valid_label_name(n));
                }
            }
        }
    }
}

/// Bytes drawn mostly from the characters that matter to the grammar.
fn grammar_soup() -> impl Strategy<Value = Vec<u8>> {
    let pieces = prop::sample::select(vec![
        "# ",
        "#",
        "HELP ",
        "TYPE ",
        "UNIT ",
        "EOF",
        "counter",
        "histogram",
        "m",
        "m_total",
        "le",
        "a",
        "_created",
        "{",
        "}",
        "=",
        ",",
        "\"",
        "\\",
        "\\\"",
        "\\n",
        " ",
        "\t",
        "\n",
        "\r",
        "\0",
        "1",
        "-1.5e3",
        "NaN",
        "+Inf",
        "0x1p3",
        "1_0",
        ".",
        "é",
        "\u{ff}",
        " # {",
        "9223372036854775808",
    ]);
    prop::collection::vec(pieces, 0..40).prop_map(|v| v.concat().into_bytes())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(input in prop::collection::vec(any::<u8>(), 0..300)) {
        parse_to_end(&input);
    }

    #[test]
    fn grammar_soup_never_panics(input in grammar_soup()) {
        parse_to_end(&input);
        // Also with a valid ending, to get past the OpenMetrics EOF check.
        let mut with_eof = input.clone();
        with_eof.extend_from_slice(b"\n# EOF\n");
        parse_to_end(&with_eof);
    }
}

/// A generated sample: metric name, labels (unique names), value, timestamp.
#[derive(Debug, Clone)]
struct GenSample {
    name: String,
    labels: Vec<(String, String)>,
    value: f64,
    ts: Option<i64>,
    help: String,
}

fn gen_sample() -> impl Strategy<Value = GenSample> {
    let value = prop_oneof![
        any::<f64>(),
        Just(f64::NAN),
        Just(f64::INFINITY),
        Just(f64::NEG_INFINITY),
        Just(0.0),
        Just(-0.0),
        (-1_000_000i64..1_000_000).prop_map(|i| i as f64),
    ];
    (
        "[a-zA-Z_:][a-zA-Z0-9_:]{0,12}",
        prop::collection::vec(("[a-zA-Z_][a-zA-Z0-9_]{0,8}", any::<String>()), 0..6),
        value,
        prop::option::of(any::<i64>()),
        any::<String>(),
    )
        .prop_map(|(name, raw_labels, value, ts, help)| {
            let mut labels: Vec<(String, String)> = Vec::new();
            for (n, v) in raw_labels {
                if n != "__name__" && !labels.iter().any(|(m, _)| *m == n) {
                    labels.push((n, v));
                }
            }
            GenSample { name, labels, value, ts, help }
        })
}

fn write_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".to_owned()
    } else if v == f64::INFINITY {
        "+Inf".to_owned()
    } else if v == f64::NEG_INFINITY {
        "-Inf".to_owned()
    } else {
        format!("{v:?}")
    }
}

fn escape_label_value(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

fn escape_help(v: &str, om: bool) -> String {
    let v = v.replace('\\', "\\\\").replace('\n', "\\n");
    if om { v.replace('"', "\\\"") } else { v }
}

/// Writes `samples` as a page, one HELP line and one sample line each; the
/// Prometheus format gets varied whitespace and trailing commas.
fn write_page(samples: &[GenSample], format: Format, style: u8) -> String {
    let om = format == OM;
    let mut page = String::new();
    for s in samples {
        page.push_str(&format!("# HELP {} {}\n", s.name, escape_help(&s.help, om)));
        let sep = if om || style.is_multiple_of(2) { " " } else { " \t " };
        page.push_str(&s.name);
        if !s.labels.is_empty() || style.is_multiple_of(3) {
            page.push('{');
            let parts: Vec<String> =
                s.labels.iter().map(|(n, v)| format!("{n}=\"{}\"", escape_label_value(v))).collect();
            page.push_str(&parts.join(","));
            if style.is_multiple_of(5) && !s.labels.is_empty() {
                page.push(',');
            }
            page.push('}');
        }
        page.push_str(sep);
        page.push_str(&write_value(s.value));
        if let Some(ts) = s.ts {
            page.push_str(sep);
            if om {
                let abs = ts.unsigned_abs();
                let sign = if ts < 0 { "-" } else { "" };
                page.push_str(&format!("{sign}{}.{:03}", abs / 1000, abs % 1000));
            } else {
                page.push_str(&ts.unsigned_abs().to_string());
            }
        }
        page.push('\n');
    }
    if om {
        page.push_str("# EOF\n");
    }
    page
}

fn check_round_trip(samples: &[GenSample], format: Format, style: u8) -> Result<(), TestCaseError> {
    let page = write_page(samples, format, style);
    let (entries, err) = parse_all(page.as_bytes(), format);
    prop_assert!(err.is_none(), "error {:?} on page {:?}", err, page);
    prop_assert_eq!(entries.len(), samples.len() * 2);
    for (pair, want) in entries.chunks(2).zip(samples) {
        match &pair[0] {
            Entry::Help { metric, text } => {
                prop_assert_eq!(*metric, want.name.as_str());
                // In the Prometheus format a help text of only blanks
                // reads as empty, as in Prometheus.
                let blank = want.help.bytes().all(|c| c == b' ' || c == b'\t');
                let want_help = if format == PROM && blank { "" } else { want.help.as_str() };
                prop_assert_eq!(text.as_ref(), want_help);
            }
            e => prop_assert!(false, "expected help, got {:?}", e),
        }
        let Entry::Sample(got) = &pair[1] else {
            prop_assert!(false, "expected sample, got {:?}", pair[1]);
            continue;
        };
        prop_assert_eq!(got.name, want.name.as_str());
        let labels: Vec<(&str, &str)> = got.labels.iter().map(|(n, v)| (*n, v.as_ref())).collect();
        let want_labels: Vec<(&str, &str)> = want.labels.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
        prop_assert_eq!(labels, want_labels);
        if want.value.is_nan() {
            prop_assert_eq!(got.value.to_bits(), NORMAL_NAN_BITS);
        } else {
            prop_assert_eq!(got.value.to_bits(), want.value.to_bits());
        }
        let want_ts = match (format, want.ts) {
            // The Prometheus format has no negative timestamps; the page
            // holds the absolute value, which must fit.
            (Format::PrometheusText, Some(ts)) => i64::try_from(ts.unsigned_abs()).ok(),
            (_, ts) => ts,
        };
        prop_assert_eq!(got.timestamp_ms, want_ts);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 500, ..ProptestConfig::default() })]

    #[test]
    fn prom_round_trip(samples in prop::collection::vec(gen_sample(), 0..8), style in any::<u8>()) {
        // `i64::MIN` has no absolute value in `i64`: the page must then fail.
        if samples.iter().any(|s| s.ts == Some(i64::MIN)) {
            let page = write_page(&samples, PROM, style);
            prop_assert!(parse_all(page.as_bytes(), PROM).1.is_some());
        } else {
            check_round_trip(&samples, PROM, style)?;
        }
    }

    #[test]
    fn om_round_trip(samples in prop::collection::vec(gen_sample(), 0..8)) {
        check_round_trip(&samples, OM, 0)?;
    }

    #[test]
    fn om_decimal_timestamps_are_exact(ms in any::<i64>()) {
        let abs = ms.unsigned_abs();
        let sign = if ms < 0 { "-" } else { "" };
        let page = format!("m 1 {sign}{}.{:03}\n# EOF\n", abs / 1000, abs % 1000);
        prop_assert_eq!(sample(&page, OM).timestamp_ms, Some(ms));
    }

    #[test]
    fn om_float_formatting_round_trips(f in any::<f64>()) {
        let (mut tmp, mut out) = (String::new(), String::new());
        format_om_float(f, &mut tmp, &mut out);
        let back = parse_go_float(out.as_bytes());
        if f.is_nan() {
            prop_assert!(back.is_ok_and(f64::is_nan));
        } else {
            prop_assert_eq!(back.map(f64::to_bits), Ok(f.to_bits()));
        }
    }
}
