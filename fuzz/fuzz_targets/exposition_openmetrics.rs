//! Arbitrary bytes through the OpenMetrics parser.
#![no_main]

use libfuzzer_sys::fuzz_target;
use strata_collector::exposition::{Format, Parser};

fuzz_target!(|data: &[u8]| {
    for entry in Parser::new(data, Format::OpenMetrics) {
        let _ = std::hint::black_box(entry);
    }
});
