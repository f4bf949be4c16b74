//! `file_sd_configs`: target groups read from YAML or JSON files.
//!
//! As in Prometheus: each file holds a list of `{targets: [...], labels: {...}}`
//! groups; paths may have a glob in their last component; every target gets
//! `__meta_filepath`; group `i` of file `f` has source `f:i`. Files are
//! watched by polling their modification times every [`POLL_INTERVAL`] and
//! re-read in full every `refresh_interval`. A file that fails to parse keeps
//! its previous groups; a file that disappears removes its groups.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use prometheus_client::metrics::counter::Counter;
use serde::Deserialize;
use strata_common::PromDuration;
use strata_model::labels::is_valid_label_name;
use strata_model::{BoxFuture, Labels, LabelsBuilder};
use tokio::sync::watch;

use super::{Discoverer, GroupSender, TargetGroup};

/// How often file modification times are checked.
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);
/// Prometheus' default `refresh_interval`.
pub const DEFAULT_REFRESH_INTERVAL: Duration = Duration::from_secs(300);
/// The meta label naming the file a target came from.
pub const META_FILEPATH: &str = "__meta_filepath";

/// One `file_sd_configs` entry as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFileSdConfig {
    /// File paths; the last component may be a glob.
    #[serde(default)]
    pub files: Vec<serde_saphyr::Spanned<String>>,
    /// Full re-read period (default 5m).
    pub refresh_interval: Option<PromDuration>,
}

/// A validated `file_sd_configs` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSdConfig {
    /// File paths or globs.
    pub files: Vec<String>,
    /// Full re-read period.
    pub refresh_interval: Duration,
}

/// Prometheus' `patFileSDName`: `^[^*]*(\*[^/]*)?\.(json|yml|yaml|JSON|YML|YAML)$`.
pub fn is_valid_file_sd_name(name: &str) -> bool {
    let Some((stem, ext)) = name.rsplit_once('.') else { return false };
    if !matches!(ext, "json" | "yml" | "yaml" | "JSON" | "YML" | "YAML") {
        return false;
    }
    match stem.split_once('*') {
        None => true,
        Some((_, after)) => !after.contains('/'),
    }
}

/// The groups of one file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGroup {
    #[serde(default)]
    targets: Vec<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

/// Parses a target-group file; the format follows the extension.
pub fn parse_file(path: &str, text: &str) -> Result<Vec<TargetGroup>, String> {
    let raw: Vec<RawGroup> = if path.to_ascii_lowercase().ends_with(".json") {
        serde_json::from_str(text).map_err(|e| e.to_string())?
    } else if text.trim().is_empty() {
        Vec::new()
    } else {
        serde_saphyr::from_str::<Option<Vec<RawGroup>>>(text).map_err(|e| e.to_string())?.unwrap_or_default()
    };
    let mut groups = Vec::with_capacity(raw.len());
    for (i, g) in raw.into_iter().enumerate() {
        let mut labels = LabelsBuilder::new();
        for (k, v) in g.labels {
            if !is_valid_label_name(&k) {
                return Err(format!("{k:?} is not a valid label name"));
            }
            labels.set(k, v);
        }
        labels.set(META_FILEPATH, path);
        let mut targets = Vec::with_capacity(g.targets.len());
        for t in g.targets {
            targets.push(Labels::from_pairs([("__address__", t)]).map_err(|e| e.to_string())?);
        }
        groups.push(TargetGroup { source: format!("{path}:{i}"), targets, labels: labels.build() });
    }
    Ok(groups)
}

/// Go's `filepath.Match` for one path component: `*`, `?`, `[...]`, `[^...]`, `\x`.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    glob_at(&p, &n)
}

fn glob_at(p: &[char], n: &[char]) -> bool {
    match p.first() {
        None => n.is_empty(),
        Some('*') => (0..=n.len()).any(|i| glob_at(&p[1..], &n[i..])),
        Some('?') => !n.is_empty() && glob_at(&p[1..], &n[1..]),
        Some('[') => {
            let Some(&c) = n.first() else { return false };
            let mut i = 1;
            let negate = p.get(1) == Some(&'^');
            if negate {
                i += 1;
            }
            let mut matched = false;
            let mut first = true;
            while i < p.len() && (first || p[i] != ']') {
                first = false;
                let lo = if p[i] == '\\' && i + 1 < p.len() {
                    i += 1;
                    p[i]
                } else {
                    p[i]
                };
                i += 1;
                let hi = if i + 1 < p.len() && p[i] == '-' && p[i + 1] != ']' {
                    i += 2;
                    p[i - 1]
                } else {
                    lo
                };
                if lo <= c && c <= hi {
                    matched = true;
                }
            }
            if i >= p.len() {
                return false; // unterminated class: Go reports ErrBadPattern
            }
            matched != negate && glob_at(&p[i + 1..], &n[1..])
        }
        Some('\\') if p.len() > 1 => n.first() == Some(&p[1]) && glob_at(&p[2..], &n[1..]),
        Some(&c) => n.first() == Some(&c) && glob_at(&p[1..], &n[1..]),
    }
}

