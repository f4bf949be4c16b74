//! `POST /-/reload` (with `--web.enable-lifecycle`, as Prometheus): a valid
//! file replaces the scrape jobs, an invalid one is refused with 500 and
//! the reason, and the running jobs stay.

mod common;

use std::process::Command;
use std::time::Duration;

use anyhow::Result;
use common::{Api, PageServer, Proc, eventually, free_port, strata_bin};

fn config(job: &str, target: &str) -> String {
    format!(
        "global: {{scrape_interval: 1s, scrape_timeout: 1s}}\nscrape_configs:\n- job_name: {job}\n  static_configs: [{{targets: ['{target}']}}]\n"
    )
}

async fn pools(api: &Api) -> Option<Vec<String>> {
    let (_, v) = api.get("/api/v1/targets", &[]).await.ok()?;
    let mut p: Vec<String> = v["data"]["activeTargets"]
        .as_array()?
        .iter()
        .filter_map(|t| t["scrapePool"].as_str().map(str::to_owned))
        .collect();
    p.sort();
    Some(p)
}

#[tokio::test]
async fn post_reload_rereads_the_config_file() -> Result<()> {
    let page = PageServer::start(std::sync::Arc::new(|_: &str| (200, "text/plain".to_owned(), "m 1\n".to_owned())))?;
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("prometheus.yml");
    std::fs::write(&file, config("first", &page.address()))?;
    let port = free_port();
    let _strata = Proc::spawn(
        "strata",
        Command::new(strata_bin()).args([
            "standalone",
            &format!("--config.file={}", file.display()),
            &format!("--storage.path={}", dir.path().join("data").display()),
            &format!("--web.listen-address=127.0.0.1:{port}"),
            "--web.enable-lifecycle",
        ]),
        &dir.path().join("strata.log"),
    )?;
    let api = Api::new(port);
    eventually("job first", Duration::from_secs(20), || {
        let api = api.clone();
        async move { (pools(&api).await? == ["first"]).then_some(()) }
    })
    .await?;
    let client = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}/-/reload");

    std::fs::write(&file, config("second", &page.address()))?;
    let r = client.post(&url).send().await?;
    assert_eq!(r.status().as_u16(), 200);
    eventually("job second", Duration::from_secs(20), || {
        let api = api.clone();
        async move { (pools(&api).await? == ["second"]).then_some(()) }
    })
    .await?;

    std::fs::write(&file, "scrape_configs:\n- job_name: x\n  scrape_interval: nonsense\n")?;
    let r = client.post(&url).send().await?;
    assert_eq!(r.status().as_u16(), 500);
    let body = r.text().await?;
    assert!(body.starts_with("failed to reload config: ") && body.contains(":3:"), "{body}");
    assert_eq!(pools(&api).await, Some(vec!["second".to_owned()]), "the running jobs stay");
    assert_eq!(client.get(&url).send().await?.status().as_u16(), 405, "GET is not a reload");
    Ok(())
}
