//! Compressed sample chunks for the head, in the style of Gorilla (and of
//! Prometheus' XOR chunks).
//!
//! A chunk holds up to [`CHUNK_SAMPLES`] samples of one series as a bit
//! stream:
//!
//! - the first sample: the bits of its value, 64 bits (its timestamp is the
//!   chunk's `min_t`, kept beside the bits);
//! - every later timestamp: the delta-of-delta to the previous one, `0` for
//!   the same interval (a steady scrape), else a prefix `10`, `110`, `1110`
//!   or `1111` and 5 (a few milliseconds of jitter), 14, 24 or 64 bits;
//! - the chunk's decimals `d` (4 bits, see `strata_block::decimal`): most
//!   metric values are decimals, and the difference of two decimal mantissas
//!   takes far fewer bits than the XOR of two doubles;
//! - every later value: `0` when its bits equal the previous value's; `10`,
//!   2 bits choosing a width of 5, 11, 18 or 32 bits and the difference of
//!   the two values' mantissas at `d` decimals, when both are exact at `d`;
//!   else `11` and the XOR with the previous value's bits: `0` and the
//!   meaningful bits inside the previous window of leading and trailing
//!   zeros, or `1`, 5 bits of leading zeros, 6 bits of length and the
//!   meaningful bits. The encoder takes the shorter of the two.
//!
//! Values round-trip bit for bit, NaN payloads (the staleness marker) included.
//! [`SeriesChunks`] is one series' chunks: closed ones shrunk to size and an
//! open one appended in place.

use strata_model::Sample;

/// Samples per chunk before a new one is started: an hour at a 15 s scrape.
/// Prometheus cuts at 120; twice that halves the per-chunk headers (the first
/// value's 64 bits, the first interval, the chunk's bookkeeping), which keeps
/// a series with 2 h of data within 1 KiB, and decoding 240 samples for a
/// query is still a matter of microseconds.
pub const CHUNK_SAMPLES: u32 = 240;

/// Delta-of-delta buckets: prefix bits, prefix length, value bits.
/// The first bucket holds the few milliseconds of jitter a scrape has.
const DOD_BUCKETS: [(u64, u32, u32); 3] = [(0b10, 2, 5), (0b110, 3, 14), (0b1110, 4, 24)];

/// Widths of a mantissa difference, chosen by 2 bits.
const MANTISSA_WIDTHS: [u32; 4] = [5, 11, 18, 32];

use strata_block::decimal;

/// A bit stream being written, most significant bit first.
#[derive(Debug, Clone, Default)]
struct BitWriter {
    bytes: Vec<u8>,
    /// Bits used in the last byte (0 = the last byte is full or there is none).
    used: u32,
}

impl BitWriter {
    fn push_bits(&mut self, v: u64, n: u32) {
        let mut remaining = n;
        while remaining > 0 {
            if self.used == 0 {
                self.bytes.push(0);
            }
            let free = 8 - self.used;
            let take = free.min(remaining);
            let part = ((v >> (remaining - take)) & ((1u64 << take) - 1)) as u8;
            if let Some(last) = self.bytes.last_mut() {
                *last |= part << (free - take);
            }
            self.used = (self.used + take) % 8;
            remaining -= take;
        }
    }

    fn push_bit(&mut self, b: bool) {
        self.push_bits(u64::from(b), 1);
    }
}

/// A bit stream being read.
#[derive(Debug, Clone)]
struct BitReader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl BitReader<'_> {
    fn read_bits(&mut self, n: u32) -> Option<u64> {
        let mut out = 0u64;
        let mut remaining = n;
        while remaining > 0 {
            let byte = *self.bytes.get(self.pos / 8)?;
            let used = (self.pos % 8) as u32;
            let avail = 8 - used;
            let take = avail.min(remaining);
            let part = (u64::from(byte) >> (avail - take)) & ((1u64 << take) - 1);
            out = (out << take) | part;
            self.pos += take as usize;
            remaining -= take;
        }
        Some(out)
    }

    fn read_bit(&mut self) -> Option<bool> {
        self.read_bits(1).map(|b| b == 1)
    }
}

/// Sign-extends the low `n` bits of `v`.
fn sign_extend(v: u64, n: u32) -> i64 {
    let shift = 64 - n;
    ((v << shift) as i64) >> shift
}

