//! End-to-end tests of the ruler: the real `strata` binary, a real
//! Alertmanager 0.25 (`prometheus-alertmanager`), Prometheus 2.42 as the
//! reference, node exporter, and targets served by the test.

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use common::{Api, PageServer, Proc, eventually, free_port, start_prometheus, strata_bin};
use serde_json::Value;

/// Starts `strata standalone` with extra flags.
fn start_strata(config: &Path, data: &Path, port: u16, log: &Path, extra: &[&str]) -> Result<Proc> {
    let mut cmd = Command::new(strata_bin());
    cmd.args([
        "standalone",
        &format!("--config.file={}", config.display()),
        &format!("--storage.path={}", data.display()),
        &format!("--web.listen-address=127.0.0.1:{port}"),
    ]);
    cmd.args(extra);
    Proc::spawn("strata", &mut cmd, log)
}

/// Starts Alertmanager 0.25 with a route to a receiver that sends nothing.
fn start_alertmanager(dir: &Path, port: u16) -> Result<Proc> {
    let config = dir.join("alertmanager.yml");
    std::fs::write(
        &config,
        "route:\n  receiver: 'null'\n  group_wait: 1s\n  group_interval: 1s\nreceivers:\n- name: 'null'\n",
    )?;
    let storage = dir.join("am-data");
    std::fs::create_dir_all(&storage)?;
    Proc::spawn(
        "prometheus-alertmanager",
        Command::new("prometheus-alertmanager").args([
            &format!("--config.file={}", config.display()),
            &format!("--storage.path={}", storage.display()),
            &format!("--web.listen-address=127.0.0.1:{port}"),
            "--cluster.listen-address=",
            "--log.level=warn",
        ]),
        &dir.join("alertmanager.log"),
    )
}

/// A page with `test_condition` set to the value in `v` (f64 bits).
fn condition_page(v: Arc<AtomicU64>) -> Result<PageServer> {
    PageServer::start(Arc::new(move |_path: &str| {
        let x = f64::from_bits(v.load(Ordering::SeqCst));
        (
            200,
            "text/plain; version=0.0.4".to_owned(),
            format!("# TYPE test_condition gauge\ntest_condition{{kind=\"disk\"}} {x}\n"),
        )
    }))
}

async fn alerts(api: &Api) -> Vec<Value> {
    match api.get("/api/v1/alerts", &[]).await {
        Ok((200, body)) => body["data"]["alerts"].as_array().cloned().unwrap_or_default(),
        _ => Vec::new(),
    }
}

async fn alert_state(api: &Api, name: &str) -> Option<(String, Value)> {
    alerts(api)
        .await
        .into_iter()
        .find(|a| a["labels"]["alertname"] == name)
        .map(|a| (a["state"].as_str().unwrap_or_default().to_owned(), a))
}

async fn am_alerts(http: &reqwest::Client, port: u16) -> Vec<Value> {
    let Ok(r) = http.get(format!("http://127.0.0.1:{port}/api/v2/alerts")).send().await else { return Vec::new() };
    let Ok(bytes) = r.bytes().await else { return Vec::new() };
    serde_json::from_slice::<Value>(&bytes).ok().and_then(|v| v.as_array().cloned()).unwrap_or_default()
}

/// Parses Go's RFC 3339 time into Unix seconds.
fn unix_secs(s: &str) -> Option<f64> {
    // YYYY-MM-DDTHH:MM:SS(.fff)Z
    let (date, time) = s.trim_end_matches('Z').split_once('T')?;
    let mut d = date.split('-').map(|p| p.parse::<i64>());
    let (y, m, day) = (d.next()?.ok()?, d.next()?.ok()?, d.next()?.ok()?);
    let mut t = time.split(':');
    let (h, mi, sec) = (t.next()?.parse::<i64>().ok()?, t.next()?.parse::<i64>().ok()?, t.next()?.parse::<f64>().ok()?);
    // Days from civil (Howard Hinnant).
    let y2 = if m <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some((days * 86_400 + h * 3600 + mi * 60) as f64 + sec)
}

