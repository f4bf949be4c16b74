//! Turning discovered label sets into scrape targets, as Prometheus'
//! `PopulateLabels` does (Prometheus 3 semantics).
//!
//! Before relabeling every target gets `job`, `__scrape_interval__`,
//! `__scrape_timeout__`, `__metrics_path__`, `__scheme__` (unless set) and a
//! `__param_<name>` per URL parameter; that set is kept as its *discovered
//! labels*. After `relabel_configs` the target is either dropped (kept as a
//! dropped target) or active: `__address__` must be set, interval and timeout
//! are read back from their labels, `__meta_*` labels go, `instance`
//! defaults to `__address__`. Labels starting with `__` never reach series.
//! As in Prometheus 3, no default port is added to an address without one.

use std::collections::BTreeMap;
use std::time::Duration;

use strata_common::duration::{format_duration, parse_duration};
use strata_model::{Labels, LabelsBuilder};

use crate::config::ScrapeJob;
use crate::discovery::TargetGroup;
use crate::relabel;

/// `__address__`
pub const ADDRESS_LABEL: &str = "__address__";
/// `__scheme__`
pub const SCHEME_LABEL: &str = "__scheme__";
/// `__metrics_path__`
pub const METRICS_PATH_LABEL: &str = "__metrics_path__";
/// `__scrape_interval__`
pub const SCRAPE_INTERVAL_LABEL: &str = "__scrape_interval__";
/// `__scrape_timeout__`
pub const SCRAPE_TIMEOUT_LABEL: &str = "__scrape_timeout__";
/// Prefix of the labels that become URL parameters.
pub const PARAM_LABEL_PREFIX: &str = "__param_";
/// Prefix of discovery's meta labels.
pub const META_LABEL_PREFIX: &str = "__meta_";
/// Prefix of labels that never reach series.
pub const RESERVED_LABEL_PREFIX: &str = "__";

/// One target to scrape, after relabeling.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Target {
    /// `__address__`: `host:port` (or `host`).
    pub address: String,
    /// The labels every scraped series gets (no `__` labels).
    pub labels: Labels,
    /// Every label after relabeling, `__` ones included; identifies the target.
    pub all_labels: Labels,
    /// The labels before relabeling.
    pub discovered: Labels,
    /// The URL scraped.
    pub url: String,
    /// Time between scrapes.
    pub interval: Duration,
    /// Time a scrape may take.
    pub timeout: Duration,
}

/// A target `relabel_configs` dropped, shown by the status API.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DroppedTarget {
    /// The labels before relabeling.
    pub discovered: Labels,
}

/// What became of one discovered label set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Scrape it.
    Active(Target),
    /// Relabeling dropped it.
    Dropped(DroppedTarget),
}

impl Target {
    /// A target with the given labels (`__address__` and friends included),
    /// without relabeling; for jobs built in code.
    pub fn from_labels(job: &ScrapeJob, labels: &Labels) -> Result<Self, String> {
        match populate(job, labels, &[])? {
            Outcome::Active(t) => Ok(t),
            Outcome::Dropped(_) => Err("target dropped".into()),
        }
    }
}

/// The targets of one group: a target's labels win over the group's.
pub fn targets_from_group(job: &ScrapeJob, group: &TargetGroup) -> Vec<Result<Outcome, String>> {
    group
        .targets
        .iter()
        .map(|t| {
            let mut b = t.builder();
            for l in &group.labels {
                if t.get(&l.name).is_none() {
                    b.set(l.name.clone(), l.value.clone());
                }
            }
            populate(job, &b.build(), &job.relabel_configs)
        })
        .collect()
}

