//! Arbitrary UTF-8 through `promql_parser`, then (when it parses) through the
//! evaluator over an empty store at time 0, to catch evaluator panics.
#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use strata_promql::memstore::MemStore;
use strata_promql::{Engine, EngineOptions};

fuzz_target!(|data: &[u8]| {
    let Ok(query) = std::str::from_utf8(data) else { return };
    if query.len() > 4096 || promql_parser::parser::parse(query).is_err() {
        return;
    }
    let engine = Engine::new(EngineOptions {
        lookback_delta_ms: 300_000,
        max_samples: 100_000,
        timeout: Duration::from_millis(500),
    });
    let store = MemStore::new();
    let rt = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
    let _ = rt.block_on(engine.instant_query(&store, "t", query, 0));
});
