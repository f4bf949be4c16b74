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
    ensure!(fired_seen - active_at < 16.0, "fired {:.1}s after activeAt", fired_seen - active_at);
    let instance = page.address();
    ensure!(firing["annotations"]["summary"] == format!("Disk of {instance} is at 1.5e+09"), "{firing}");
    ensure!(firing["annotations"]["description"] == "1.5G bytes used (eu1)", "{firing}");

    // ALERTS and ALERTS_FOR_STATE are queryable like any series.
    let alerts_series = api.query("ALERTS{alertname=\"DiskAlmostFull\",alertstate=\"firing\"}").await?;
    ensure!(alerts_series.len() == 1, "{alerts_series:?}");
    ensure!(alerts_series[0]["metric"]["severity"] == "page");
    let for_state =
        api.scalar_of("ALERTS_FOR_STATE{alertname=\"DiskAlmostFull\"}").await.context("ALERTS_FOR_STATE")?;
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
    ensure!(
        am["generatorURL"].as_str().unwrap_or_default().contains("/graph?g0.expr=test_condition+%3E+0&g0.tab=1"),
        "{am}"
    );
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
    for m in [
        "strata_rule_group_rules{rule_group=",
        "strata_rule_evaluations_total{rule_group=",
        "strata_rule_group_last_evaluation_timestamp_seconds{rule_group=",
        "strata_notifications_alertmanagers_discovered 1",
    ] {
        ensure!(metrics.contains(m), "no {m} in {metrics}");
    }
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
    // Let ALERTS_FOR_STATE be written for a while, then kill it 14 s into `for`.
    let wait = (active_at + 14.0 - now_secs()).max(0.0);
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
    ensure!(since_restart < 16.0, "fired {since_restart:.1}s after the restart (a full `for` is 20s)");
    ensure!(fired - active_at >= 20.0, "fired {:.1}s after activeAt, before `for`", fired - active_at);
    let restored_active_at = unix_secs(firing["activeAt"].as_str().unwrap_or_default()).context("activeAt")?;
    ensure!(
        restored_active_at > active_at && restored_active_at - active_at < 12.0,
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
                g["rules"]
                    .as_array()
                    .is_some_and(|rs| rs.iter().all(|r| r["health"] == "ok" && r.get("lastError").is_none()))
            });
        all_ok.then_some(groups)
    })
    .await?;
    // Prometheus 2.42 loads the same files: same groups, rules, queries as printed, labels, annotations.
    let pport = free_port();
    let _prom = start_prometheus(&config, &dir.path().join("prom-data"), pport, &dir.path().join("prometheus.log"))?;
    let prom = Api::new(pport);
    let pgroups = eventually("Prometheus' rules", Duration::from_secs(30), || async {
        let (_, body) = prom.get("/api/v1/rules", &[]).await.ok()?;
        let g = body["data"]["groups"].as_array()?.clone();
        (g.len() == 2).then_some(g)
    })
    .await?;
    for (g, pg) in groups.iter().zip(&pgroups) {
        for f in ["name", "file", "interval", "limit"] {
            ensure!(g[f] == pg[f], "group {f}: {} vs Prometheus {}", g[f], pg[f]);
        }
        let (rules, prules) = (g["rules"].as_array().context("rules")?, pg["rules"].as_array().context("rules")?);
        ensure!(rules.len() == prules.len());
        for (r, pr) in rules.iter().zip(prules) {
            for f in ["name", "query", "duration", "keepFiringFor", "labels", "annotations", "type"] {
                ensure!(r[f] == pr[f], "rule {} {f}: {} vs Prometheus {}", r["name"], r[f], pr[f]);
            }
        }
    }
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
    let (_, body) =
        api.get("/api/v1/rules", &[("rule_name[]", "etcdNoLeader"), ("rule_name[]", "NodeCPUBusy")]).await?;
    ensure!(body["data"]["groups"].as_array().map(Vec::len) == Some(2), "{body}");
    let (_, body) = api.get("/api/v1/rules", &[("rule_group[]", "node-cpu")]).await?;
    ensure!(body["data"]["groups"].as_array().map(Vec::len) == Some(1), "{body}");
    let (status, body) = api.get("/api/v1/rules", &[("type", "bogus")]).await?;
    ensure!(status == 400 && body["errorType"] == "bad_data", "{body}");
    Ok(())
}

