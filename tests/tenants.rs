//! End to end, `strata standalone`: tenants (`X-Scope-OrgID`) never see one
//! another's data on any read path (query, series, labels, label values,
//! export), and per-tenant limits refuse remote writes with 429, counted,
//! while other tenants keep writing.

mod common;

use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Result;
use common::{Api, Proc, eventually, free_port, strata_bin};
use prost::Message;
use serde_json::Value;
use strata_proto::remote_write::v1;

/// A snappy remote-write 1.0 body with one sample per series, each series
/// `name{i="0".."n"}` plus `extra` labels.
fn body(name: &str, n: usize, extra: &[(&str, &str)], t_ms: i64) -> Vec<u8> {
    let timeseries = (0..n)
        .map(|i| {
            let mut labels = vec![
                v1::Label { name: "__name__".into(), value: name.into() },
                v1::Label { name: "i".into(), value: i.to_string() },
            ];
            labels.extend(extra.iter().map(|(k, v)| v1::Label { name: (*k).into(), value: (*v).into() }));
            labels.sort_by(|a, b| a.name.cmp(&b.name));
            v1::TimeSeries {
                labels,
                samples: vec![v1::Sample { value: i as f64, timestamp: t_ms }],
                ..v1::TimeSeries::default()
            }
        })
        .collect();
    let raw = v1::WriteRequest { timeseries, metadata: vec![] }.encode_to_vec();
    snap::raw::Encoder::new().compress_vec(&raw).unwrap_or_default()
}

struct Tenant<'a> {
    api: &'a Api,
    org: &'a str,
}

