//! End to end: `strata import` writes blocks of old data; a running
//! `strata standalone` serves them, exports them as OpenMetrics text
//! identical to the imported file, and takes the same text through
//! `POST /api/v1/import/openmetrics`; a malformed file names its line and
//! writes nothing.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use common::{Api, Proc, eventually, free_port, strata_bin};
use strata_aggregator::synth::SynthSpec;

/// Three hours of one node, starting 2023-11-14 (any age is accepted).
const SPEC: SynthSpec = SynthSpec { nodes: 1, start_ms: 1_699_920_000_000, interval_ms: 15_000, scrapes: 720 };

fn start(data: &Path, port: u16, log: &Path) -> Result<Proc> {
    Proc::spawn(
        "strata",
        Command::new(strata_bin()).args([
            "standalone",
            &format!("--storage.path={}", data.display()),
            &format!("--web.listen-address=127.0.0.1:{port}"),
        ]),
        log,
    )
}

async fn export(api: &Api, tenant: &str) -> Result<String> {
    let qs = form_urlencoded::Serializer::new(String::new())
        .extend_pairs([
            ("match[]", r#"{job="node-exporter"}"#),
            ("match[]", r#"{job="kube-state-metrics"}"#),
            ("start", "1699900000"),
            ("end", "1699990000"),
        ])
        .finish();
    let r = api.http.get(format!("{}/api/v1/export?{qs}", api.base)).header("X-Scope-OrgID", tenant).send().await?;
    ensure!(r.status().is_success(), "export: {}", r.status());
    Ok(r.text().await?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_export_import_round_trips() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut original = Vec::new();
    SPEC.write_openmetrics(&mut original)?;
    let file = dir.path().join("in.om");
    std::fs::write(&file, &original)?;

    // A malformed file: the error names the line, and no block is written.
    let bad = dir.path().join("bad.om");
    std::fs::write(&bad, "# TYPE up unknown\nup 1 1700000000\nup{ 2 1700000015\n# EOF\n")?;
    let data = dir.path().join("data");
    let out = Command::new(strata_bin()).args(["import", "--storage.path"]).arg(&data).arg(&bad).output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(!out.status.success() && stderr.contains("line 3"), "malformed import: {stderr}");
    ensure!(std::fs::read_dir(data.join("blocks"))?.next().is_none(), "a failed import wrote blocks");

    let out = Command::new(strata_bin()).args(["import", "--storage.path"]).arg(&data).arg(&file).output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(out.status.success(), "import failed: {stderr}");
    let samples = SPEC.generate().len() * SPEC.scrapes;
    ensure!(stderr.contains(&format!("imported {samples} samples")), "no summary line: {stderr}");
    ensure!(stderr.contains("block 2/2 written"), "progress: {stderr}");

    check_duckdb_snippet(&data)?;

    let port = free_port();
    let _strata = start(&data, port, &dir.path().join("strata.log"))?;
    let api = Api::new(port);
    eventually("strata ready", Duration::from_secs(30), || async { api.ready().await.then_some(()) }).await?;
    let first = export(&api, "anonymous").await?;
    ensure!(first.as_bytes() == original.as_slice(), "export differs from the imported file");
    let n = api.scalar_of("count(up{job=\"node-exporter\"} @ 1699925000)").await;
    ensure!(n == Some(1.0), "PromQL over imported blocks: {n:?}");

    let metrics = api.http.get(format!("{}/metrics", api.base)).send().await?.text().await?;
    ensure!(metrics.contains("strata_head_memory_bytes"), "no head memory gauge in /metrics");

    // The same text through the HTTP endpoint, into another tenant.
    let r = api
        .http
        .post(format!("{}/api/v1/import/openmetrics", api.base))
        .header("X-Scope-OrgID", "copy")
        .body(first.clone())
        .send()
        .await?;
    let status = r.status();
    let body: serde_json::Value = serde_json::from_slice(&r.bytes().await?).context("import response")?;
    ensure!(status.is_success() && body["data"]["samples"] == samples, "{status} {body}");
    ensure!(export(&api, "copy").await? == first, "import → export → import changed the data");

    let r = api.http.post(format!("{}/api/v1/import/openmetrics", api.base)).body("up 1\n# EOF\n").send().await?;
    ensure!(r.status() == 400, "untimed sample: {}", r.status());
    let body: serde_json::Value = serde_json::from_slice(&r.bytes().await?)?;
    ensure!(body["errorType"] == "bad_data" && body["error"].as_str().is_some_and(|e| e.contains("line 1")), "{body}");
    Ok(())
}

/// Runs the DuckDB query of `docs/storage.md` over the imported blocks and
/// checks it gives the real values back, bit for bit. Needs Python's
/// `duckdb` module, which `scripts/install-test-deps.sh` installs.
fn check_duckdb_snippet(data: &Path) -> Result<()> {
    let probe = Command::new("python3").args(["-c", "import duckdb"]).output();
    ensure!(
        probe.is_ok_and(|o| o.status.success()),
        "python3 cannot import duckdb: run scripts/install-test-deps.sh (pip install duckdb)"
    );
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/storage.md"))?;
    let sql = doc.split("```sql\n").nth(1).and_then(|s| s.split("```").next()).context("no SQL in docs/storage.md")?;
    ensure!(sql.contains("'data/blocks/") && sql.contains("= 'up'"), "the snippet changed shape: {sql}");
    let sql = sql.replace("'data/blocks/", &format!("'{}/blocks/", data.display())).replace("= 'up'", "= 'node_load1'");
    let script = "import duckdb, sys\nfor r in duckdb.sql(sys.argv[1]).fetchall(): print(r[2], repr(r[3]))";
    let out = Command::new("python3").args(["-c", script, &sql]).output()?;
    ensure!(out.status.success(), "duckdb: {}", String::from_utf8_lossy(&out.stderr));
    let got: Vec<(i64, u64)> = String::from_utf8(out.stdout)?
        .lines()
        .map(|l| {
            let (t, v) = l.split_once(' ').context("row")?;
            Ok((t.parse()?, v.parse::<f64>()?.to_bits()))
        })
        .collect::<Result<_>>()?;
    let want: Vec<(i64, u64)> = SPEC
        .generate()
        .into_iter()
        .filter(|(l, _)| l.metric_name() == Some("node_load1"))
        .flat_map(|(_, s)| s.into_iter().map(|p| (p.t, p.v.to_bits())))
        .collect();
    ensure!(!want.is_empty() && got == want, "DuckDB read {} rows, want {}", got.len(), want.len());
    Ok(())
}