/// The state an encoder and a decoder share: the previous sample.
#[derive(Debug, Clone, Copy)]
struct XorState {
    t: i64,
    delta: i64,
    v: u64,
    /// Leading and trailing zeros of the current XOR window; `leading == 0xff`
    /// before the first window.
    leading: u8,
    trailing: u8,
    /// The chunk's decimals.
    decimals: u32,
    /// Encoder only: the most decimals a sample needed (a hint for the next chunk).
    max_decimals: u32,
}

/// One compressed chunk.
#[derive(Debug, Clone)]
pub struct Chunk {
    bits: BitWriter,
    min_t: i64,
    max_t: i64,
    count: u32,
}

/// A chunk with room for more: the chunk and its encoder state.
#[derive(Debug, Clone)]
struct OpenChunk {
    chunk: Chunk,
    state: XorState,
}

impl OpenChunk {
    /// A chunk starting with `s`, coding decimals with at least `decimals_hint` decimals.
    fn new(s: Sample, decimals_hint: u32, capacity: usize) -> Self {
        let decimals = decimal::decimals_of(s.v).unwrap_or(0).max(decimals_hint).min(decimal::MAX_DECIMALS);
        let mut bits = BitWriter { bytes: Vec::with_capacity(capacity), used: 0 };
        bits.push_bits(s.v.to_bits(), 64);
        bits.push_bits(u64::from(decimals), 4);
        Self {
            chunk: Chunk { bits, min_t: s.t, max_t: s.t, count: 1 },
            state: XorState {
                t: s.t,
                delta: 0,
                v: s.v.to_bits(),
                leading: 0xff,
                trailing: 0,
                decimals,
                max_decimals: decimals,
            },
        }
    }

    fn push(&mut self, s: Sample) {
        let st = &mut self.state;
        let w = &mut self.chunk.bits;
        let delta = s.t.wrapping_sub(st.t);
        let dod = delta.wrapping_sub(st.delta);
        if dod == 0 {
            w.push_bit(false);
        } else if let Some(&(prefix, plen, n)) =
            DOD_BUCKETS.iter().find(|&&(_, _, n)| (-(1i64 << (n - 1))..(1i64 << (n - 1))).contains(&dod))
        {
            w.push_bits(prefix, plen);
            w.push_bits(dod as u64 & ((1u64 << n) - 1), n);
        } else {
            w.push_bits(0b1111, 4);
            w.push_bits(dod as u64, 64);
        }
        let v = s.v.to_bits();
        let x = v ^ st.v;
        if x == 0 {
            w.push_bit(false);
        } else {
            let leading = x.leading_zeros().min(31) as u8;
            let trailing = x.trailing_zeros() as u8;
            let reuse = st.leading != 0xff && leading >= st.leading && trailing >= st.trailing;
            let xor_bits = 3 + if reuse {
                64 - u32::from(st.leading) - u32::from(st.trailing)
            } else {
                11 + 64 - u32::from(leading) - u32::from(trailing)
            };
            let mantissa = decimal::encode(f64::from_bits(st.v), st.decimals)
                .zip(decimal::encode(s.v, st.decimals))
                .and_then(|(a, b)| b.checked_sub(a))
                .and_then(|d| {
                    MANTISSA_WIDTHS
                        .iter()
                        .position(|&n| (-(1i64 << (n - 1))..(1i64 << (n - 1))).contains(&d))
                        .map(|i| (i, d))
                })
                .filter(|&(i, _)| 4 + MANTISSA_WIDTHS[i] < xor_bits);
            if let Some((i, d)) = mantissa {
                let n = MANTISSA_WIDTHS[i];
                w.push_bits(0b10, 2);
                w.push_bits(i as u64, 2);
                w.push_bits(d as u64 & ((1u64 << n) - 1), n);
            } else {
                w.push_bits(0b11, 2);
                if reuse {
                    w.push_bit(false);
                    let sig = 64 - u32::from(st.leading) - u32::from(st.trailing);
                    w.push_bits(x >> st.trailing, sig);
                } else {
                    w.push_bit(true);
                    let sig = 64 - u32::from(leading) - u32::from(trailing);
                    w.push_bits(u64::from(leading), 5);
                    w.push_bits(u64::from(sig % 64), 6);
                    w.push_bits(x >> trailing, sig);
                    st.leading = leading;
                    st.trailing = trailing;
                }
                if let Some(d) = decimal::decimals_of(s.v) {
                    st.max_decimals = st.max_decimals.max(d);
                }
            }
        }
        st.t = s.t;
        st.delta = delta;
        st.v = v;
        self.chunk.max_t = s.t;
        self.chunk.count += 1;
    }