async fn post(
    http: &reqwest::Client,
    port: u16,
    path: &str,
    tenant: Option<&str>,
    body: &str,
) -> Result<(u16, String)> {
    let mut req = http.post(format!("http://127.0.0.1:{port}{path}")).body(body.to_owned());
    if let Some(t) = tenant {
        req = req.header("X-Scope-OrgID", t);
    }
    let r = req.send().await?;
    Ok((r.status().as_u16(), r.text().await?))
}

async fn send(
    http: &reqwest::Client,
    method: reqwest::Method,
    port: u16,
    path: &str,
    tenant: Option<&str>,
) -> Result<(u16, String)> {
    let mut req = http.request(method, format!("http://127.0.0.1:{port}{path}"));
    if let Some(t) = tenant {
        req = req.header("X-Scope-OrgID", t);
    }
    let r = req.send().await?;
    Ok((r.status().as_u16(), r.text().await?))
}

/// (group name, rule names) of `/api/v1/rules` for a tenant.
async fn rule_names(
    http: &reqwest::Client,
    port: u16,
    tenant: Option<&str>,
) -> Result<Vec<(String, String, Vec<String>)>> {
    let (status, text) = send(http, reqwest::Method::GET, port, "/api/v1/rules", tenant).await?;
    ensure!(status == 200, "{status} {text}");
    let body: Value = serde_json::from_str(&text)?;
    Ok(body["data"]["groups"]
        .as_array()
        .context("groups")?
        .iter()
        .map(|g| {
            let rules = g["rules"]
                .as_array()
                .map(|rs| rs.iter().map(|r| r["name"].as_str().unwrap_or_default().to_owned()).collect())
                .unwrap_or_default();
            (
                g["file"].as_str().unwrap_or_default().to_owned(),
                g["name"].as_str().unwrap_or_default().to_owned(),
                rules,
            )
        })
        .collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_api_creates_replaces_deletes_and_refuses_bad_groups() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("prometheus.yml");
    let port = free_port();
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n- job_name: self\n  static_configs: [{{targets: ['127.0.0.1:{port}']}}]\n"
        ),
    )?;
    let data = dir.path().join("data");
    let mut strata = start_strata(&config, &data, port, &dir.path().join("strata1.log"), &[])?;
    let api = Api::new(port);
    let http = reqwest::Client::new();
    eventually("strata ready", Duration::from_secs(30), || async { api.ready().await.then_some(()) }).await?;
    let ns = "/api/v1/rules/team-a";

    // Create: applied at once, without a restart.
    let g1 = "name: g1\ninterval: 1s\nrules:\n- record: team:up:count\n  expr: count(up)\n";
    let (status, body) = post(&http, port, ns, None, g1).await?;
    ensure!(status == 202, "{status} {body}");
    ensure!(rule_names(&http, port, None).await? == vec![("team-a".into(), "g1".into(), vec!["team:up:count".into()])]);
    let n =
        eventually("the API rule's output", Duration::from_secs(15), || async { api.scalar_of("team:up:count").await })
            .await?;
    ensure!(n == 1.0, "count(up) = {n}");
    let (status, yaml) = send(&http, reqwest::Method::GET, port, ns, None).await?;
    ensure!(
        status == 200 && yaml.starts_with("\"team-a\":\n- name: g1\n") && yaml.contains("  - record: team:up:count"),
        "{yaml}"
    );

    // Replace the group (same name), add a second.
    let g1b = "name: g1\ninterval: 1s\nrules:\n- record: team:up:sum\n  expr: sum(up)\n";
    ensure!(post(&http, port, ns, None, g1b).await?.0 == 202);
    let g2 = "name: g2\ninterval: 1s\nrules:\n- alert: SelfUp\n  expr: up == 1\n  annotations: {summary: '{{ $labels.job }} up'}\n";
    ensure!(post(&http, port, ns, None, g2).await?.0 == 202);
    let want = vec![
        ("team-a".to_owned(), "g1".to_owned(), vec!["team:up:sum".to_owned()]),
        ("team-a".to_owned(), "g2".to_owned(), vec!["SelfUp".to_owned()]),
    ];
    ensure!(rule_names(&http, port, None).await? == want);
    let (_, one) = send(&http, reqwest::Method::GET, port, &format!("{ns}/g1"), None).await?;
    ensure!(one.contains("team:up:sum") && !one.contains("team:up:count"), "{one}");

    // Malformed groups: 400 with the reason, nothing changed.
    for (bad, reason) in [
        ("name: g1\nrules:\n- record: 'bad name'\n  expr: sum(\n", "could not parse expression"),
        ("name: g1\nrules:\n- record: x\n  expr: up\n  bogus: 1\n", "unknown field"),
        (
            "name: g1\nrules:\n- alert: A\n  expr: up\n  annotations: {s: '{{ nosuch }}'}\n",
            "function \"nosuch\" not defined",
        ),
        ("rules: [", "team-a"),
    ] {
        let (status, body) = post(&http, port, ns, None, bad).await?;
        ensure!(status == 400, "{status} {body}");
        let v: Value = serde_json::from_str(&body)?;
        ensure!(v["status"] == "error" && v["errorType"] == "bad_data", "{body}");
        ensure!(v["error"].as_str().unwrap_or_default().contains(reason), "{body}");
    }
    ensure!(rule_names(&http, port, None).await? == want);
    ensure!(send(&http, reqwest::Method::GET, port, &format!("{ns}/g1"), None).await?.1 == one);
    let metrics = api.get_text("/metrics", &[]).await?.1;
    ensure!(metrics.contains("strata_ruler_api_rejected_requests_total 4"), "{metrics}");

    // Tenants are separate.
    ensure!(send(&http, reqwest::Method::GET, port, ns, Some("other")).await?.0 == 404);
    ensure!(rule_names(&http, port, Some("other")).await?.is_empty());

    // Delete one group.
    ensure!(send(&http, reqwest::Method::DELETE, port, &format!("{ns}/g1"), None).await?.0 == 202);
    ensure!(send(&http, reqwest::Method::GET, port, &format!("{ns}/g1"), None).await?.0 == 404);
    ensure!(send(&http, reqwest::Method::DELETE, port, &format!("{ns}/nosuch"), None).await?.0 == 404);
    ensure!(rule_names(&http, port, None).await? == want[1..]);

    // Stored: reloaded after a restart.
    strata.kill();
    let _strata = start_strata(&config, &data, port, &dir.path().join("strata2.log"), &[])?;
    eventually("strata ready again", Duration::from_secs(30), || async { api.ready().await.then_some(()) }).await?;
    ensure!(rule_names(&http, port, None).await? == want[1..]);

    // Delete the namespace.
    ensure!(send(&http, reqwest::Method::DELETE, port, ns, None).await?.0 == 202);
    ensure!(send(&http, reqwest::Method::GET, port, ns, None).await?.0 == 404);
    ensure!(rule_names(&http, port, None).await?.is_empty());
    Ok(())
}

