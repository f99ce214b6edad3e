//! Test support for the store's crash test (`tests/crash.rs`), not a user tool: appends batches of
//! request records with recognisable ids from several tasks and prints `acked <batch>` once a batch is
//! acknowledged (durable). The test SIGKILLs it at a random moment and checks that every acknowledged
//! batch is in the store exactly once after recovery.
//!
//! Usage: meshlens-store-crash-writer DATA_DIR FIRST_BATCH ROWS_PER_BATCH [DATABASE_URL]

use meshlens_store::synth::RequestGenerator;
use meshlens_store::{Store, StoreConfig, StoreError};
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

/// Appending tasks; several, so that group commit and concurrent flushes are part of what gets killed.
const TASKS: u64 = 4;

fn usage() -> ! {
    eprintln!("usage: meshlens-store-crash-writer DATA_DIR FIRST_BATCH ROWS_PER_BATCH [DATABASE_URL]");
    std::process::exit(2)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 3 {
        usage();
    }
    let first_batch: u64 = args[1].parse().unwrap_or_else(|_| usage());
    let rows: usize = args[2].parse().unwrap_or_else(|_| usage());
    let config = StoreConfig {
        database_url: args.get(3).cloned(),
        // Small flushes and segments, so kills land in flushes, segment rolls and WAL deletion too.
        flush_rows: 2_000,
        flush_interval: Duration::from_millis(100),
        wal_segment_bytes: 256 << 10,
        ..StoreConfig::new(&args[0])
    };
    let store = match Store::open(config).await {
        Ok(store) => Arc::new(store),
        Err(e) => {
            eprintln!("open failed: {e}");
            std::process::exit(1)
        }
    };
    let report = store.recovery_report();
    eprintln!(
        "recovered: {} rows replayed, {} torn tails, {} quarantined",
        report.rows_replayed,
        report.torn_tails.len(),
        report.quarantined.len()
    );
    let tasks: Vec<_> = (0..TASKS)
        .map(|task| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                let mut generator = RequestGenerator::new(first_batch + task, chrono::Utc::now(), 10_000);
                let mut batch = first_batch + task;
                loop {
                    let mut records = generator.batch(rows);
                    for (i, r) in records.iter_mut().enumerate() {
                        r.request_id = Some(format!("b{batch}-r{i}"));
                    }
                    match store.append_requests(records).await {
                        Ok(()) => {
                            let mut out = std::io::stdout().lock();
                            // The test reads this line as the acknowledgement; if stdout is gone, stop.
                            if writeln!(out, "acked {batch}").and_then(|()| out.flush()).is_err() {
                                return;
                            }
                            batch += TASKS;
                        }
                        Err(StoreError::Busy { .. }) => tokio::time::sleep(Duration::from_millis(5)).await,
                        Err(e) => {
                            eprintln!("append failed: {e}");
                            std::process::exit(1)
                        }
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        if task.await.is_err() {
            std::process::exit(1);
        }
    }
}
