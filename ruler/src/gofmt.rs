//! Go's number and time formatting, as Prometheus' templates and API print
//! them: `strconv.FormatFloat` with `'g'`/`'e'`/`'f'`, `fmt`'s `%.4g`, a
//! `printf` subset and `time.Time`'s `String` and RFC 3339 forms.

use std::fmt::Write;

/// Shortest round-trip digits and the decimal exponent of `v` (finite, non-zero):
/// `v = 0.d1d2d3... × 10^(exp+1)`, i.e. `d1.d2d3... × 10^exp`.
fn shortest_digits(v: f64) -> (String, i32) {
    let s = format!("{:e}", v.abs());
    let (mant, exp) = s.split_once('e').unwrap_or((&s, "0"));
    let digits: String = mant.chars().filter(char::is_ascii_digit).collect();
    (digits, exp.parse().unwrap_or(0))
}

/// Digits of `v` rounded to `prec` significant digits, and the exponent.
fn precise_digits(v: f64, prec: usize) -> (String, i32) {
    let s = format!("{:.*e}", prec.saturating_sub(1), v.abs());
    let (mant, exp) = s.split_once('e').unwrap_or((&s, "0"));
    let digits: String = mant.chars().filter(char::is_ascii_digit).collect();
    (digits, exp.parse().unwrap_or(0))
}

fn special(v: f64) -> Option<&'static str> {
    if v.is_nan() {
        Some("NaN")
    } else if v == f64::INFINITY {
        Some("+Inf")
    } else if v == f64::NEG_INFINITY {
        Some("-Inf")
    } else {
        None
    }
}

fn exp_suffix(out: &mut String, exp: i32) {
    let _ = write!(out, "e{}{:02}", if exp < 0 { '-' } else { '+' }, exp.abs());
}

/// `%e` layout of given digits.
fn layout_e(neg: bool, digits: &str, exp: i32) -> String {
    let mut out = String::new();
    if neg {
        out.push('-');
    }
    out.push_str(&digits[..1]);
    if digits.len() > 1 {
        out.push('.');
        out.push_str(&digits[1..]);
    }
    exp_suffix(&mut out, exp);
    out
}

/// `%f` layout of given digits (no trailing zeros added).
fn layout_f(neg: bool, digits: &str, exp: i32) -> String {
    let mut out = String::new();
    if neg {
        out.push('-');
    }
    let point = exp + 1; // digits before the decimal point
    if point <= 0 {
        out.push_str("0.");
        for _ in 0..(-point) {
            out.push('0');
        }
        out.push_str(digits);
    } else {
        let p = point as usize;
        if digits.len() <= p {
            out.push_str(digits);
            for _ in digits.len()..p {
                out.push('0');
            }
        } else {
            out.push_str(&digits[..p]);
            out.push('.');
            out.push_str(&digits[p..]);
        }
    }
    out
}

/// `strconv.FormatFloat(v, 'g', -1, 64)`, which is also `fmt`'s `%v`.
pub fn format_g(v: f64) -> String {
    if let Some(s) = special(v) {
        return s.to_owned();
    }
    if v == 0.0 {
        return if v.is_sign_negative() { "-0".into() } else { "0".into() };
    }
    let (digits, exp) = shortest_digits(v);
    // strconv: "if precision was the shortest possible, use precision 6".
    if !(-4..6).contains(&exp) { layout_e(v < 0.0, &digits, exp) } else { layout_f(v < 0.0, &digits, exp) }
}

/// `fmt.Sprint(v)` / `%v` of a float64 (the same as [`format_g`]).
pub fn format_v(v: f64) -> String {
    format_g(v)
}

/// `strconv.FormatFloat(v, 'e', -1, 64)`, as Prometheus prints alert values.
pub fn format_e(v: f64) -> String {
    if let Some(s) = special(v) {
        return s.to_owned();
    }
    if v == 0.0 {
        return if v.is_sign_negative() { "-0e+00".into() } else { "0e+00".into() };
    }
    let (digits, exp) = shortest_digits(v);
    layout_e(v < 0.0, &digits, exp)
}