/// (labels, state, annotations, value) of every active alert, sorted.
async fn alert_summary(api: &Api) -> Vec<String> {
    let mut v: Vec<String> = alerts(api)
        .await
        .iter()
        .map(|a| format!("{} {} {} {}", a["labels"], a["state"], a["annotations"], a["value"]))
        .collect();
    v.sort();
    v
}

async fn vector_summary(api: &Api, q: &str) -> Vec<String> {
    let mut v: Vec<String> =
        api.query(q).await.unwrap_or_default().iter().map(|s| format!("{} {}", s["metric"], s["value"][1])).collect();
    v.sort();
    v
}

fn keys(v: &Value) -> Vec<String> {
    let mut k: Vec<String> = v.as_object().map(|o| o.keys().cloned().collect()).unwrap_or_default();
    k.sort();
    k
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_alerts_and_recorded_series_as_prometheus() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let values = Arc::new(std::sync::Mutex::new([1.0f64, 5.0, 0.0]));
    let v2 = Arc::clone(&values);
    let page = PageServer::start(Arc::new(move |_p: &str| {
        let v = *v2.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        (
            200,
            "text/plain; version=0.0.4".to_owned(),
            format!(
                "# TYPE test_value gauge\ntest_value{{series=\"a\"}} {}\ntest_value{{series=\"b\"}} {}\ntest_value{{series=\"c\"}} {}\n",
                v[0], v[1], v[2]
            ),
        )
    }))?;
    std::fs::write(
        dir.path().join("rules.yml"),
        r#"groups:
- name: compat
  interval: 1s
  rules:
  - record: job:test_value:sum
    expr: sum by (job) (test_value)
  - record: test_value:doubled
    expr: test_value * 2
    labels:
      source: rule
  - alert: ValueHigh
    expr: test_value > 3
    for: 3s
    labels:
      severity: warning
    annotations:
      summary: '{{ $labels.series }} is {{ $value | humanize }}'
      total: '{{ with query "sum(test_value)" }}{{ . | first | value | printf "%.1f" }}{{ end }}'
      funcs: '{{ humanizeTimestamp 1435065584.128 }}|{{ humanizePercentage 0.1234567 }}|{{ reReplaceAll "(.*):(.*)" "${2}-$1" $labels.instance }}|{{ $labels.instance | stripPort }}|{{ toUpper "abc" }}|{{ match "^b" $labels.series }}|{{ with args 1 "x" }}{{ .arg0 }}{{ .arg1 }}{{ end }}|{{ safeHtml "<b>" }}|{{ range query "test_value" | sortByLabel "series" }}{{ label "series" . }}={{ value . }},{{ end }}|{{ humanize 1234567.0 }}|{{ humanize 0.000012 }}|{{ humanize1024 1073741824.0 }}|{{ humanizeDuration 3725.5 }}|{{ humanizeDuration 0.0025 }}'
      fmt: '{{ printf "%08.3f %-5s| %x %q %t %5d" 3.14159 "ab" 255 "q" true 42 }}|{{ len $labels }}|{{ index $labels "series" }}|{{ title "hello wORLD" }}|{{ toLower "ÀB" }}|{{ tableLink "up == 1" }}|{{ graphLink "rate(x[5m])" }}|{{ 1.5e10 }}|{{ 0.000001 }}|{{ 123456789.0 }}|{{ print 1 2 "a" "b" 3.5 }}|{{ $value | printf "%.3e" }}|{{ range $k, $v := $labels }}{{ $k }}:{{ $v }};{{ end }}|{{ if and (eq $labels.series "b") (ge $value 5.0) }}yes{{ else }}no{{ end }}|{{ $labels }}'
  - alert: ValueAny
    expr: test_value > 0
    labels:
      severity: info
      series: 'x-{{ $labels.series }}'
    annotations:
      error: '{{ if gt $value 1 }}big{{ end }}'
      fmt: '{{ printf "%.2f|%5.1f|%d|%s|%v" $value $value 3 "s" $labels }} {{ $value | humanizeDuration }} {{ humanize1024 $value }} {{ title "a-b c" }}'
  - alert: ValueNever
    expr: test_value > 100
    for: 1m
"#,
    )?;
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files: ['rules.yml']\nscrape_configs:\n- job_name: compat\n  static_configs: [{{targets: ['{}']}}]\n",
            page.address()
        ),
    )?;
    let (sport, pport) = (free_port(), free_port());
    let _strata = start_strata(&config, &dir.path().join("strata-data"), sport, &dir.path().join("strata.log"), &[])?;
    let _prom = start_prometheus(&config, &dir.path().join("prom-data"), pport, &dir.path().join("prometheus.log"))?;
    let (strata, prom) = (Api::new(sport), Api::new(pport));
    for api in [&strata, &prom] {
        eventually("ready", Duration::from_secs(30), || async { api.ready().await.then_some(()) }).await?;
    }
    // Phase 1: b fires after 3 s, a and b are ValueAny.
    let settle = |what: &'static str| {
        let (strata, prom) = (strata.clone(), prom.clone());
        async move {
            eventually(what, Duration::from_secs(25), || async {
                let (a, b) = (alert_summary(&strata).await, alert_summary(&prom).await);
                let firing = a.iter().filter(|s| s.contains("\"firing\"")).count();
                (a == b && !a.is_empty() && firing > 0 && !a.iter().any(|s| s.contains("\"pending\""))).then_some(a)
            })
            .await
        }
    };
    let phase1 = match settle("the same settled alerts in Strata and Prometheus").await {
        Ok(p) => p,
        Err(e) => anyhow::bail!(
            "{e}:\nStrata:     {:#?}\nPrometheus: {:#?}",
            alert_summary(&strata).await,
            alert_summary(&prom).await
        ),
    };
    ensure!(phase1.len() == 3, "{phase1:?}");
    ensure!(
        phase1.iter().any(|s| s.contains("\"funcs\":\"2015-06-23 13:19:44.128 +0000 UTC|12.35%|")
            && s.contains("\"fmt\":\"0003.142 ab   | ff")),
        "{phase1:?}"
    );
    ensure!(
        phase1.iter().any(|s| s.contains("\"summary\":\"b is 5\"") && s.contains("\"total\":\"6.0\"")),
        "{phase1:?}"
    );
    for q in ["job:test_value:sum", "test_value:doubled", "ALERTS", "ALERTS_FOR_STATE > 0"] {
        let want_nonempty = !vector_summary(&prom, q).await.is_empty();
        ensure!(want_nonempty, "Prometheus has no {q}");
        eventually(q, Duration::from_secs(10), || async {
            let (a, b) = (vector_summary(&strata, q).await, vector_summary(&prom, q).await);
            // ALERTS_FOR_STATE values are activeAt seconds: equal only if both saw the change in the same second.
            let a: Vec<String> = a
                .iter()
                .map(|s| {
                    if q.starts_with("ALERTS_FOR_STATE") {
                        s.split(' ').next().unwrap_or("").to_owned()
                    } else {
                        s.clone()
                    }
                })
                .collect();
            let b: Vec<String> = b
                .iter()
                .map(|s| {
                    if q.starts_with("ALERTS_FOR_STATE") {
                        s.split(' ').next().unwrap_or("").to_owned()
                    } else {
                        s.clone()
                    }
                })
                .collect();
            (a == b).then_some(())
        })
        .await?;
    }

    // The rules API has Prometheus' shape (field names), group and rule by rule.
    let (_, sr) = strata.get("/api/v1/rules", &[]).await?;
    let (_, pr) = prom.get("/api/v1/rules", &[]).await?;
    let (sg, pg) = (&sr["data"]["groups"][0], &pr["data"]["groups"][0]);
    ensure!(keys(sg) == keys(pg), "group fields {:?} vs Prometheus {:?}", keys(sg), keys(pg));
    for f in ["name", "file", "interval", "limit"] {
        ensure!(sg[f] == pg[f], "group {f}: {} vs {}", sg[f], pg[f]);
    }
    // Both evaluate the group at the same phase of its interval (the offset
    // Prometheus derives from a hash of the group's name and file).
    let phase = |g: &Value| unix_secs(g["lastEvaluation"].as_str().unwrap_or_default()).map(|t| t.fract());
    let (a, b) = (phase(sg).context("phase")?, phase(pg).context("phase")?);
    let d = (a - b).abs();
    ensure!(d.min(1.0 - d) < 0.1, "evaluation phase {a:.3} vs Prometheus {b:.3}");
    for (i, (a, b)) in
        sg["rules"].as_array().context("rules")?.iter().zip(pg["rules"].as_array().context("rules")?).enumerate()
    {
        ensure!(keys(a) == keys(b), "rule {i} fields {:?} vs Prometheus {:?}", keys(a), keys(b));
        for f in ["name", "query", "duration", "keepFiringFor", "labels", "annotations", "health", "type", "state"] {
            ensure!(a[f] == b[f], "rule {i} {f}: {} vs Prometheus {}", a[f], b[f]);
        }
        if let (Some(x), Some(y)) = (a["alerts"].as_array(), b["alerts"].as_array()) {
            for (x, y) in x.iter().zip(y) {
                ensure!(keys(x) == keys(y), "alert fields {:?} vs Prometheus {:?}", keys(x), keys(y));
            }
        }
    }

    // Phase 2: b clears (resolves), a rises (pending, then firing).
    *values.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = [10.0, 0.0, 0.0];
    let phase2 = eventually("the same alerts after the change", Duration::from_secs(25), || async {
        let (a, b) = (alert_summary(&strata).await, alert_summary(&prom).await);
        let ok = a == b && a.len() == 2 && a.iter().any(|s| s.contains("\"a is 10\"") && s.contains("\"firing\""));
        ok.then_some(a)
    })
    .await?;
    ensure!(!phase2.iter().any(|s| s.contains("\"b\"")), "{phase2:?}");
    for q in ["job:test_value:sum", "test_value:doubled", "ALERTS"] {
        eventually(q, Duration::from_secs(10), || async {
            (vector_summary(&strata, q).await == vector_summary(&prom, q).await).then_some(())
        })
        .await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_rule_files_and_keeps_them_when_invalid() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let rules = dir.path().join("rules.yml");
    std::fs::write(
        &rules,
        "groups:\n- name: one\n  interval: 1s\n  rules:\n  - record: one:vector\n    expr: vector(1)\n",
    )?;
    let config = dir.path().join("prometheus.yml");
    std::fs::write(&config, "global:\n  evaluation_interval: 1s\nrule_files: ['rules.yml']\n")?;
    let port = free_port();
    let strata = start_strata(&config, &dir.path().join("data"), port, &dir.path().join("strata.log"), &[])?;
    let api = Api::new(port);
    let http = reqwest::Client::new();
    eventually("strata ready", Duration::from_secs(30), || async { api.ready().await.then_some(()) }).await?;
    let file = rules.display().to_string();
    ensure!(rule_names(&http, port, None).await? == vec![(file.clone(), "one".into(), vec!["one:vector".into()])]);
    eventually("one:vector", Duration::from_secs(10), || async { api.scalar_of("one:vector").await }).await?;
    let hup = || Command::new("kill").args(["-HUP", &strata.child.id().to_string()]).status();

    std::fs::write(
        &rules,
        "groups:\n- name: two\n  interval: 1s\n  rules:\n  - record: two:vector\n    expr: vector(2)\n",
    )?;
    ensure!(hup()?.success());
    let want = vec![(file.clone(), "two".to_owned(), vec!["two:vector".to_owned()])];
    eventually("the reloaded group", Duration::from_secs(10), || async {
        (rule_names(&http, port, None).await.ok()? == want).then_some(())
    })
    .await?;
    let two = eventually("two:vector", Duration::from_secs(10), || async { api.scalar_of("two:vector").await }).await?;
    ensure!(two == 2.0);
    // The removed group's series went stale.
    eventually("one:vector to go stale", Duration::from_secs(10), || async {
        api.query("one:vector").await.ok()?.is_empty().then_some(())
    })
    .await?;

    // An invalid rule file is refused; the running rules stay.
    std::fs::write(&rules, "groups:\n- name: three\n  rules:\n  - record: three\n    expr: sum(\n")?;
    ensure!(hup()?.success());
    tokio::time::sleep(Duration::from_secs(2)).await;
    ensure!(rule_names(&http, port, None).await? == want);
    let log = std::fs::read_to_string(dir.path().join("strata.log"))?;
    ensure!(log.contains("rules.yml:5:11:") && log.contains("could not parse expression"), "{log}");
    Ok(())
}

