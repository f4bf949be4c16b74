//! Times and durations in API parameters, parsed as Prometheus parses them:
//! times as Unix seconds (fractions allowed) or RFC 3339; durations as float
//! seconds or Prometheus' duration syntax.

use crate::ApiError;

/// Parses a time parameter into milliseconds since the epoch.
pub fn parse_time(name: &str, s: &str) -> Result<i64, ApiError> {
    let bad = || ApiError::BadData(format!("invalid parameter {name:?}: cannot parse {s:?} to a valid timestamp"));
    if let Ok(f) = s.parse::<f64>() {
        if !f.is_finite() {
            return Err(bad());
        }
        let ms = (f * 1000.0).round();
        // Prometheus clamps to its min/max time; keep to what i64 milliseconds hold.
        if ms.abs() > 9.2e18 {
            return Err(bad());
        }
        return Ok(ms as i64);
    }
    parse_rfc3339(s).ok_or_else(bad)
}

/// A time parameter that has a default (Go's `parseTimeParam`): missing or
/// empty gives `default`; a bad value is reported as Prometheus does.
pub fn time_param(name: &str, value: Option<&str>, default: i64) -> Result<i64, ApiError> {
    match value {
        None | Some("") => Ok(default),
        Some(s) => parse_time(name, s).map_err(|_| {
            ApiError::BadData(format!(
                "invalid parameter \"{name}\": Invalid time value for '{name}': cannot parse {s:?} to a valid timestamp"
            ))
        }),
    }
}

/// Parses a duration parameter into milliseconds.
pub fn parse_duration_ms(name: &str, s: &str) -> Result<i64, ApiError> {
    let bad = || ApiError::BadData(format!("invalid parameter {name:?}: cannot parse {s:?} to a valid duration"));
    if let Ok(f) = s.parse::<f64>() {
        let ms = (f * 1000.0).round();
        if !ms.is_finite() || ms >= 9.2e18 || ms <= -9.2e18 {
            return Err(ApiError::BadData(format!(
                "invalid parameter {name:?}: cannot parse {s:?} to a valid duration. It overflows int64"
            )));
        }
        return Ok(ms as i64);
    }
    strata_common::parse_duration(s).map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX)).map_err(|_| bad())
}

/// RFC 3339 (`2015-07-01T20:10:51.781Z`, `...+02:00`) to milliseconds.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't') || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let part = s.get(r)?;
        if !part.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        part.parse().ok()
    };
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, min, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || min > 59 || sec > 60 {
        return None;
    }
    let mut i = 19;
    let mut millis = 0i64;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        let frac = s.get(start..i)?;
        if frac.is_empty() {
            return None;
        }
        let mut ms_digits: String = frac.chars().take(3).collect();
        while ms_digits.len() < 3 {
            ms_digits.push('0');
        }
        millis = ms_digits.parse().ok()?;
    }
    let offset_min = match b.get(i)? {
        b'Z' | b'z' if i + 1 == b.len() => 0,
        sign @ (b'+' | b'-') if i + 6 == b.len() && b[i + 3] == b':' => {
            let m = num(i + 1..i + 3)? * 60 + num(i + 4..i + 6)?;
            if *sign == b'-' { -m } else { m }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + hour * 3600 + min * 60 + sec - offset_min * 60;
    Some(secs * 1000 + millis)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times() {
        assert_eq!(parse_time("time", "1435781451.781").ok(), Some(1_435_781_451_781));
        assert_eq!(parse_time("time", "1435781451").ok(), Some(1_435_781_451_000));
        assert_eq!(parse_time("time", "2015-07-01T20:10:51.781Z").ok(), Some(1_435_781_451_781));
        assert_eq!(parse_time("time", "2015-07-01T22:10:51.781+02:00").ok(), Some(1_435_781_451_781));
        assert_eq!(parse_time("time", "1970-01-01T00:00:00Z").ok(), Some(0));
        assert!(parse_time("time", "yesterday").is_err());
        assert!(parse_time("time", "2015-13-01T00:00:00Z").is_err());
        assert_eq!(time_param("time", None, 7).ok(), Some(7));
        assert_eq!(time_param("time", Some("2"), 7).ok(), Some(2000));
        assert_eq!(
            time_param("time", Some("x"), 7).map_err(|e| e.to_string()).err().as_deref(),
            Some("invalid parameter \"time\": Invalid time value for 'time': cannot parse \"x\" to a valid timestamp")
        );
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration_ms("step", "15").ok(), Some(15_000));
        assert_eq!(parse_duration_ms("step", "0.5").ok(), Some(500));
        assert_eq!(parse_duration_ms("step", "1m").ok(), Some(60_000));
        assert!(parse_duration_ms("step", "1x").is_err());
    }

    proptest::proptest! {
        #[test]
        fn rfc3339_never_panics(s in "\\PC{0,40}") {
            let _ = parse_rfc3339(&s);
        }
    }
}
