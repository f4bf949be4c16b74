//! Prometheus' exact JSON: timestamps as seconds with millisecond fractions,
//! values as strings in Go's shortest `'f'` format, strings escaped as Go's
//! `encoding/json` does (HTML characters included).

use std::fmt::Write;

use strata_model::{Labels, Sample, Series};
use strata_promql::{InstantSample, Value};

/// Appends `s` as a JSON string, escaped like Go's `encoding/json`.
pub fn write_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Appends a millisecond timestamp as Prometheus does (`1435781451.781`, `12`, `1.500`).
pub fn write_timestamp(out: &mut String, t: i64) {
    let mut t = i128::from(t);
    if t < 0 {
        out.push('-');
        t = -t;
    }
    let _ = write!(out, "{}", t / 1000);
    let frac = t % 1000;
    if frac != 0 {
        let _ = write!(out, ".{frac:03}");
    }
}

/// Appends a millisecond timestamp as Go's `encoding/json` writes
/// `float64(t) / 1000` (`1.5`, `12`, `1435781451.781`).
pub fn write_float_timestamp(out: &mut String, t: i64) {
    let secs = t as f64 / 1000.0;
    if secs.abs() >= 1e21 || (secs != 0.0 && secs.abs() < 1e-6) {
        // Go switches to exponent notation here; millisecond times never get there.
        let _ = write!(out, "{secs:e}");
    } else {
        let _ = write!(out, "{secs}");
    }
}

/// Appends a float value as a JSON string (`"1"`, `"0.5"`, `"NaN"`, `"+Inf"`).
pub fn write_value(out: &mut String, v: f64) {
    out.push('"');
    if v.is_nan() {
        out.push_str("NaN");
    } else if v == f64::INFINITY {
        out.push_str("+Inf");
    } else if v == f64::NEG_INFINITY {
        out.push_str("-Inf");
    } else {
        let _ = write!(out, "{v}");
    }
    out.push('"');
}

/// Appends a label set as a JSON object (`{"__name__":"up","job":"x"}`).
pub fn write_labels(out: &mut String, labels: &Labels) {
    out.push('{');
    for (i, l) in labels.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_str(out, &l.name);
        out.push(':');
        write_str(out, &l.value);
    }
    out.push('}');
}

fn write_point(out: &mut String, s: Sample) {
    out.push('[');
    write_timestamp(out, s.t);
    out.push(',');
    write_value(out, s.v);
    out.push(']');
}

fn write_vector(out: &mut String, v: &[InstantSample]) {
    out.push('[');
    for (i, s) in v.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str("{\"metric\":");
        write_labels(out, &s.labels);
        out.push_str(",\"value\":");
        write_point(out, Sample::new(s.t, s.v));
        out.push('}');
    }
    out.push(']');
}

fn write_matrix(out: &mut String, m: &[Series]) {
    out.push('[');
    for (i, s) in m.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str("{\"metric\":");
        write_labels(out, &s.labels);
        out.push_str(",\"values\":[");
        for (j, p) in s.samples.iter().enumerate() {
            if j > 0 {
                out.push(',');
            }
            write_point(out, *p);
        }
        out.push_str("]}");
    }
    out.push(']');
}

fn write_string_list(out: &mut String, key: &str, items: &[String]) {
    if items.is_empty() {
        return;
    }
    let _ = write!(out, ",\"{key}\":[");
    for (i, w) in items.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_str(out, w);
    }
    out.push(']');
}

/// A successful query response.
pub fn query_body(value: &Value, warnings: &[String], infos: &[String]) -> String {
    let mut out = String::with_capacity(256);
    out.push_str("{\"status\":\"success\",\"data\":{\"resultType\":");
    match value {
        // Prometheus encodes scalars and strings with `encoding/json`: the
        // time is a float in seconds (`1.5`, not `1.500`).
        Value::Scalar { t, v } => {
            out.push_str("\"scalar\",\"result\":[");
            write_float_timestamp(&mut out, *t);
            out.push(',');
            write_value(&mut out, *v);
            out.push(']');
        }
        Value::String { t, s } => {
            out.push_str("\"string\",\"result\":[");
            write_float_timestamp(&mut out, *t);
            out.push(',');
            write_str(&mut out, s);
            out.push(']');
        }
        Value::Vector(v) => {
            out.push_str("\"vector\",\"result\":");
            write_vector(&mut out, v);
        }
        Value::Matrix(m) => {
            out.push_str("\"matrix\",\"result\":");
            write_matrix(&mut out, m);
        }
    }
    out.push('}');
    write_string_list(&mut out, "warnings", warnings);
    write_string_list(&mut out, "infos", infos);
    out.push('}');
    out
}