fn now_secs() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alert_goes_pending_fires_reaches_alertmanager_and_resolves() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let value = Arc::new(AtomicU64::new(0f64.to_bits()));
    let page = condition_page(Arc::clone(&value))?;
    let am_port = free_port();
    let _am = start_alertmanager(dir.path(), am_port)?;
    std::fs::write(
        dir.path().join("alerts.yml"),
        r#"groups:
- name: disk
  interval: 1s
  rules:
  - alert: DiskAlmostFull
    expr: test_condition > 0
    for: 10s
    labels:
      severity: page
      team: '{{ $labels.kind }}-team'
    annotations:
      summary: 'Disk of {{ $labels.instance }} is at {{ $value }}'
      description: '{{ humanize $value }} bytes used ({{ $externalLabels.cluster }})'
"#,
    )?;
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n  external_labels: {{cluster: eu1}}\nrule_files: ['alerts.yml']\nalerting:\n  alertmanagers:\n  - static_configs: [{{targets: ['127.0.0.1:{am_port}']}}]\nscrape_configs:\n- job_name: cond\n  static_configs: [{{targets: ['{}']}}]\n",
            page.address()
        ),
    )?;
    let port = free_port();
    let _strata = start_strata(&config, &dir.path().join("data"), port, &dir.path().join("strata.log"), &[])?;
    let api = Api::new(port);
    let http = reqwest::Client::new();
    eventually("strata ready", Duration::from_secs(30), || async { api.ready().await.then_some(()) }).await?;
    eventually("alertmanager ready", Duration::from_secs(30), || async {
        let r = http.get(format!("http://127.0.0.1:{am_port}/-/ready")).send().await.ok()?;
        r.status().is_success().then_some(())
    })
    .await?;
    // Nothing is active while the condition is false.
    eventually("the rule to be evaluated", Duration::from_secs(20), || async {
        let (_, body) = api.get("/api/v1/rules", &[]).await.ok()?;
        let rule = &body["data"]["groups"][0]["rules"][0];
        (rule["health"] == "ok").then_some(())
    })
    .await?;
    ensure!(alerts(&api).await.is_empty());

    value.store(1.5e9f64.to_bits(), Ordering::SeqCst);
    let (_, pending) = eventually("a pending alert", Duration::from_secs(15), || async {
        alert_state(&api, "DiskAlmostFull").await.filter(|(s, _)| s == "pending")
    })
    .await?;
    let active_at = unix_secs(pending["activeAt"].as_str().unwrap_or_default()).context("activeAt")?;
    ensure!(pending["value"] == "1.5e+09", "{pending}");
    ensure!(pending["labels"]["team"] == "disk-team", "{pending}");
    let (_, firing) = eventually("the alert to fire", Duration::from_secs(25), || async {
        alert_state(&api, "DiskAlmostFull").await.filter(|(s, _)| s == "firing")
    })
    .await?;
    let fired_seen = now_secs();
    ensure!(fired_seen - active_at >= 10.0, "fired {:.1}s after activeAt", fired_seen - active_at);
    ensure!(fired_seen - active_at < 14.0, "fired {:.1}s after activeAt", fired_seen - active_at);
    let instance = page.address();
    ensure!(firing["annotations"]["summary"] == format!("Disk of {instance} is at 1.5e+09"), "{firing}");
    ensure!(firing["annotations"]["description"] == "1.5G bytes used (eu1)", "{firing}");

    // ALERTS and ALERTS_FOR_STATE are queryable like any series.
    let alerts_series = api.query("ALERTS{alertname=\"DiskAlmostFull\",alertstate=\"firing\"}").await?;
    ensure!(alerts_series.len() == 1, "{alerts_series:?}");
    ensure!(alerts_series[0]["metric"]["severity"] == "page");
    let for_state = api.scalar_of("ALERTS_FOR_STATE{alertname=\"DiskAlmostFull\"}").await.context("ALERTS_FOR_STATE")?;
    ensure!((for_state - active_at.floor()).abs() < 1.0, "ALERTS_FOR_STATE {for_state} vs activeAt {active_at}");

    // Alertmanager has it, with external labels and rendered annotations.
    let am = eventually("the alert in Alertmanager", Duration::from_secs(15), || async {
        am_alerts(&http, am_port).await.into_iter().find(|a| a["labels"]["alertname"] == "DiskAlmostFull")
    })
    .await?;
    ensure!(am["labels"]["severity"] == "page", "{am}");
    ensure!(am["labels"]["cluster"] == "eu1", "{am}");
    ensure!(am["labels"]["instance"] == instance.as_str(), "{am}");
    ensure!(am["labels"]["job"] == "cond", "{am}");
    ensure!(am["annotations"]["summary"] == format!("Disk of {instance} is at 1.5e+09"), "{am}");
    ensure!(am["status"]["state"] == "active", "{am}");
    ensure!(am["generatorURL"].as_str().unwrap_or_default().contains("/graph?g0.expr=test_condition+%3E+0&g0.tab=1"), "{am}");
    // endsAt of a firing alert: the send time + 4 × max(resend delay 1m, interval 1s).
    let ends = unix_secs(am["endsAt"].as_str().unwrap_or_default()).context("endsAt")?;
    ensure!(ends - now_secs() > 200.0 && ends - now_secs() <= 240.0, "endsAt {ends}");

    // The condition clears: resolved in Strata and in Alertmanager.
    value.store(0f64.to_bits(), Ordering::SeqCst);
    eventually("the alert to resolve in Strata", Duration::from_secs(15), || async {
        alert_state(&api, "DiskAlmostFull").await.is_none().then_some(())
    })
    .await?;
    eventually("the alert to resolve in Alertmanager", Duration::from_secs(20), || async {
        let now = now_secs();
        let gone = am_alerts(&http, am_port).await.into_iter().all(|a| {
            a["labels"]["alertname"] != "DiskAlmostFull"
                || unix_secs(a["endsAt"].as_str().unwrap_or_default()).is_some_and(|e| e <= now)
        });
        gone.then_some(())
    })
    .await?;
    // ALERTS went stale once the alert resolved.
    eventually("ALERTS to go stale", Duration::from_secs(10), || async {
        api.query("ALERTS{alertname=\"DiskAlmostFull\"}").await.ok()?.is_empty().then_some(())
    })
    .await?;
    let metrics = api.get_text("/metrics", &[]).await?.1;
    ensure!(metrics.contains("strata_notifications_sent_total{alertmanager="), "{metrics}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_in_the_middle_of_for_fires_on_time() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let value = Arc::new(AtomicU64::new(1f64.to_bits()));
    let page = condition_page(Arc::clone(&value))?;
    std::fs::write(
        dir.path().join("alerts.yml"),
        "groups:\n- name: restart\n  interval: 1s\n  rules:\n  - alert: Slow\n    expr: test_condition > 0\n    for: 20s\n",
    )?;
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files: ['alerts.yml']\nscrape_configs:\n- job_name: cond\n  static_configs: [{{targets: ['{}']}}]\n",
            page.address()
        ),
    )?;
    let port = free_port();
    let data = dir.path().join("data");
    let flags = ["--rules.alert.for-grace-period=2s"];
    let mut strata = start_strata(&config, &data, port, &dir.path().join("strata1.log"), &flags)?;
    let api = Api::new(port);
    let (_, pending) = eventually("a pending alert", Duration::from_secs(30), || async {
        alert_state(&api, "Slow").await.filter(|(s, _)| s == "pending")
    })
    .await?;
    let active_at = unix_secs(pending["activeAt"].as_str().unwrap_or_default()).context("activeAt")?;
    // Let ALERTS_FOR_STATE be written for a while, then kill it 8 s into `for`.
    let wait = (active_at + 8.0 - now_secs()).max(0.0);
    tokio::time::sleep(Duration::from_secs_f64(wait)).await;
    ensure!(alert_state(&api, "Slow").await.is_some_and(|(s, _)| s == "pending"));
    strata.kill();
    let down_at = now_secs();
    let _strata = start_strata(&config, &data, port, &dir.path().join("strata2.log"), &flags)?;
    let restarted = Instant::now();
    eventually("strata ready again", Duration::from_secs(30), || async { api.ready().await.then_some(()) }).await?;
    let (_, firing) = eventually("the alert to fire after the restart", Duration::from_secs(30), || async {
        alert_state(&api, "Slow").await.filter(|(s, _)| s == "firing")
    })
    .await?;
    let fired = now_secs();
    let downtime = fired - down_at - restarted.elapsed().as_secs_f64();
    // Prometheus' restore: pending time before the crash counts, the downtime
    // does not; so it fires about `for` + downtime after the original activeAt,
    // not a full `for` after the restart.
    let since_restart = restarted.elapsed().as_secs_f64();
    ensure!(since_restart < 17.0, "fired {since_restart:.1}s after the restart (a full `for` is 20s)");
    ensure!(fired - active_at >= 20.0, "fired {:.1}s after activeAt, before `for`", fired - active_at);
    let restored_active_at = unix_secs(firing["activeAt"].as_str().unwrap_or_default()).context("activeAt")?;
    ensure!(
        restored_active_at > active_at && restored_active_at - active_at < 10.0,
        "restored activeAt {restored_active_at} vs original {active_at} (downtime ~{downtime:.1}s)"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_and_node_rules_load_and_evaluate() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let ne_port = free_port();
    let _node_exporter = Proc::spawn(
        "prometheus-node-exporter",
        Command::new("prometheus-node-exporter").arg(format!("--web.listen-address=127.0.0.1:{ne_port}")),
        &dir.path().join("node_exporter.log"),
    )?;
    let data_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files: ['{}/*-rules.yml']\nscrape_configs:\n- job_name: node\n  static_configs: [{{targets: ['127.0.0.1:{ne_port}']}}]\n",
            data_dir.display()
        ),
    )?;
    let port = free_port();
    let _strata = start_strata(&config, &dir.path().join("data"), port, &dir.path().join("strata.log"), &[])?;
    let api = Api::new(port);
    eventually("strata ready", Duration::from_secs(30), || async { api.ready().await.then_some(()) }).await?;
    // Every rule evaluated (etcd's group runs every 1s too, from evaluation_interval), all healthy.
    let groups = eventually("every rule evaluated twice", Duration::from_secs(30), || async {
        let (_, body) = api.get("/api/v1/rules", &[]).await.ok()?;
        let groups = body["data"]["groups"].as_array()?.clone();
        let all_ok = groups.len() == 2
            && groups.iter().all(|g| {
                g["rules"].as_array().is_some_and(|rs| rs.iter().all(|r| r["health"] == "ok" && r.get("lastError").is_none()))
            });
        all_ok.then_some(groups)
    })
    .await?;
    let etcd = groups.iter().find(|g| g["name"] == "etcd").context("etcd group")?;
    ensure!(etcd["rules"].as_array().map(Vec::len) == Some(15), "{etcd}");
    ensure!(etcd["file"].as_str().unwrap_or_default().ends_with("tests/data/etcd-rules.yml"), "{etcd}");
    // The node CPU recording rule writes a series per instance, queryable.
    let idle = eventually("instance:node_cpu_idle:rate5m", Duration::from_secs(20), || async {
        api.scalar_of("instance:node_cpu_idle:rate5m").await
    })
    .await?;
    ensure!((0.0..=1.0).contains(&idle), "idle ratio {idle}");
    // The always-true alert fires at once (`for` 0) with its template rendered.
    let (_, up) = eventually("NodeExporterUp firing", Duration::from_secs(20), || async {
        alert_state(&api, "NodeExporterUp").await.filter(|(s, _)| s == "firing")
    })
    .await?;
    ensure!(up["annotations"]["summary"] == "127.0.0.1 is up (1)", "{up}");
    // Filters.
    let (_, body) = api.get("/api/v1/rules", &[("type", "record")]).await?;
    let g = body["data"]["groups"].as_array().context("groups")?;
    ensure!(g.len() == 1 && g[0]["rules"].as_array().map(Vec::len) == Some(1), "{body}");
    let (_, body) = api.get("/api/v1/rules", &[("rule_name[]", "etcdNoLeader"), ("rule_name[]", "NodeCPUBusy")]).await?;
    ensure!(body["data"]["groups"].as_array().map(Vec::len) == Some(2), "{body}");
    let (_, body) = api.get("/api/v1/rules", &[("rule_group[]", "node-cpu")]).await?;
    ensure!(body["data"]["groups"].as_array().map(Vec::len) == Some(1), "{body}");
    let (status, body) = api.get("/api/v1/rules", &[("type", "bogus")]).await?;
    ensure!(status == 400 && body["errorType"] == "bad_data", "{body}");
    Ok(())
}