#[test]
fn rule_file_errors_match_promtool() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let rules = dir.path().join("bad.yml");
    std::fs::write(
        &rules,
        "groups:\n- name: g\n  rules:\n  - record: \"bad name\"\n    expr: sum(up)\n  - alert: A\n    expr: up\n    labels: {\"bad-label\": y}\n    annotations: {s: \"{{ nosuch }}\", t: \"{{ if 1 }}\"}\n  - expr: up\n  - record: x\n    expr: up\n    for: 5m\n    labels: {\"__name__\": y}\n- name: g\n  rules: []\n",
    )?;
    let out = Command::new("promtool").args(["check", "rules"]).arg(&rules).output().context("promtool")?;
    let promtool = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    let config = dir.path().join("prometheus.yml");
    std::fs::write(&config, "rule_files: [bad.yml]\n")?;
    let out = Command::new(strata_bin())
        .args(["standalone", &format!("--config.file={}", config.display()), "--web.listen-address=127.0.0.1:0"])
        .arg(format!("--storage.path={}", dir.path().join("data").display()))
        .output()?;
    ensure!(!out.status.success(), "an invalid rule file must stop the start");
    let ours = String::from_utf8_lossy(&out.stderr).to_string();
    let prefix = format!("{}: ", rules.display());
    let mut compared = 0;
    for line in promtool.lines().filter_map(|l| l.strip_prefix(&prefix)) {
        // promtool prints `line:col: message`, or only the message (or 0:0) where it has no position;
        // Strata always gives the rule's position.
        let (loc, msg) = match line.split_once(": ") {
            Some((loc, msg)) if loc.split(':').all(|n| n.bytes().all(|b| b.is_ascii_digit())) => (Some(loc), msg),
            _ => (None, line),
        };
        match loc {
            Some(loc) if loc != "0:0" => {
                ensure!(ours.contains(&format!("bad.yml:{loc}: {msg}")), "missing {line:?} in:\n{ours}")
            }
            _ => ensure!(ours.contains(msg), "missing {msg:?} in:\n{ours}"),
        }
        compared += 1;
    }
    ensure!(compared == 8, "promtool said:\n{promtool}");
    ensure!(ours.matches("bad.yml:").count() == compared, "{ours}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alertmanager_gets_the_same_alerts_from_strata_and_prometheus() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let value = Arc::new(AtomicU64::new(2f64.to_bits()));
    let page = condition_page(Arc::clone(&value))?;
    std::fs::write(
        dir.path().join("alerts.yml"),
        "groups:\n- name: am\n  interval: 1s\n  rules:\n  - alert: Cond\n    expr: test_condition > 1\n    for: 2s\n    labels: {severity: page}\n    annotations: {summary: '{{ $labels.kind }} at {{ $value }}'}\n",
    )?;
    let mut ams = Vec::new();
    for name in ["am-strata", "am-prom"] {
        let d = dir.path().join(name);
        std::fs::create_dir_all(&d)?;
        let port = free_port();
        ams.push((start_alertmanager(&d, port)?, port));
    }
    let http = reqwest::Client::new();
    for (_, port) in &ams {
        eventually("alertmanager ready", Duration::from_secs(30), || async {
            let r = http.get(format!("http://127.0.0.1:{port}/-/ready")).send().await.ok()?;
            r.status().is_success().then_some(())
        })
        .await?;
    }
    // Both find their Alertmanager through file discovery (a path relative to the config file).
    let config = |who: &str| {
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n  external_labels: {{cluster: eu1, replica: r1}}\nrule_files: ['alerts.yml']\nalerting:\n  alert_relabel_configs:\n  - {{action: labeldrop, regex: replica}}\n  alertmanagers:\n  - file_sd_configs: [{{files: ['{who}-am.yml']}}]\nscrape_configs:\n- job_name: cond\n  static_configs: [{{targets: ['{}']}}]\n",
            page.address()
        )
    };
    let (sconf, pconf) = (dir.path().join("strata.yml"), dir.path().join("prometheus.yml"));
    std::fs::write(&sconf, config("strata"))?;
    std::fs::write(&pconf, config("prom"))?;
    std::fs::write(dir.path().join("strata-am.yml"), format!("- targets: ['127.0.0.1:{}']\n", ams[0].1))?;
    std::fs::write(dir.path().join("prom-am.yml"), format!("- targets: ['127.0.0.1:{}']\n", ams[1].1))?;
    let (sport, pport) = (free_port(), free_port());
    let _strata = start_strata(&sconf, &dir.path().join("s-data"), sport, &dir.path().join("strata.log"), &[])?;
    let _prom = start_prometheus(&pconf, &dir.path().join("p-data"), pport, &dir.path().join("prometheus.log"))?;
    // What each Alertmanager holds: labels, annotations, state, and endsAt - startsAt.
    let view = |port: u16| {
        let http = http.clone();
        async move {
            let mut v: Vec<(String, String, String, f64)> = am_alerts(&http, port)
                .await
                .iter()
                .map(|a| {
                    let span = unix_secs(a["endsAt"].as_str().unwrap_or_default()).unwrap_or(0.0)
                        - unix_secs(a["startsAt"].as_str().unwrap_or_default()).unwrap_or(0.0);
                    (a["labels"].to_string(), a["annotations"].to_string(), a["status"]["state"].to_string(), span)
                })
                .collect();
            v.sort_by(|a, b| a.0.cmp(&b.0));
            v
        }
    };
    let (s, p) = eventually("both Alertmanagers to hold the alert", Duration::from_secs(40), || async {
        let (s, p) = (view(ams[0].1).await, view(ams[1].1).await);
        (!s.is_empty() && !p.is_empty()).then_some((s, p))
    })
    .await?;
    ensure!(s.len() == 1 && p.len() == 1, "{s:?} vs {p:?}");
    ensure!(s[0].0 == p[0].0, "labels {} vs Prometheus {}", s[0].0, p[0].0);
    ensure!(s[0].1 == p[0].1, "annotations {} vs Prometheus {}", s[0].1, p[0].1);
    ensure!(s[0].2 == p[0].2, "state {} vs Prometheus {}", s[0].2, p[0].2);
    // endsAt - startsAt: 4 × resend delay (1m) after the first send, within evaluation timing.
    ensure!((s[0].3 - p[0].3).abs() < 3.0 && (s[0].3 - 240.0).abs() < 3.0, "span {} vs Prometheus {}", s[0].3, p[0].3);
    ensure!(s[0].0.contains("\"cluster\":\"eu1\"") && !s[0].0.contains("replica"), "{}", s[0].0);

    value.store(0f64.to_bits(), Ordering::SeqCst);
    eventually("both to resolve", Duration::from_secs(20), || async {
        let now = now_secs();
        let resolved = |alerts: Vec<Value>| {
            alerts.iter().all(|a| unix_secs(a["endsAt"].as_str().unwrap_or_default()).is_some_and(|e| e <= now))
        };
        (resolved(am_alerts(&http, ams[0].1).await) && resolved(am_alerts(&http, ams[1].1).await)).then_some(())
    })
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_reach_an_https_alertmanager() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    // A CA, and a server certificate it signs for 127.0.0.1 (not for "localhost").
    let (ca, ca_key, csr) = (dir.path().join("ca.pem"), dir.path().join("ca-key.pem"), dir.path().join("srv.csr"));
    let ext = dir.path().join("ext.cnf");
    std::fs::write(&ext, "subjectAltName=IP:127.0.0.1\nbasicConstraints=critical,CA:FALSE\n")?;
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    let p = |p: &Path| p.display().to_string();
    for args in [
        [
            &["req", "-x509"][..],
            &ec[..],
            &["-days", "1", "-subj", "/CN=test-ca", "-keyout", &p(&ca_key), "-out", &p(&ca)],
        ]
        .concat(),
        [&["req"][..], &ec[..], &["-subj", "/CN=127.0.0.1", "-keyout", &p(&key), "-out", &p(&csr)]].concat(),
        vec![
            "x509",
            "-req",
            "-in",
            &p(&csr),
            "-CA",
            &p(&ca),
            "-CAkey",
            &p(&ca_key),
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            &p(&ext),
            "-out",
            &p(&cert),
        ],
    ] {
        let status = Command::new("openssl")
            .args(&args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .context("openssl")?;
        ensure!(status.success(), "openssl {args:?} failed");
    }
    let am_dir = dir.path().join("am");
    std::fs::create_dir_all(&am_dir)?;
    let web = am_dir.join("web.yml");
    std::fs::write(
        &web,
        format!("tls_server_config:\n  cert_file: {}\n  key_file: {}\n", cert.display(), key.display()),
    )?;
    let am_port = free_port();
    let am_config = am_dir.join("alertmanager.yml");
    std::fs::write(&am_config, "route:\n  receiver: 'null'\nreceivers:\n- name: 'null'\n")?;
    let _am = Proc::spawn(
        "prometheus-alertmanager",
        Command::new("prometheus-alertmanager").args([
            &format!("--config.file={}", am_config.display()),
            &format!("--storage.path={}", am_dir.display()),
            &format!("--web.listen-address=127.0.0.1:{am_port}"),
            &format!("--web.config.file={}", web.display()),
            "--cluster.listen-address=",
        ]),
        &am_dir.join("alertmanager.log"),
    )?;
    std::fs::write(
        dir.path().join("alerts.yml"),
        "groups:\n- name: tls\n  interval: 1s\n  rules:\n  - alert: Always\n    expr: vector(1) > 0\n",
    )?;
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "rule_files: [alerts.yml]\nalerting:\n  alertmanagers:\n  - scheme: https\n    tls_config: {{ca_file: {}}}\n    static_configs: [{{targets: ['127.0.0.1:{am_port}']}}]\n  - scheme: https\n    static_configs: [{{targets: ['localhost:{am_port}']}}]\n",
            ca.display()
        ),
    )?;
    let port = free_port();
    let _strata = start_strata(
        &config,
        &dir.path().join("data"),
        port,
        &dir.path().join("strata.log"),
        &["--rules.alert.resend-delay=1s"],
    )?;
    let api = Api::new(port);
    eventually("strata ready", Duration::from_secs(30), || async { api.ready().await.then_some(()) }).await?;
    // Sent at every evaluation (resend delay 1s), so Alertmanager's start-up does not matter.
    let good =
        format!("strata_notifications_sent_total{{alertmanager=\"https://127.0.0.1:{am_port}/api/v2/alerts\"}} ");
    let bad =
        format!("strata_notifications_errors_total{{alertmanager=\"https://localhost:{am_port}/api/v2/alerts\"}} ");
    let waited = eventually("a TLS send and a refused certificate", Duration::from_secs(30), || async {
        let text = api.get_text("/metrics", &[]).await.ok()?.1;
        (text.contains(&good) && text.contains(&bad)).then_some(())
    })
    .await;
    if let Err(e) = waited {
        let text = api.get_text("/metrics", &[]).await?.1;
        let lines: Vec<&str> = text.lines().filter(|l| l.starts_with("strata_notifications")).collect();
        let log = std::fs::read_to_string(dir.path().join("strata.log")).unwrap_or_default();
        anyhow::bail!("{e}\n{}\n{log}", lines.join("\n"));
    }
    Ok(())
}