/// The files a path or glob names right now, sorted.
pub fn expand_glob(pattern: &str) -> Vec<PathBuf> {
    let path = Path::new(pattern);
    let Some(last) = path.file_name().and_then(|n| n.to_str()) else { return Vec::new() };
    if !last.contains(['*', '?', '[']) {
        return if path.is_file() { vec![path.to_path_buf()] } else { Vec::new() };
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let Ok(entries) = std::fs::read_dir(&dir) else { return Vec::new() };
    let mut out: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_str().is_some_and(|n| glob_match(last, n)))
        .map(|e| path.parent().map_or_else(|| PathBuf::from(e.file_name()), |p| p.join(e.file_name())))
        .filter(|p| p.is_file())
        .collect();
    out.sort();
    out
}

/// Watches the files of one `file_sd_configs` entry.
#[derive(Debug)]
pub struct FileDiscoverer {
    config: FileSdConfig,
    poll: Duration,
    /// Per file: modification time and number of groups last sent.
    seen: HashMap<PathBuf, (Option<SystemTime>, usize)>,
    /// Files that could not be read or parsed.
    read_errors: Counter,
}

impl FileDiscoverer {
    /// A discoverer polling every [`POLL_INTERVAL`].
    pub fn new(config: FileSdConfig) -> Self {
        Self::with_poll_interval(config, POLL_INTERVAL)
    }

    /// A discoverer polling every `poll` (tests use a short one).
    pub fn with_poll_interval(config: FileSdConfig, poll: Duration) -> Self {
        Self { config, poll, seen: HashMap::new(), read_errors: Counter::default() }
    }

    /// Counts unreadable or malformed files in `counter`.
    pub fn with_read_errors(mut self, counter: Counter) -> Self {
        self.read_errors = counter;
        self
    }

    /// One pass: the groups that changed since the last pass (all of them when `full`).
    pub fn refresh(&mut self, full: bool) -> Vec<TargetGroup> {
        let mut now: Vec<PathBuf> = self.config.files.iter().flat_map(|f| expand_glob(f)).collect();
        now.sort();
        now.dedup();
        let mut out = Vec::new();
        for path in &now {
            let mtime = std::fs::metadata(path).and_then(|m| m.modified()).ok();
            let prev = self.seen.get(path).copied();
            if !full && prev.is_some_and(|(m, _)| m == mtime && m.is_some()) {
                continue;
            }
            let name = path.display().to_string();
            let parsed = std::fs::read_to_string(path).map_err(|e| e.to_string()).and_then(|t| parse_file(&name, &t));
            match parsed {
                Ok(groups) => {
                    let n = groups.len();
                    out.extend(groups);
                    // Groups the file no longer has are sent empty, removing them.
                    for i in n..prev.map_or(0, |(_, c)| c) {
                        out.push(TargetGroup { source: format!("{name}:{i}"), ..Default::default() });
                    }
                    self.seen.insert(path.clone(), (mtime, n));
                }
                Err(e) => {
                    self.read_errors.inc();
                    tracing::error!(file = %name, error = %e, "file_sd: keeping the file's previous targets");
                    let count = prev.map_or(0, |(_, c)| c);
                    self.seen.insert(path.clone(), (mtime, count));
                }
            }
        }
        let gone: Vec<PathBuf> = self.seen.keys().filter(|p| !now.contains(p)).cloned().collect();
        for path in gone {
            if let Some((_, count)) = self.seen.remove(&path) {
                let name = path.display().to_string();
                for i in 0..count {
                    out.push(TargetGroup { source: format!("{name}:{i}"), ..Default::default() });
                }
            }
        }
        out
    }
}