    fn close(mut self) -> Chunk {
        self.chunk.bits.bytes.shrink_to_fit();
        self.chunk
    }
}

impl Chunk {
    /// Encodes `samples` (time-ordered) into one chunk; `None` when empty.
    fn encode(samples: &[Sample]) -> Option<Self> {
        let (&first, rest) = samples.split_first()?;
        let mut open = OpenChunk::new(first, 0, 0);
        for &s in rest {
            open.push(s);
        }
        Some(open.close())
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        self.count as usize
    }

    /// Whether the chunk has no samples (never true for a built chunk).
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// First and last timestamp.
    pub fn time_range(&self) -> (i64, i64) {
        (self.min_t, self.max_t)
    }

    /// Bytes of heap this chunk holds.
    pub fn heap_bytes(&self) -> usize {
        self.bits.bytes.capacity()
    }

    /// Bytes of encoded data.
    pub fn encoded_bytes(&self) -> usize {
        self.bits.bytes.len()
    }

    /// The samples, in time order.
    pub fn iter(&self) -> ChunkIter<'_> {
        ChunkIter { r: BitReader { bytes: &self.bits.bytes, pos: 0 }, left: self.count, min_t: self.min_t, state: None }
    }
}

/// Decodes a [`Chunk`].
#[derive(Debug, Clone)]
pub struct ChunkIter<'a> {
    r: BitReader<'a>,
    min_t: i64,
    left: u32,
    state: Option<XorState>,
}

impl ChunkIter<'_> {
    fn decode_next(&mut self) -> Option<Sample> {
        let r = &mut self.r;
        let Some(st) = self.state.as_mut() else {
            let t = self.min_t;
            let v = r.read_bits(64)?;
            let decimals = r.read_bits(4)? as u32;
            self.state =
                Some(XorState { t, delta: 0, v, leading: 0xff, trailing: 0, decimals, max_decimals: decimals });
            return Some(Sample::new(t, f64::from_bits(v)));
        };
        let dod = if !r.read_bit()? {
            0
        } else {
            // `10`, `110`, `1110` pick a bucket; `1111` means 64 raw bits.
            let mut bucket = None;
            for &(_, _, n) in &DOD_BUCKETS {
                if !r.read_bit()? {
                    bucket = Some(n);
                    break;
                }
            }
            match bucket {
                Some(n) => sign_extend(r.read_bits(n)?, n),
                None => r.read_bits(64)? as i64,
            }
        };
        let delta = st.delta.wrapping_add(dod);
        let t = st.t.wrapping_add(delta);
        let v = if !r.read_bit()? {
            st.v
        } else if !r.read_bit()? {
            let n = *MANTISSA_WIDTHS.get(r.read_bits(2)? as usize)?;
            let d = sign_extend(r.read_bits(n)?, n);
            let prev = decimal::encode(f64::from_bits(st.v), st.decimals)?;
            decimal::decode(prev.checked_add(d)?, st.decimals).to_bits()
        } else if !r.read_bit()? {
            let sig = 64u32.checked_sub(u32::from(st.leading) + u32::from(st.trailing))?;
            st.v ^ (r.read_bits(sig)? << st.trailing)
        } else {
            let leading = r.read_bits(5)? as u32;
            let sig = match r.read_bits(6)? as u32 {
                0 => 64,
                n => n,
            };
            let trailing = 64u32.checked_sub(leading + sig)?;
            st.leading = leading as u8;
            st.trailing = trailing as u8;
            st.v ^ (r.read_bits(sig)? << trailing)
        };
        st.t = t;
        st.delta = delta;
        st.v = v;
        Some(Sample::new(t, f64::from_bits(v)))
    }
}

impl Iterator for ChunkIter<'_> {
    type Item = Sample;

    fn next(&mut self) -> Option<Sample> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let s = self.decode_next();
        if s.is_none() {
            self.left = 0;
        }
        s
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (0, Some(self.left as usize))
    }
}

/// One series' samples: closed chunks and the open chunk new samples go to.
#[derive(Debug, Clone, Default)]
pub struct SeriesChunks {
    closed: Vec<Chunk>,
    open: Option<OpenChunk>,
}

