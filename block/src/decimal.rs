//! Decimal value coding (block format version 2).
//!
//! Most metric values are decimals: counters of bytes or packets, seconds
//! with two decimals, gauges of whole bytes. A series gets one exponent
//! `e <= 0` (the most decimals any of its samples needs, at most
//! [`MAX_DECIMALS`]) and each sample an integer mantissa `m` with
//! `value = m / 10^-e`. A sample whose value does not come back bit for bit
//! that way (NaN, the staleness marker, infinities, `-0`, `0.1 + 0.2`, huge
//! magnitudes) keeps its raw `f64` instead, so the coding is lossless.
//!
//! Integer mantissas delta-code to a few bits per sample where raw doubles
//! (whose low mantissa bits look random) do not.

/// Most decimals a series is coded with.
pub const MAX_DECIMALS: u32 = 15;

/// Exact powers of ten, `10^0 ..= 10^15`.
const POW10: [f64; 16] = [1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15];

/// Largest mantissa magnitude: integers up to 2^53 are exact doubles.
const MAX_MANTISSA: f64 = 9_007_199_254_740_992.0;

/// The value of mantissa `m` with `decimals` decimals (`exponent = -decimals`).
pub fn decode(m: i64, decimals: u32) -> f64 {
    m as f64 / POW10[decimals.min(MAX_DECIMALS) as usize]
}

/// The divisor of mantissas with `decimals` decimals: `decode(m, d) == m as f64 / scale(d)`.
pub fn scale(decimals: u32) -> f64 {
    POW10[decimals.min(MAX_DECIMALS) as usize]
}

/// The mantissa of `v` at `decimals` decimals, if it gives `v` back exactly.
pub fn encode(v: f64, decimals: u32) -> Option<i64> {
    let scaled = v * POW10[decimals.min(MAX_DECIMALS) as usize];
    if !scaled.is_finite() || scaled.abs() >= MAX_MANTISSA {
        return None;
    }
    let m = scaled.round() as i64;
    (decode(m, decimals).to_bits() == v.to_bits()).then_some(m)
}

/// The fewest decimals that code `v` exactly, if any up to [`MAX_DECIMALS`].
pub fn decimals_of(v: f64) -> Option<u32> {
    (0..=MAX_DECIMALS).find(|&d| encode(v, d).is_some())
}

/// The decimals for a series: the most any of its codable samples needs.
pub fn series_decimals(values: impl IntoIterator<Item = f64>) -> u32 {
    values.into_iter().filter_map(decimals_of).max().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn decimals_and_fallbacks() {
        assert_eq!(decimals_of(12.34), Some(2));
        assert_eq!(decimals_of(16_777_216_000.0), Some(0));
        assert_eq!(decimals_of(0.1 + 0.2), None);
        assert_eq!(decimals_of(-0.0), None);
        assert_eq!(decimals_of(f64::NAN), None);
        assert_eq!(decimals_of(f64::INFINITY), None);
        assert_eq!(decimals_of(1e300), None);
        assert_eq!(encode(12.3, 2), Some(1230));
        assert_eq!(series_decimals([1.5, 2.25, f64::NAN]), 2);
    }

    proptest! {
        #[test]
        fn encode_is_exact_or_refuses(bits in any::<u64>(), d in 0u32..=MAX_DECIMALS) {
            let v = f64::from_bits(bits);
            if let Some(m) = encode(v, d) {
                prop_assert_eq!(decode(m, d).to_bits(), bits);
            }
        }

        #[test]
        fn short_decimals_are_found(m in -1_000_000_000_000i64..1_000_000_000_000, d in 0u32..6) {
            let v = decode(m, d);
            let found = decimals_of(v);
            prop_assert!(found.is_some_and(|f| f <= d) || v.to_bits() == (-0.0f64).to_bits());
        }
    }
}
