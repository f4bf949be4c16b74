//! Arbitrary bytes (the snappy body) through the remote write 1.0 and 2.0 decoders.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata_aggregator::remote_write::{Protocol, RemoteWriteLimits, decode};

fuzz_target!(|data: &[u8]| {
    // Keep decompressed messages small so the fuzzer stays fast; the decode
    // paths past the limit check are the same.
    let limits = RemoteWriteLimits { max_message_bytes: 1 << 20, ..RemoteWriteLimits::default() };
    let _ = decode(data, Protocol::V1, "t", limits);
    let _ = decode(data, Protocol::V2, "t", limits);
});