impl Discoverer for FileDiscoverer {
    fn run(mut self: Box<Self>, out: GroupSender, mut shutdown: watch::Receiver<bool>) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            let first = self.refresh(true);
            if !out.send(first).await {
                return;
            }
            let mut last_full = tokio::time::Instant::now();
            loop {
                tokio::select! {
                    () = tokio::time::sleep(self.poll) => {}
                    _ = shutdown.changed() => return,
                }
                let full = last_full.elapsed() >= self.config.refresh_interval;
                if full {
                    last_full = tokio::time::Instant::now();
                }
                let changed = self.refresh(full);
                if !changed.is_empty() && !out.send(changed).await {
                    return;
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_follow_prometheus_pattern() {
        for ok in ["a.yml", "/x/y/*.json", "t_*.yaml", "a.JSON"] {
            assert!(is_valid_file_sd_name(ok), "{ok}");
        }
        for bad in ["a.txt", "a", "/x/*/y.json"] {
            assert!(!is_valid_file_sd_name(bad), "{bad}");
        }
    }

    #[test]
    fn glob_is_go_filepath_match() {
        for (p, n, want) in [
            ("*.json", "a.json", true),
            ("*.json", "a.yml", false),
            ("t?.yml", "t1.yml", true),
            ("t[0-9].yml", "t5.yml", true),
            ("t[^0-9].yml", "t5.yml", false),
            ("t[!0-9].yml", "t!.yml", true),
            ("a\\*", "a*", true),
            ("[", "[", false),
        ] {
            assert_eq!(glob_match(p, n), want, "{p} {n}");
        }
    }

    #[test]
    fn yaml_and_json_groups_get_filepath_and_sources() {
        let g = parse_file("/d/a.yml", "- targets: ['h:1', 'h:2']\n  labels: {env: prod}\n- targets: ['h:3']\n")
            .expect("valid");
        assert_eq!(g.len(), 2);
        assert_eq!(g[0].source, "/d/a.yml:0");
        assert_eq!(g[1].source, "/d/a.yml:1");
        assert_eq!(g[0].targets[1].get("__address__"), Some("h:2"));
        assert_eq!(g[0].labels.get("env"), Some("prod"));
        assert_eq!(g[1].labels.get(META_FILEPATH), Some("/d/a.yml"));
        let j = parse_file("/d/b.json", r#"[{"targets":["x:1"],"labels":{"a":"b"}}]"#).expect("valid");
        assert_eq!(j[0].labels.get("a"), Some("b"));
        assert!(parse_file("/d/b.json", r#"[{"targets":["x:1"],"labels":{"a-b":"c"}}]"#).is_err());
        assert!(parse_file("/d/b.yml", "").expect("empty").is_empty());
        assert!(parse_file("/d/b.yml", "{").is_err());
    }

    #[test]
    fn refresh_follows_changes_and_keeps_groups_of_broken_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = dir.path().join("t_a.yml");
        std::fs::write(&a, "- targets: ['h:1']\n- targets: ['h:2']\n").expect("write");
        let mut d = FileDiscoverer::new(FileSdConfig {
            files: vec![dir.path().join("t_*.yml").display().to_string()],
            refresh_interval: DEFAULT_REFRESH_INTERVAL,
        });
        let first = d.refresh(true);
        assert_eq!(first.len(), 2);
        assert!(d.refresh(false).is_empty(), "nothing changed");

        // Broken: nothing sent, previous groups stay.
        std::fs::write(&a, "- targets: [").expect("write");
        bump_mtime(&a, 1);
        assert!(d.refresh(false).is_empty());
        assert_eq!(d.read_errors.get(), 1);

        // One group fewer: the second is sent empty.
        std::fs::write(&a, "- targets: ['h:9']\n").expect("write");
        bump_mtime(&a, 2);
        let g = d.refresh(false);
        assert_eq!(g.len(), 2, "{g:?}");
        assert_eq!(g[0].targets.len(), 1);
        assert!(g[1].targets.is_empty() && g[1].source.ends_with(":1"));

        // A new file matching the glob, and the old file removed.
        std::fs::write(dir.path().join("t_b.yml"), "- targets: ['h:5']\n").expect("write");
        std::fs::remove_file(&a).expect("rm");
        let g = d.refresh(false);
        assert_eq!(g.len(), 2, "{g:?}");
        assert!(g.iter().any(|g| g.source.ends_with("t_b.yml:0") && g.targets.len() == 1));
        assert!(g.iter().any(|g| g.source.ends_with("t_a.yml:0") && g.targets.is_empty()));
    }

    proptest::proptest! {
        /// Whatever a file holds, parsing ends in groups or an error.
        #[test]
        fn parse_file_never_panics(text in "\\PC{0,200}", json in proptest::bool::ANY) {
            let name = if json { "/d/x.json" } else { "/d/x.yml" };
            if let Ok(groups) = parse_file(name, &text) {
                proptest::prop_assert!(groups.iter().all(|g| g.labels.get(META_FILEPATH) == Some(name)));
            }
        }

        /// Go's `filepath.Match` never panics, whatever the pattern.
        #[test]
        fn glob_never_panics(p in "[a-c*?\\[\\]^!\\\\-]{0,12}", n in "[a-c*?\\[\\]-]{0,12}") {
            let _ = glob_match(&p, &n);
        }
    }

    /// Moves a file's mtime forward so the change is seen even within one clock tick.
    fn bump_mtime(path: &Path, secs: u64) {
        let t = SystemTime::now() + Duration::from_secs(secs);
        let f = std::fs::File::options().write(true).open(path).expect("open");
        f.set_modified(t).expect("set mtime");
    }
}
