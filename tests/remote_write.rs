//! End to end: a real Prometheus 2.42 scrapes a real node exporter and
//! remote-writes to `strata standalone`; both answer the same queries.
//! Malformed remote-write bodies are refused with 4xx and Strata keeps serving.

mod common;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Result;
use common::{Api, Proc, eventually, free_port, start_prometheus, start_strata_standalone};

/// `{label set → value}` of an instant query at `time`.
async fn vector_at(api: &Api, q: &str, time: f64) -> Option<BTreeMap<String, String>> {
    let (status, body) = api.get("/api/v1/query", &[("query", q), ("time", &format!("{time:.3}"))]).await.ok()?;
    if status != 200 {
        return None;
    }
    let result = body["data"]["result"].as_array()?;
    Some(
        result
            .iter()
            .map(|s| (s["metric"].to_string(), s["value"][1].as_str().unwrap_or_default().to_owned()))
            .collect(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_remote_write_gives_the_same_answers() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let ne_port = free_port();
    let _ne = Proc::spawn(
        "prometheus-node-exporter",
        Command::new("prometheus-node-exporter").arg(format!("--web.listen-address=127.0.0.1:{ne_port}")),
        &dir.path().join("node-exporter.log"),
    )?;

    let strata_port = free_port();
    let empty = dir.path().join("strata.yml");
    std::fs::write(&empty, "")?;
    let _strata =
        start_strata_standalone(&empty, &dir.path().join("strata-data"), strata_port, &dir.path().join("strata.log"))?;
    let strata = Api::new(strata_port);
    eventually("strata ready", Duration::from_secs(30), || async { strata.ready().await.then_some(()) }).await?;

    let prom_port = free_port();
    let prom_config = dir.path().join("prometheus.yml");
    std::fs::write(
        &prom_config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: node\n    static_configs:\n      - targets: ['127.0.0.1:{ne_port}']\nremote_write:\n  - url: http://127.0.0.1:{strata_port}/api/v1/write\n    queue_config:\n      batch_send_deadline: 500ms\n"
        ),
    )?;
    let _prom =
        start_prometheus(&prom_config, &dir.path().join("prom-data"), prom_port, &dir.path().join("prometheus.log"))?;
    let prom = Api::new(prom_port);
    eventually("prometheus ready", Duration::from_secs(60), || async { prom.ready().await.then_some(()) }).await?;

    // Let a few scrapes happen and reach Strata, then compare at a time in the past.
    eventually("node samples in strata", Duration::from_secs(60), || async {
        strata.scalar_of(r#"count(up{job="node"} == 1)"#).await
    })
    .await?;
    let queries = [
        r#"count by (__name__) ({job="node"})"#,
        "count(node_cpu_seconds_total)",
        "sum by (mode) (node_cpu_seconds_total)",
        r#"up{job="node"}"#,
        "node_memory_MemTotal_bytes",
    ];
    eventually("the same answers from Strata and Prometheus", Duration::from_secs(60), || async {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).ok()?.as_secs_f64();
        let t = now - 3.0;
        for q in queries {
            let a = vector_at(&prom, q, t).await?;
            let b = vector_at(&strata, q, t).await?;
            if a.is_empty() || a != b {
                return None;
            }
        }
        Some(())
    })
    .await
}

#[tokio::test]
async fn malformed_remote_write_is_refused_and_strata_keeps_serving() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let port = free_port();
    let empty = dir.path().join("strata.yml");
    std::fs::write(&empty, "")?;
    let _strata = start_strata_standalone(&empty, &dir.path().join("data"), port, &dir.path().join("strata.log"))?;
    let api = Api::new(port);
    eventually("strata ready", Duration::from_secs(30), || async { api.ready().await.then_some(()) }).await?;
    let url = format!("{}/api/v1/write", api.base);
    let send = |ct: &'static str, body: Vec<u8>| {
        let (http, url) = (api.http.clone(), url.clone());
        async move {
            let r = http
                .post(url)
                .header("Content-Type", ct)
                .header("Content-Encoding", "snappy")
                .body(body)
                .send()
                .await?;
            Ok::<_, anyhow::Error>((r.status().as_u16(), r.text().await?))
        }
    };
    // A valid snappy frame whose content is not a WriteRequest.
    let not_protobuf = vec![0x0b, 0x28, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff];
    for (name, ct, body, want) in [
        ("not snappy", "application/x-protobuf", b"hello".to_vec(), 400),
        ("truncated snappy", "application/x-protobuf", vec![0x80, 0x80, 0x01, 0x00], 400),
        ("not protobuf", "application/x-protobuf", not_protobuf, 400),
        ("unknown content type", "text/plain", b"up 1".to_vec(), 415),
    ] {
        let (status, text) = send(ct, body).await?;
        assert_eq!(status, want, "{name}: {text}");
        assert!(!text.is_empty(), "{name}: the refusal carries a reason");
    }
    assert!(api.ready().await, "still serving");
    let metrics = api.http.get(format!("{}/metrics", api.base)).send().await?.text().await?;
    assert!(metrics.contains("strata_remote_write_refused_requests_total 4"), "{metrics}");
    Ok(())
}