impl OpenChunk {
    /// Decimals the next chunk of the series should start with.
    fn decimals_hint(&self) -> u32 {
        self.state.max_decimals
    }
}

impl SeriesChunks {
    /// Appends `s`; the caller keeps timestamps increasing.
    pub fn push(&mut self, s: Sample) {
        match self.open.as_mut() {
            Some(o) if o.chunk.count < CHUNK_SAMPLES => o.push(s),
            _ => {
                // The previous chunk's size is the best guess of this one's.
                let (hint, capacity) =
                    self.open.as_ref().map_or((0, 0), |o| (o.decimals_hint(), o.chunk.bits.bytes.len() + 8));
                if let Some(o) = self.open.replace(OpenChunk::new(s, hint, capacity)) {
                    self.closed.push(o.close());
                    // Once per chunk: no spare slots (a Vec starts with 4).
                    self.closed.shrink_to_fit();
                }
            }
        }
    }

    /// The newest sample.
    pub fn last(&self) -> Option<Sample> {
        self.open.as_ref().map(|o| Sample::new(o.state.t, f64::from_bits(o.state.v)))
    }

    /// The oldest sample's time.
    pub fn first_time(&self) -> Option<i64> {
        self.chunks().next().map(|c| c.min_t)
    }

    /// The newest sample's time.
    pub fn last_time(&self) -> Option<i64> {
        self.open.as_ref().map(|o| o.state.t)
    }

    /// Whether there are no samples.
    pub fn is_empty(&self) -> bool {
        self.open.is_none()
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        self.chunks().map(Chunk::len).sum()
    }

    fn chunks(&self) -> impl Iterator<Item = &Chunk> {
        self.closed.iter().chain(self.open.as_ref().map(|o| &o.chunk))
    }