/// `fmt.Sprintf("%.<prec>g", v)`.
pub fn format_prec_g(v: f64, prec: usize) -> String {
    if let Some(s) = special(v) {
        return s.to_owned();
    }
    let prec = prec.max(1);
    if v == 0.0 {
        return if v.is_sign_negative() { "-0".into() } else { "0".into() };
    }
    let (digits, exp) = precise_digits(v, prec);
    let trimmed = digits.trim_end_matches('0');
    let trimmed = if trimmed.is_empty() { "0" } else { trimmed };
    if exp < -4 || exp >= prec as i32 { layout_e(v < 0.0, trimmed, exp) } else { layout_f(v < 0.0, trimmed, exp) }
}

/// `fmt.Sprintf("%.<prec>f", v)`.
pub fn format_prec_f(v: f64, prec: usize) -> String {
    if let Some(s) = special(v) {
        return s.to_owned();
    }
    format!("{v:.prec$}")
}

/// `fmt.Sprintf("%.<prec>e", v)`.
pub fn format_prec_e(v: f64, prec: usize) -> String {
    if let Some(s) = special(v) {
        return s.to_owned();
    }
    if v == 0.0 {
        let mut s = format!("{:.prec$}", 0.0);
        exp_suffix(&mut s, 0);
        return s;
    }
    let (digits, exp) = precise_digits(v, prec + 1);
    layout_e(v < 0.0, &digits, exp)
}

/// Days since 1970-01-01 → (year, month, day).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// UTC calendar parts of a millisecond timestamp.
fn parts(ms: i64) -> (i64, u32, u32, i64, i64, i64, i64) {
    let secs = ms.div_euclid(1000);
    let milli = ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let (y, mo, d) = civil_from_days(days);
    (y, mo, d, sod / 3600, (sod / 60) % 60, sod % 60, milli)
}

fn frac(ms: i64) -> String {
    if ms == 0 { String::new() } else { format!(".{ms:03}").trim_end_matches('0').to_owned() }
}

/// Go's `time.Time.MarshalJSON` layout (RFC 3339, trailing zeros of the
/// fraction dropped) of a millisecond timestamp in UTC.
pub fn rfc3339(ms: i64) -> String {
    let (y, mo, d, h, mi, s, milli) = parts(ms);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}{}Z", frac(milli))
}

/// Go's zero `time.Time` in JSON.
pub const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

/// Go's `time.Time.String()` of a UTC millisecond timestamp:
/// `2006-01-02 15:04:05.999 +0000 UTC`.
pub fn time_string(ms: i64) -> String {
    let (y, mo, d, h, mi, s, milli) = parts(ms);
    format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}{} +0000 UTC", frac(milli))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_g() {
        assert_eq!(format_g(1.0), "1");
        assert_eq!(format_g(0.5), "0.5");
        assert_eq!(format_g(123456789.0), "1.23456789e+08");
        assert_eq!(format_g(1e6), "1e+06");
        assert_eq!(format_g(100000.0), "100000");
        assert_eq!(format_g(0.0001), "0.0001");
        assert_eq!(format_g(0.00001), "1e-05");
        assert_eq!(format_g(-2.5), "-2.5");
        assert_eq!(format_g(1e21), "1e+21");
        assert_eq!(format_g(f64::NAN), "NaN");
    }

    #[test]
    fn go_e_and_prec() {
        assert_eq!(format_e(1.0), "1e+00");
        assert_eq!(format_e(0.25), "2.5e-01");
        assert_eq!(format_e(1234.5), "1.2345e+03");
        assert_eq!(format_prec_g(1234.5678, 4), "1235");
        assert_eq!(format_prec_g(12345.678, 4), "1.235e+04");
        assert_eq!(format_prec_g(0.5, 4), "0.5");
        assert_eq!(format_prec_g(1.0, 4), "1");
        assert_eq!(format_prec_g(0.00001234, 4), "1.234e-05");
        assert_eq!(format_prec_f(1.0 / 3.0, 2), "0.33");
        assert_eq!(format_prec_e(1234.5, 2), "1.23e+03");
    }

    #[test]
    fn times() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000_120), "2023-11-14T22:13:20.12Z");
        assert_eq!(time_string(1_000), "1970-01-01 00:00:01 +0000 UTC");
        assert_eq!(time_string(1_435_065_584_128), "2015-06-23 13:19:44.128 +0000 UTC");
    }
}