/// Prometheus' `PopulateLabels` followed by building the target.
pub fn populate(
    job: &ScrapeJob,
    labels: &Labels,
    relabel_configs: &[relabel::RelabelConfig],
) -> Result<Outcome, String> {
    let mut b = labels.builder();
    for (name, value) in [
        ("job", job.job_name.clone()),
        (SCRAPE_INTERVAL_LABEL, format_duration(job.interval)),
        (SCRAPE_TIMEOUT_LABEL, format_duration(job.timeout)),
        (METRICS_PATH_LABEL, job.metrics_path.clone()),
        (SCHEME_LABEL, job.scheme.clone()),
    ] {
        if labels.get(name).is_none() {
            b.set(name, value);
        }
    }
    for (k, vs) in &job.params {
        if let Some(v) = vs.first() {
            b.set(format!("{PARAM_LABEL_PREFIX}{k}"), v.clone());
        }
    }
    let discovered = b.clone().build();
    if !relabel::process_builder(&mut b, relabel_configs) {
        return Ok(Outcome::Dropped(DroppedTarget { discovered }));
    }
    let address = b.get(ADDRESS_LABEL).unwrap_or("").to_owned();
    if address.is_empty() {
        return Err("no address".into());
    }
    check_target_address(&address)?;
    let interval_s = b.get(SCRAPE_INTERVAL_LABEL).unwrap_or("").to_owned();
    let interval = parse_duration(&interval_s).map_err(|e| format!("error parsing scrape interval: {e}"))?;
    if interval.is_zero() {
        return Err("scrape interval cannot be 0".into());
    }
    let timeout_s = b.get(SCRAPE_TIMEOUT_LABEL).unwrap_or("").to_owned();
    let timeout = parse_duration(&timeout_s).map_err(|e| format!("error parsing scrape timeout: {e}"))?;
    if timeout.is_zero() {
        return Err("scrape timeout cannot be 0".into());
    }
    if timeout > interval {
        return Err(format!("scrape timeout cannot be greater than scrape interval ({timeout_s:?} > {interval_s:?})"));
    }
    b.retain(|l| !l.name.starts_with(META_LABEL_PREFIX));
    if b.get("instance").is_none() {
        b.set("instance", address.clone());
    }
    let all_labels = b.build();
    let url = target_url(job, &all_labels);
    let labels = public_labels(&all_labels);
    Ok(Outcome::Active(Target { address, labels, all_labels, discovered, url, interval, timeout }))
}

/// The labels that reach series: those not starting with `__`.
pub fn public_labels(all: &Labels) -> Labels {
    let v = all.iter().filter(|l| !l.name.starts_with(RESERVED_LABEL_PREFIX)).cloned().collect();
    Labels::from_sorted_unchecked(v)
}

/// Prometheus' `CheckTargetAddress`.
fn check_target_address(address: &str) -> Result<(), String> {
    if address.contains('/') {
        return Err(format!("{address:?} is not a valid hostname"));
    }
    Ok(())
}

/// Prometheus' `Target.URL()`: scheme, address and path from the labels; the
/// job's params with `__param_*` labels overriding their first value;
/// parameters sorted by name and encoded as Go's `url.Values.Encode`.
fn target_url(job: &ScrapeJob, labels: &Labels) -> String {
    let mut params: BTreeMap<String, Vec<String>> = job.params.clone();
    for l in labels {
        if let Some(k) = l.name.strip_prefix(PARAM_LABEL_PREFIX) {
            match params.get_mut(k) {
                Some(vs) if !vs.is_empty() => vs[0] = l.value.clone(),
                _ => {
                    params.insert(k.to_owned(), vec![l.value.clone()]);
                }
            }
        }
    }
    let scheme = labels.get(SCHEME_LABEL).unwrap_or("");
    let host = labels.get(ADDRESS_LABEL).unwrap_or("");
    let path = labels.get(METRICS_PATH_LABEL).unwrap_or("");
    let mut url = format!("{scheme}://{host}{}", escape_path(path));
    let mut sep = '?';
    for (k, vs) in &params {
        for v in vs {
            url.push(sep);
            url.push_str(&query_escape(k));
            url.push('=');
            url.push_str(&query_escape(v));
            sep = '&';
        }
    }
    url
}

/// Go's `url.QueryEscape`: space becomes `+`.
fn query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b' ' => out.push('+'),
            b if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') => out.push(char::from(b)),
            b => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Go's path escaping (`url.URL.EscapedPath` for a plain path).
