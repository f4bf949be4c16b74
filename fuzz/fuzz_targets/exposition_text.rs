//! Arbitrary bytes through the Prometheus text 0.0.4 parser.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata_collector::exposition::{Format, Parser};

fuzz_target!(|data: &[u8]| {
    for entry in Parser::new(data, Format::PrometheusText) {
        let _ = std::hint::black_box(entry);
    }
});
