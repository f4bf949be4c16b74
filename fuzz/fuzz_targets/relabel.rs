//! Arbitrary label sets through a fixed list of relabel rules covering every
//! action. Input: UTF-8, one `name=value` label per line.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use strata_collector::relabel::{RawRelabelConfig, RelabelConfig, process};
use strata_model::LabelsBuilder;

fn rule(action: &str, src: &[&str], regex: Option<&str>, target: Option<&str>, repl: Option<&str>) -> RawRelabelConfig {
    RawRelabelConfig {
        // Unset, not empty: `labelmap`/`labeldrop`/`labelkeep` refuse any source_labels.
        source_labels: (!src.is_empty()).then(|| src.iter().map(|s| (*s).to_owned()).collect()),
        separator: None,
        regex: regex.map(str::to_owned),
        modulus: (action == "hashmod").then_some(7),
        target_label: target.map(str::to_owned),
        replacement: repl.map(str::to_owned),
        action: Some(action.to_owned()),
    }
}

fn configs() -> &'static [RelabelConfig] {
    static CFGS: OnceLock<Vec<RelabelConfig>> = OnceLock::new();
    CFGS.get_or_init(|| {
        [
            rule("replace", &["__address__"], Some("([^:]+)(?::\\d+)?"), Some("instance"), Some("${1}:80")),
            rule("replace", &["a", "b"], Some("(.*);(.*)"), Some("${2}_$1"), Some("$1$2")),
            rule("lowercase", &["job"], None, Some("job_lower"), None),
            rule("uppercase", &["job", "a"], None, Some("job_upper"), None),
            rule("hashmod", &["instance"], None, Some("__tmp_hash"), None),
            rule("labelmap", &[], Some("__meta_(.+)"), None, Some("$1")),
            rule("labeldrop", &[], Some("__tmp.*"), None, None),
            rule("keep", &["keep"], Some("|yes|.+"), None, None),
            rule("drop", &["drop"], Some("x+"), None, None),
            rule("keepequal", &["a"], None, Some("a"), None),
            rule("dropequal", &["a"], None, Some("b"), None),
            rule("labelkeep", &[], Some("[a-z_]+"), None, None),
        ]
        .iter()
        .map(|r| r.validate().expect("valid fuzz relabel rule"))
        .collect()
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let mut b = LabelsBuilder::new();
    for line in text.lines() {
        let (name, value) = line.split_once('=').unwrap_or((line, ""));
        b.set(name, value);
    }
    let labels = b.build();
    let _ = process(&labels, configs());
});
