//! Crash safety with a real process: a writer child is SIGKILLed at random moments, several times; after
//! each restart every acknowledged record must be in the store exactly once.

mod common;

use common::{Backend, TestEnv, scalar};
use meshlens_store::arrow::array::{AsArray, Int64Array};
use meshlens_store::{Store, StoreConfig};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

const ROUNDS: u64 = 5;
const ROWS_PER_BATCH: usize = 250;
/// Batch ids of round `n` start at `n * BATCH_SPACE`, so rounds never reuse an id.
const BATCH_SPACE: u64 = 1_000_000;

/// Runs one writer child for a random time, kills it with SIGKILL and returns the batches it acked.
fn run_and_kill(env: &TestEnv, first_batch: u64) -> BTreeSet<u64> {
    let mut command = Command::new(env!("CARGO_BIN_EXE_meshlens-store-crash-writer"));
    command.arg(env.dir.path()).arg(first_batch.to_string()).arg(ROWS_PER_BATCH.to_string());
    if let Some(url) = &env.database_url {
        command.arg(url);
    }
    let stderr_path = env.dir.path().join(format!("writer-{first_batch}.stderr"));
    let stderr = std::fs::File::create(&stderr_path).expect("stderr file");
    let mut child = command.stdout(Stdio::piped()).stderr(stderr).spawn().expect("spawn crash writer");
    let stdout = child.stdout.take().expect("stdout");
    let reader = std::thread::spawn(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .filter_map(|line| line.strip_prefix("acked ").and_then(|b| b.parse::<u64>().ok()))
            .collect::<BTreeSet<u64>>()
    });
    std::thread::sleep(Duration::from_millis(fastrand::u64(400..2000)));
    let still_running = child.try_wait().expect("child status").is_none();
    child.kill().expect("SIGKILL");
    child.wait().expect("reap");
    let acked = reader.join().expect("reader thread");
    assert!(
        still_running,
        "the writer exited by itself before the kill: {}",
        std::fs::read_to_string(&stderr_path).unwrap_or_default()
    );
    acked
}

async fn acked_batches_survive_sigkill(backend: Backend) {
    let env = TestEnv::new(backend).await;
    let mut acked = BTreeSet::new();
    for round in 0..ROUNDS {
        let env_ref = &env;
        let round_acked = tokio::task::block_in_place(|| run_and_kill(env_ref, round * BATCH_SPACE));
        acked.extend(round_acked);
    }
    assert!(acked.len() >= 10, "the writer acknowledged too little to test anything: {}", acked.len());

    let store = Store::open(StoreConfig { ..env.config() }).await.expect("open after the crashes");
    let total = scalar(&store, "SELECT count(*) FROM requests").await;
    let distinct = scalar(&store, "SELECT count(DISTINCT request_id) FROM requests").await;
    assert_eq!(total, distinct, "no record may be stored twice");

    let out = store
        .sql(
            "SELECT CAST(split_part(substr(request_id, 2), '-', 1) AS BIGINT) AS batch, count(*) AS n \
              FROM requests GROUP BY 1",
        )
        .await
        .expect("per-batch counts");
    let mut per_batch = BTreeMap::new();
    for batch in &out.batches {
        let ids = batch.column(0).as_primitive::<meshlens_store::arrow::datatypes::Int64Type>();
        let counts: &Int64Array = batch.column(1).as_primitive();
        for (id, n) in ids.iter().zip(counts.iter()) {
            per_batch.insert(id.expect("batch id") as u64, n.expect("count"));
        }
    }
    for batch in &acked {
        assert_eq!(per_batch.get(batch).copied(), Some(ROWS_PER_BATCH as i64), "acknowledged batch {batch}");
    }
    // Batches in flight at a kill may be stored (durable but not yet acknowledged), but only whole.
    for (batch, n) in &per_batch {
        assert_eq!(*n, ROWS_PER_BATCH as i64, "batch {batch} is whole or absent");
    }
    eprintln!(
        "{backend:?}: {} batches acknowledged, {} stored, recovery of the last open: {:?}",
        acked.len(),
        per_batch.len(),
        store.recovery_report()
    );
    store.close().await.expect("close");
    env.cleanup().await;
}

on_both_backends!(acked_batches_survive_sigkill);