/// Appends strings as a JSON array.
pub fn write_str_array<S: AsRef<str>>(out: &mut String, items: &[S]) {
    out.push('[');
    for (i, s) in items.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_str(out, s.as_ref());
    }
    out.push(']');
}

/// A successful response whose `data` is the JSON text `data`.
pub fn success_body(data: &str, warnings: &[String], infos: &[String]) -> String {
    let mut out = String::with_capacity(data.len() + 64);
    out.push_str("{\"status\":\"success\",\"data\":");
    out.push_str(data);
    write_string_list(&mut out, "warnings", warnings);
    write_string_list(&mut out, "infos", infos);
    out.push('}');
    out
}

/// An error response body.
pub fn error_body(error_type: &str, message: &str) -> String {
    let mut out = String::from("{\"status\":\"error\",\"errorType\":");
    write_str(&mut out, error_type);
    out.push_str(",\"error\":");
    write_str(&mut out, message);
    out.push('}');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(t: i64) -> String {
        let mut s = String::new();
        write_timestamp(&mut s, t);
        s
    }

    fn val(v: f64) -> String {
        let mut s = String::new();
        write_value(&mut s, v);
        s
    }

    #[test]
    fn timestamps_like_prometheus() {
        assert_eq!(ts(1_435_781_451_781), "1435781451.781");
        assert_eq!(ts(12_000), "12");
        assert_eq!(ts(1_500), "1.500");
        assert_eq!(ts(5), "0.005");
        assert_eq!(ts(-1_500), "-1.500");
    }

    #[test]
    fn values_like_go_strconv() {
        assert_eq!(val(1.0), "\"1\"");
        assert_eq!(val(0.1), "\"0.1\"");
        assert_eq!(val(1e21), "\"1000000000000000000000\"");
        assert_eq!(val(1e-7), "\"0.0000001\"");
        assert_eq!(val(f64::NAN), "\"NaN\"");
        assert_eq!(val(f64::NEG_INFINITY), "\"-Inf\"");
        assert_eq!(val(-0.0), "\"-0\"");
    }

    #[test]
    fn strings_escape_like_go() {
        let mut s = String::new();
        write_str(&mut s, "a<b>&\"\\\n\u{1}");
        assert_eq!(s, r#""a\u003cb\u003e\u0026\"\\\n\u0001""#);
    }

    #[test]
    fn vector_body_shape() {
        let labels = Labels::from_pairs([("__name__", "up"), ("job", "x")]).expect("labels");
        let v = Value::Vector(vec![InstantSample { labels, t: 1000, v: 1.0 }]);
        assert_eq!(
            query_body(&v, &[], &[]),
            r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{"__name__":"up","job":"x"},"value":[1,"1"]}]}}"#
        );
    }

    #[test]
    fn success_body_with_warnings() {
        let mut data = String::new();
        write_str_array(&mut data, &["a", "b"]);
        assert_eq!(
            success_body(&data, &["results truncated due to limit".into()], &[]),
            r#"{"status":"success","data":["a","b"],"warnings":["results truncated due to limit"]}"#
        );
        assert_eq!(success_body("[]", &[], &[]), r#"{"status":"success","data":[]}"#);
    }

    #[test]
    fn scalar_and_string_times_like_encoding_json() {
        let body = query_body(&Value::Scalar { t: 1_767_231_000_500, v: -0.75 }, &[], &[]);
        assert_eq!(body, r#"{"status":"success","data":{"resultType":"scalar","result":[1767231000.5,"-0.75"]}}"#);
        let body = query_body(&Value::String { t: 12_000, s: "a".into() }, &[], &[]);
        assert_eq!(body, r#"{"status":"success","data":{"resultType":"string","result":[12,"a"]}}"#);
    }

    #[test]
    fn error_body_shape() {
        assert_eq!(error_body("bad_data", "x"), r#"{"status":"error","errorType":"bad_data","error":"x"}"#);
    }
}