fn escape_path(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric()
            || matches!(b, b'-' | b'_' | b'.' | b'~' | b'/' | b'$' | b'&' | b'+' | b',' | b';' | b'=' | b':' | b'@')
        {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Builds a label set from pairs, for tests and code-built jobs.
pub fn labels_of(pairs: &[(&str, &str)]) -> Labels {
    let mut b = LabelsBuilder::new();
    for (k, v) in pairs {
        b.set(*k, *v);
    }
    b.build()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::relabel::RawRelabelConfig;

    fn job(relabel: &str) -> ScrapeJob {
        let mut j = ScrapeJob::new("node", Duration::from_secs(15), Duration::from_secs(10));
        let raws: Vec<RawRelabelConfig> = serde_saphyr::from_str(relabel).expect("yaml");
        j.relabel_configs = raws.iter().map(|r| r.validate().expect("valid")).collect();
        j.params.insert("module".into(), vec!["http 2xx".into(), "b".into()]);
        j
    }

    #[test]
    fn populate_sets_defaults_and_strips_meta() {
        let j = job("[]");
        let got =
            populate(&j, &labels_of(&[("__address__", "h:9"), ("__meta_x", "1"), ("env", "p")]), &j.relabel_configs);
        let Ok(Outcome::Active(t)) = got else { panic!("{got:?}") };
        assert_eq!(t.labels, labels_of(&[("env", "p"), ("instance", "h:9"), ("job", "node")]));
        assert_eq!(t.discovered.get("__scrape_interval__"), Some("15s"));
        assert_eq!(t.discovered.get("__param_module"), Some("http 2xx"));
        assert_eq!(t.discovered.get("__meta_x"), Some("1"));
        assert_eq!(t.all_labels.get("__meta_x"), None);
        assert_eq!(t.url, "http://h:9/metrics?module=http+2xx&module=b");
        assert_eq!(t.interval, Duration::from_secs(15));
    }

    #[test]
    fn relabeling_drives_url_interval_and_drops() {
        let j = job("[{source_labels: [__meta_port], regex: '(.+)', target_label: __address__, replacement: 'x:$1'},
              {target_label: __scheme__, replacement: https},
              {target_label: __metrics_path__, replacement: /p},
              {target_label: __param_module, replacement: icmp},
              {target_label: __scrape_interval__, replacement: 30s},
              {source_labels: [__meta_drop], regex: yes, action: drop}]");
        let Ok(Outcome::Active(t)) =
            populate(&j, &labels_of(&[("__address__", "h:9"), ("__meta_port", "7")]), &j.relabel_configs)
        else {
            panic!("active")
        };
        assert_eq!(t.url, "https://x:7/p?module=icmp&module=b");
        assert_eq!(t.interval, Duration::from_secs(30));
        assert_eq!(t.labels.get("instance"), Some("x:7"));
        let got = populate(&j, &labels_of(&[("__address__", "h:9"), ("__meta_drop", "yes")]), &j.relabel_configs);
        let Ok(Outcome::Dropped(d)) = got else { panic!("{got:?}") };
        assert_eq!(d.discovered.get("__meta_drop"), Some("yes"));
    }

    #[test]
    fn invalid_results_are_errors() {
        let j = job("[{target_label: __scrape_timeout__, replacement: 1m}]");
        let e =
            populate(&j, &labels_of(&[("__address__", "h:9")]), &j.relabel_configs).expect_err("timeout > interval");
        assert!(e.contains("greater than scrape interval"), "{e}");
        let j = job("[{target_label: __address__, replacement: ''}]");
        assert_eq!(populate(&j, &labels_of(&[("__address__", "h:9")]), &j.relabel_configs), Err("no address".into()));
        let j = job("[]");
        assert!(populate(&j, &labels_of(&[("__address__", "h/x")]), &[]).is_err());
    }

    proptest::proptest! {
        /// Any discovered labels and rules end in a target, a dropped target or an error; never a panic.
        #[test]
        fn populate_never_panics(
            pairs in proptest::collection::vec(
                (proptest::sample::select(vec!["__address__", "__scheme__", "__metrics_path__", "__scrape_interval__", "__scrape_timeout__", "__param_x", "__meta_a", "instance", "job", "a"]),
                 "[a-z0-9:/.?&= ]{0,8}"),
                0..8,
            ),
            target in proptest::sample::select(vec!["__address__", "__scrape_interval__", "__scrape_timeout__", "__param_y", "instance", "__metrics_path__"]),
            replacement in "[a-z0-9:/.$]{0,6}",
        ) {
            let mut j = ScrapeJob::new("j", Duration::from_secs(15), Duration::from_secs(10));
            let rule = RawRelabelConfig { target_label: Some(target.into()), replacement: Some(replacement), ..Default::default() };
            if let Ok(r) = rule.validate() {
                j.relabel_configs.push(r);
            }
            let mut b = LabelsBuilder::new();
            for (k, v) in pairs {
                b.set(k, v);
            }
            if let Ok(Outcome::Active(t)) = populate(&j, &b.build(), &j.relabel_configs) {
                proptest::prop_assert!(!t.address.is_empty() && t.timeout <= t.interval);
                proptest::prop_assert!(t.labels.iter().all(|l| !l.name.starts_with("__")));
                proptest::prop_assert!(t.labels.get("instance").is_some());
            }
        }
    }
}