/// A metric's value on a process' own `/metrics`.
async fn own_metric(api: &Api, name: &str) -> Option<f64> {
    let text = api.http.get(format!("{}/metrics", api.base)).send().await.ok()?.text().await.ok()?;
    text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ha_pair_is_deduplicated_and_fails_over() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let strata_port = free_port();
    let empty = dir.path().join("strata.yml");
    std::fs::write(&empty, "")?;
    let _strata = Proc::spawn(
        "strata",
        Command::new(common::strata_bin()).args([
            "standalone",
            &format!("--config.file={}", empty.display()),
            &format!("--storage.path={}", dir.path().join("strata-data").display()),
            &format!("--web.listen-address=127.0.0.1:{strata_port}"),
            "--ha-tracker.enable",
            "--ha-tracker.update-timeout=1s",
            "--ha-tracker.failover-timeout=5s",
        ]),
        &dir.path().join("strata.log"),
    )?;
    let strata = Api::new(strata_port);
    eventually("strata ready", Duration::from_secs(30), || async { strata.ready().await.then_some(()) }).await?;

    // Two Prometheus replicas scrape the same target (Strata itself) and
    // remote-write with the same cluster and different replica labels.
    let start_replica = |name: &'static str| {
        let prom_port = free_port();
        let config = dir.path().join(format!("{name}.yml"));
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  external_labels:\n    cluster: c1\n    __replica__: {name}\nscrape_configs:\n  - job_name: strata\n    static_configs:\n      - targets: ['127.0.0.1:{strata_port}']\nremote_write:\n  - url: http://127.0.0.1:{strata_port}/api/v1/write\n    queue_config:\n      batch_send_deadline: 200ms\n"
            ),
        )?;
        let proc = start_prometheus(
            &config,
            &dir.path().join(format!("{name}-data")),
            prom_port,
            &dir.path().join(format!("{name}.log")),
        )?;
        Ok::<_, anyhow::Error>((proc, Api::new(prom_port)))
    };
    let (mut p1, p1_api) = start_replica("p1")?;
    eventually("p1 ready", Duration::from_secs(60), || async { p1_api.ready().await.then_some(()) }).await?;
    eventually("p1's samples in strata", Duration::from_secs(60), || async {
        strata.scalar_of(r#"count(up{job="strata",cluster="c1"})"#).await
    })
    .await?;
    // p1 sent first: it is elected. p2 joins and is deduplicated.
    let (_p2, p2_api) = start_replica("p2")?;
    eventually("p2 ready", Duration::from_secs(60), || async { p2_api.ready().await.then_some(()) }).await?;
    eventually("p2's samples are deduplicated", Duration::from_secs(60), || async {
        (own_metric(&strata, r#"strata_ha_deduplicated_samples_total{tenant="anonymous",cluster="c1"}"#).await? > 100.0)
            .then_some(())
    })
    .await?;
    // One copy: one series without the replica label, one sample per scrape.
    let series = strata.query(r#"up{job="strata"}"#).await?;
    assert_eq!(series.len(), 1, "{series:?}");
    assert!(series[0]["metric"].get("__replica__").is_none(), "{series:?}");
    // Over 20 s ending 3 s ago (samples still in flight do not count), once
    // 20 s of history exist: about 20 samples, not 40.
    let q = r#"count_over_time(up{job="strata"}[20s])"#;
    let per_20s = eventually("20 s of samples", Duration::from_secs(60), || async {
        let at = SystemTime::now().duration_since(UNIX_EPOCH).ok()?.as_secs_f64() - 3.0;
        let counted = vector_at(&strata, q, at).await?;
        let n: f64 = counted.values().next()?.parse().ok()?;
        (n >= 15.0).then_some(n)
    })
    .await?;
    assert!(per_20s <= 22.0, "one sample per second, not two: {per_20s}");

    // The leader dies: p2 takes over after the failover timeout (5 s).
    p1.kill();
    let killed = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs_f64();
    let took_over = eventually("p2 takes over", Duration::from_secs(60), || async {
        let t = strata.scalar_of(r#"timestamp(up{job="strata"})"#).await?;
        (t > killed + 1.0).then_some(t)
    })
    .await?;
    let failovers = own_metric(&strata, "strata_ha_failovers_total").await;
    eprintln!("p2 took over {:.1} s after p1 was killed", took_over - killed);
    assert_eq!(failovers, Some(1.0));
    assert!(took_over - killed < 20.0, "failover within the timeout plus a few scrapes");
    let series = strata.query(r#"up{job="strata"}"#).await?;
    assert_eq!(series.len(), 1, "still one series after the failover: {series:?}");
    Ok(())
}
