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