impl Tenant<'_> {
    async fn write(&self, body: Vec<u8>) -> Result<(u16, String)> {
        let r = self
            .api
            .http
            .post(format!("{}/api/v1/write", self.api.base))
            .header("Content-Type", "application/x-protobuf")
            .header("Content-Encoding", "snappy")
            .header("X-Scope-OrgID", self.org)
            .body(body)
            .send()
            .await?;
        Ok((r.status().as_u16(), r.text().await?))
    }

    async fn get(&self, path: &str, params: &[(&str, &str)]) -> Result<Value> {
        let qs = form_urlencoded::Serializer::new(String::new()).extend_pairs(params).finish();
        let r =
            self.api.http.get(format!("{}{path}?{qs}", self.api.base)).header("X-Scope-OrgID", self.org).send().await?;
        anyhow::ensure!(r.status().is_success(), "{path}: {}", r.status());
        Ok(serde_json::from_slice(&r.bytes().await?)?)
    }

    /// The `__name__`s this tenant sees through every read path, one list per path.
    async fn visible_names(&self) -> Result<Vec<Vec<String>>> {
        let names = |v: &Value, f: &dyn Fn(&Value) -> Option<String>| -> Vec<String> {
            let mut out: Vec<String> =
                v["data"]["result"].as_array().or(v["data"].as_array()).into_iter().flatten().filter_map(f).collect();
            out.sort();
            out.dedup();
            out
        };
        let query = self.get("/api/v1/query", &[("query", "{__name__=~\"tenant_.+\"}")]).await?;
        let series = self.get("/api/v1/series", &[("match[]", "{__name__=~\"tenant_.+\"}")]).await?;
        let values = self.get("/api/v1/label/__name__/values", &[]).await?;
        let labels = self.get("/api/v1/labels", &[]).await?;
        let export = {
            let r = self
                .api
                .http
                .get(format!("{}/api/v1/export?match[]={{__name__=~\"tenant_.%2B\"}}", self.api.base))
                .header("X-Scope-OrgID", self.org)
                .send()
                .await?;
            let text = r.text().await?;
            let mut n: Vec<String> = text
                .lines()
                .filter(|l| !l.starts_with('#') && !l.is_empty())
                .filter_map(|l| l.split(['{', ' ']).next().map(str::to_owned))
                .collect();
            n.sort();
            n.dedup();
            n
        };
        Ok(vec![
            names(&query, &|s| s["metric"]["__name__"].as_str().map(str::to_owned)),
            names(&series, &|s| s["__name__"].as_str().map(str::to_owned)),
            names(&values, &|s| s.as_str().filter(|n| n.starts_with("tenant_")).map(str::to_owned)),
            names(&labels, &|s| s.as_str().filter(|n| *n == "only_in_b").map(|_| "tenant_b".to_owned())),
            export,
        ])
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_are_isolated_and_limited() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let overrides = dir.path().join("overrides.yml");
    std::fs::write(&overrides, "overrides:\n  small:\n    max_active_series: 3\n  slow:\n    ingestion_rate: 10\n")?;
    let config = dir.path().join("strata.yml");
    std::fs::write(&config, "")?;
    let port = free_port();
    let _strata = Proc::spawn(
        "strata",
        Command::new(strata_bin()).args([
            "standalone",
            &format!("--config.file={}", config.display()),
            &format!("--storage.path={}", dir.path().join("data").display()),
            &format!("--web.listen-address=127.0.0.1:{port}"),
            &format!("--limits.overrides-file={}", overrides.display()),
        ]),
        &dir.path().join("strata.log"),
    )?;
    let api = Api::new(port);
    eventually("strata ready", Duration::from_secs(30), || async { api.ready().await.then_some(()) }).await?;
    let now = i64::try_from(SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis())?;

    // Isolation: a and b write different metrics; each sees only its own on every path.
    let (a, b) = (Tenant { api: &api, org: "a" }, Tenant { api: &api, org: "b" });
    assert_eq!(a.write(body("tenant_a", 2, &[], now)).await?.0, 204);
    assert_eq!(b.write(body("tenant_b", 2, &[("only_in_b", "x")], now)).await?.0, 204);
    let anonymous = Tenant { api: &api, org: "anonymous" };
    for (t, own) in [(&a, "tenant_a"), (&b, "tenant_b")] {
        let seen = t.visible_names().await?;
        for (path, names) in ["query", "series", "label values", "labels", "export"].iter().zip(&seen) {
            if *path == "labels" && own == "tenant_a" {
                assert!(names.is_empty(), "tenant a sees b's label name: {names:?}");
                continue;
            }
            assert_eq!(names, &vec![own.to_owned()], "{path} for tenant {}", t.org);
        }
    }
    assert!(anonymous.visible_names().await?.iter().all(Vec::is_empty), "the default tenant sees neither");

    // Active series: 3 for "small"; a fourth series is refused, the old ones keep flowing.
    let small = Tenant { api: &api, org: "small" };
    assert_eq!(small.write(body("tenant_small", 3, &[], now)).await?.0, 204);
    let (status, text) = small.write(body("tenant_small", 4, &[], now + 1000)).await?;
    assert_eq!(status, 429, "{text}");
    assert!(text.contains("active series limit of 3"), "{text}");
    assert_eq!(small.write(body("tenant_small", 3, &[], now + 2000)).await?.0, 204);
    // Other tenants are not limited by small's limit.
    assert_eq!(a.write(body("tenant_a", 50, &[], now + 1000)).await?.0, 204);

    // Rate: 10 samples/s for "slow", burst 10.
    let slow = Tenant { api: &api, org: "slow" };
    assert_eq!(slow.write(body("tenant_slow", 8, &[], now)).await?.0, 204);
    let (status, text) = slow.write(body("tenant_slow", 8, &[], now + 1)).await?;
    assert_eq!(status, 429, "{text}");
    assert!(text.contains("ingestion rate limit of 10"), "{text}");

    // Label names per series: 30 by default (Mimir's); 31 is refused.
    let many: Vec<(String, String)> = (0..29).map(|i| (format!("l{i:02}"), "v".to_owned())).collect();
    let many: Vec<(&str, &str)> = many.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let (status, text) = a.write(body("tenant_a_wide", 1, &many, now)).await?;
    assert_eq!(status, 429, "{text}");
    assert!(text.contains("max_label_names_per_series"), "{text}");

    // Refusals are counted by tenant and reason; the refused samples are not stored.
    let metrics = api.http.get(format!("{}/metrics", api.base)).send().await?.text().await?;
    for want in [
        "strata_limits_refused_samples_total{tenant=\"small\",reason=\"max_active_series\"} 4",
        "strata_limits_refused_samples_total{tenant=\"slow\",reason=\"ingestion_rate\"} 8",
        "strata_limits_refused_samples_total{tenant=\"a\",reason=\"max_label_names_per_series\"} 1",
    ] {
        assert!(metrics.contains(want), "missing {want} in\n{metrics}");
    }
    let count = small.get("/api/v1/query", &[("query", "count(tenant_small)")]).await?;
    assert_eq!(count["data"]["result"][0]["value"][1], "3", "{count}");
    Ok(())
}
