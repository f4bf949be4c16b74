//! Against a real `nats-server` with JetStream: acknowledged publishing,
//! durable shard consumers that resume, replicas that each see everything,
//! poison messages, and a server that goes away.

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use strata_common::Telemetry;
use strata_ingest::stream::{connect, ensure_stream};
use strata_ingest::{JetStreamAppender, NatsConfig, NatsSettings, ShardConsumer};
use strata_model::{Append, AppendError, AppendSummary, BoxFuture, Labels, Sample, WriteBatch};
use tokio::sync::watch;

struct NatsServer(Child);

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("port")
}

fn nats_binary() -> &'static str {
    if std::path::Path::new("/usr/sbin/nats-server").exists() { "/usr/sbin/nats-server" } else { "nats-server" }
}

async fn start_nats(port: u16, dir: &std::path::Path) -> NatsServer {
    let child = Command::new(nats_binary())
        .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("nats-server is installed (scripts/install-test-deps.sh)");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nats-server did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    NatsServer(child)
}

/// Records what reaches a sink: (labels, t) → how many times.
#[derive(Default)]
struct Recorder(Mutex<HashMap<(String, i64), usize>>);

impl Recorder {
    fn total(&self) -> usize {
        self.0.lock().unwrap().len()
    }
    fn duplicates(&self) -> usize {
        self.0.lock().unwrap().values().filter(|&&n| n > 1).count()
    }
}

impl Append for Recorder {
    fn append(&self, batch: WriteBatch) -> BoxFuture<'_, Result<AppendSummary, AppendError>> {
        let mut m = self.0.lock().unwrap();
        for s in &batch.series {
            for p in &s.samples {
                *m.entry((s.labels.to_string(), p.t)).or_default() += 1;
            }
        }
        Box::pin(async { Ok(AppendSummary::default()) })
    }
}

fn batch(round: i64) -> WriteBatch {
    let mut b = WriteBatch::new("anonymous");
    for i in 0..10 {
        let l = Labels::from_pairs([("__name__", "m".to_owned()), ("i", i.to_string())]).unwrap();
        b.push(l, Sample::new(round * 1000, (round * 10 + i) as f64));
    }
    b
}

async fn consume_until(
    js: &async_nats::jetstream::Context,
    settings: &NatsSettings,
    instance: &str,
    sink: Arc<Recorder>,
    want: usize,
) {
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = Vec::new();
    for shard in 0..settings.shards {
        let c = ShardConsumer::open(js, settings, instance, shard, sink.clone()).await.unwrap();
        tasks.push(tokio::spawn(c.run(stop_rx.clone())));
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while sink.total() < want && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A little longer, to catch duplicates arriving late.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _ = stop_tx.send(true);
    for t in tasks {
        let _ = t.await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_batches_reach_every_replica_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let server = start_nats(port, dir.path()).await;
    let mut cfg = NatsConfig::with_url(format!("nats://127.0.0.1:{port}"));
    cfg.shards = 4;
    let settings = cfg.validate().unwrap();
    let js = connect(&settings).await.unwrap();
    ensure_stream(&js, &settings).await.unwrap();
    let appender = JetStreamAppender::new(js.clone(), settings.clone(), &Telemetry::empty());

    for round in 0..20 {
        let s = appender.append(batch(round)).await.unwrap();
        assert_eq!(s.accepted, 10);
    }
    // A poison message on a shard subject is terminated, not retried forever.
    js.publish(settings.subject(0), bytes::Bytes::from_static(b"\xff\xfe not a batch")).await.unwrap().await.unwrap();

    let first = Arc::new(Recorder::default());
    consume_until(&js, &settings, "agg-0", first.clone(), 200).await;
    assert_eq!(first.total(), 200, "every acknowledged sample arrives");
    assert_eq!(first.duplicates(), 0);

    // The same durable consumers resume after a restart: only new data.
    for round in 20..25 {
        appender.append(batch(round)).await.unwrap();
    }
    let resumed = Arc::new(Recorder::default());
    consume_until(&js, &settings, "agg-0", resumed.clone(), 50).await;
    assert_eq!(resumed.total(), 50, "only what was not acknowledged before");
    assert_eq!(resumed.duplicates(), 0);

    // Another replica has its own consumers and sees everything.
    let replica = Arc::new(Recorder::default());
    consume_until(&js, &settings, "agg-1", replica.clone(), 250).await;
    assert_eq!(replica.total(), 250);

    // With the server gone, an append fails instead of being acknowledged.
    drop(server);
    let started = Instant::now();
    let r = tokio::time::timeout(Duration::from_secs(30), appender.append(batch(99))).await;
    assert!(matches!(r, Ok(Err(AppendError::Unavailable(_)))), "append without a server must fail");
    assert!(started.elapsed() < Duration::from_secs(30));
}

/// The KV bucket (created by hand on Debian's 2.9.10) does compare-and-set:
/// of two writers racing on one revision exactly one wins, and a reopened
/// bucket sees the value.
#[tokio::test]
async fn kv_bucket_compare_and_set_against_nats() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _server = start_nats(port, dir.path()).await;
    let settings = NatsConfig::with_url(format!("nats://127.0.0.1:{port}")).validate().unwrap();
    let js = connect(&settings).await.unwrap();
    let bucket = strata_ingest::kv::Bucket::open(&js, "strata-ha", 1).await.unwrap();
    assert_eq!(bucket.get("k").await.unwrap(), None);
    let r1 = bucket.compare_and_set("k", bytes::Bytes::from_static(b"a"), None).await.unwrap().expect("created");
    assert_eq!(bucket.compare_and_set("k", bytes::Bytes::from_static(b"b"), None).await.unwrap(), None, "exists");
    let r2 = bucket.compare_and_set("k", bytes::Bytes::from_static(b"c"), Some(r1)).await.unwrap().expect("won");
    assert_eq!(bucket.compare_and_set("k", bytes::Bytes::from_static(b"d"), Some(r1)).await.unwrap(), None, "stale");
    let again = strata_ingest::kv::Bucket::open(&js, "strata-ha", 1).await.unwrap();
    let v = again.get("k").await.unwrap().expect("value");
    assert_eq!((v.value.as_ref(), v.revision), (&b"c"[..], r2));
}