    /// Samples with `mint <= t <= maxt`, decoding only the chunks that overlap.
    pub fn range(&self, mint: i64, maxt: i64) -> impl Iterator<Item = Sample> + '_ {
        self.chunks()
            .filter(move |c| c.min_t <= maxt && c.max_t >= mint)
            .flat_map(Chunk::iter)
            .filter(move |s| s.t >= mint && s.t <= maxt)
    }

    /// Drops samples older than `t`; returns how many were dropped.
    pub fn truncate_before(&mut self, t: i64) -> usize {
        let mut removed = 0;
        let whole = self.closed.iter().take_while(|c| c.max_t < t).count();
        removed += self.closed.drain(..whole).map(|c| c.len()).sum::<usize>();
        if let Some(c) = self.closed.first_mut().filter(|c| c.min_t < t) {
            let keep: Vec<Sample> = c.iter().filter(|s| s.t >= t).collect();
            removed += c.len() - keep.len();
            // The first closed chunk still has a sample at or after `t` (its max).
            if let Some(re) = Chunk::encode(&keep) {
                *c = re;
            }
            return removed;
        }
        if !self.closed.is_empty() {
            return removed;
        }
        if let Some(o) = self.open.as_ref().filter(|o| o.chunk.min_t < t) {
            let keep: Vec<Sample> = o.chunk.iter().filter(|s| s.t >= t).collect();
            removed += o.chunk.len() - keep.len();
            self.open = None;
            for s in keep {
                self.push(s);
            }
        }
        removed
    }

    /// Bytes of heap held: chunk data and closed chunk headers (the open
    /// chunk's header lives inline in the series).
    pub fn heap_bytes(&self) -> usize {
        self.closed.capacity() * std::mem::size_of::<Chunk>() + self.chunks().map(Chunk::heap_bytes).sum::<usize>()
    }

    /// Bytes of encoded sample data.
    pub fn encoded_bytes(&self) -> usize {
        self.chunks().map(Chunk::encoded_bytes).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use strata_model::STALE_NAN_BITS;

    fn bits(s: &[Sample]) -> Vec<(i64, u64)> {
        s.iter().map(|s| (s.t, s.v.to_bits())).collect()
    }

    fn roundtrip(samples: &[Sample]) -> Vec<Sample> {
        let mut c = SeriesChunks::default();
        for &s in samples {
            c.push(s);
        }
        c.range(i64::MIN, i64::MAX).collect()
    }

    #[test]
    fn steady_scrape_is_small_and_exact() {
        let samples: Vec<Sample> = (0..480).map(|i| Sample::new(1_700_000_000_000 + i * 15_000, 1.0)).collect();
        let mut c = SeriesChunks::default();
        for &s in &samples {
            c.push(s);
        }
        assert_eq!(bits(&c.range(i64::MIN, i64::MAX).collect::<Vec<_>>()), bits(&samples));
        assert_eq!(c.len(), 480);
        // About 12 header bytes a chunk plus 2 bits per steady sample.
        let chunks = 480 / CHUNK_SAMPLES as usize;
        assert!(c.encoded_bytes() < chunks * 12 + 480 / 4 + 16, "{}", c.encoded_bytes());
    }

    #[test]
    fn nan_payloads_and_extremes_round_trip() {
        let vals = [
            f64::from_bits(STALE_NAN_BITS),
            f64::NAN,
            f64::from_bits(0xfff8_0000_0000_0001),
            f64::INFINITY,
            -0.0,
            0.0,
            f64::MIN_POSITIVE,
            f64::MAX,
            f64::from_bits(1),
        ];
        let ts = [i64::MIN, -1, 0, 1, 1 << 40, i64::MAX - 1, i64::MAX];
        let samples: Vec<Sample> = ts.iter().zip(vals.iter().cycle()).map(|(&t, &v)| Sample::new(t, v)).collect();
        assert_eq!(bits(&roundtrip(&samples)), bits(&samples));
    }

    #[test]
    fn range_and_truncate() {
        let samples: Vec<Sample> = (0..300).map(|i| Sample::new(i * 10, i as f64 * 0.5)).collect();
        let mut c = SeriesChunks::default();
        for &s in &samples {
            c.push(s);
        }
        assert_eq!(bits(&c.range(100, 200).collect::<Vec<_>>()), bits(&samples[10..=20]));
        assert_eq!(c.truncate_before(1_505), 151);
        assert_eq!(c.len(), 149);
        assert_eq!(c.first_time(), Some(1_510));
        assert_eq!(bits(&c.range(i64::MIN, i64::MAX).collect::<Vec<_>>()), bits(&samples[151..]));
        assert_eq!(c.truncate_before(2_985), 148);
        assert_eq!(bits(&c.range(i64::MIN, i64::MAX).collect::<Vec<_>>()), bits(&samples[299..]));
        c.push(Sample::new(3_000, 7.0));
        assert_eq!(c.last(), Some(Sample::new(3_000, 7.0)));
        assert_eq!(c.truncate_before(10_000), 2);
        assert!(c.is_empty());
        assert_eq!(c.last(), None);
    }

    proptest! {
        #[test]
        fn any_sequence_round_trips(
            start in any::<i64>(),
            steps in proptest::collection::vec((0i64..1 << 40, any::<u64>(), 0u8..4), 0..400),
        ) {
            let mut t = start;
            let mut samples = Vec::new();
            let mut prev = 0u64;
            for (step, raw, kind) in steps {
                // Mix repeated values, small changes, the staleness marker and raw bits.
                let v = match kind {
                    0 => prev,
                    1 => (f64::from_bits(prev) + (raw % 100) as f64).to_bits(),
                    2 => STALE_NAN_BITS,
                    _ => raw,
                };
                prev = v;
                samples.push(Sample::new(t, f64::from_bits(v)));
                t = t.wrapping_add(step);
            }
            prop_assert_eq!(bits(&roundtrip(&samples)), bits(&samples));
        }

        #[test]
        fn truncate_keeps_exactly_the_newer_samples(
            n in 0usize..400,
            cut in 0i64..4_000_000,
            jitter in proptest::collection::vec(-50i64..50, 400),
        ) {
            let samples: Vec<Sample> =
                (0..n).map(|i| Sample::new(i as i64 * 10_000 + jitter[i], (i as f64).sqrt())).collect();
            let mut c = SeriesChunks::default();
            for &s in &samples {
                c.push(s);
            }
            let removed = c.truncate_before(cut);
            let keep: Vec<Sample> = samples.iter().copied().filter(|s| s.t >= cut).collect();
            prop_assert_eq!(removed, n - keep.len());
            prop_assert_eq!(bits(&c.range(i64::MIN, i64::MAX).collect::<Vec<_>>()), bits(&keep));
            prop_assert_eq!(c.len(), keep.len());
        }
    }
}
