//! Export: series as OpenMetrics text with timestamps, the format
//! [`crate::import`] (and `promtool tsdb create-blocks-from openmetrics`)
//! reads, so that export → import gives the same data back.
//!
//! Each metric name is one family (`# TYPE <name> unknown`) with its series
//! one after the other, samples in time order, timestamps in seconds with
//! millisecond decimals, values in the shortest form that parses back to the
//! same float. Staleness markers are left out: they are not data, and
//! OpenMetrics has no way to tell them from an ordinary NaN.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use strata_model::{Labels, METRIC_NAME, Series};

/// Appends `{a="b",c="d"}` (labels other than `__name__`, escaped), or
/// nothing when there are none.
pub fn write_label_set(out: &mut String, labels: &Labels) {
    let mut first = true;
    for l in labels.iter().filter(|l| l.name != METRIC_NAME) {
        out.push(if first { '{' } else { ',' });
        first = false;
        out.push_str(&l.name);
        out.push_str("=\"");
        for c in l.value.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '"' => out.push_str("\\\""),
                '\n' => out.push_str("\\n"),
                c => out.push(c),
            }
        }
        out.push('"');
    }
    if !first {
        out.push('}');
    }
}

/// A float as OpenMetrics writes it: `NaN`, `+Inf`, `-Inf`, integers without
/// a fraction, everything else in the shortest form that reads back exactly.
pub fn format_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".to_owned()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.to_owned()
    } else if v.fract() == 0.0 && v.abs() < 1e15 && !(v == 0.0 && v.is_sign_negative()) {
        format!("{v:.0}")
    } else {
        format!("{v:?}")
    }
}

/// A millisecond timestamp as exact decimal seconds (`1700000000.123`).
pub fn format_timestamp(t: i64) -> String {
    let sign = if t < 0 { "-" } else { "" };
    let a = t.unsigned_abs();
    match a % 1000 {
        0 => format!("{sign}{}", a / 1000),
        ms => format!("{sign}{}.{ms:03}", a / 1000),
    }
}

/// Writes `series` as one OpenMetrics document (ending in `# EOF`).
pub fn to_openmetrics(series: &[Series]) -> String {
    let mut families: BTreeMap<&str, Vec<&Series>> = BTreeMap::new();
    for s in series {
        families.entry(s.labels.metric_name().unwrap_or("")).or_default().push(s);
    }
    let mut out = String::new();
    for (name, list) in families {
        if name.is_empty() {
            continue;
        }
        let _ = writeln!(out, "# TYPE {name} unknown");
        for s in list {
            let mut head = String::from(name);
            write_label_set(&mut head, &s.labels);
            for p in s.samples.iter().filter(|p| !p.is_stale()) {
                let _ = writeln!(out, "{head} {} {}", format_value(p.v), format_timestamp(p.t));
            }
        }
    }
    out.push_str("# EOF\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_model::{Sample, stale_nan};

    #[test]
    fn formats_values_and_times() {
        assert_eq!(format_value(1.0), "1");
        assert_eq!(format_value(-0.0), "-0.0");
        assert_eq!(format_value(0.1), "0.1");
        assert_eq!(format_value(1e300), "1e300");
        assert_eq!(format_value(f64::NEG_INFINITY), "-Inf");
        assert_eq!(format_timestamp(1_700_000_000_123), "1700000000.123");
        assert_eq!(format_timestamp(-1_500), "-1.500");
        assert_eq!(format_timestamp(5_000), "5");
    }

    #[test]
    fn writes_families_and_skips_staleness() {
        let l = Labels::from_pairs([("__name__", "up"), ("job", "a\"b\\c\nd")]).expect("labels");
        let s = Series { labels: l, samples: vec![Sample::new(1_000, 1.0), Sample::new(2_000, stale_nan())] };
        assert_eq!(to_openmetrics(&[s]), "# TYPE up unknown\nup{job=\"a\\\"b\\\\c\\nd\"} 1 1\n# EOF\n");
    }
}
