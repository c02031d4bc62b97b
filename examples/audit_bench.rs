//! Audit-log benchmark (not a test): durable appends per second, one by one and in group
//! commits, `verify` time over a large log, and inclusion-proof latency at that size.
//!
//! Run in release mode through `bench/audit.sh`, or directly:
//! `cargo run --release --example audit_bench -- DATABASE_URL ENTRIES`
//! (for example `sqlite:///tmp/bench.db?mode=rwc 1000000`, or a fresh PostgreSQL database).

use std::time::{Duration, Instant};

use radsight::audit::verify::{VerifyOptions, verify_log};
use radsight::audit::{Action, AuditEvent, AuditLog, Outcome, tree};
use radsight::configuration::DatabaseSettings;

fn event(i: u64) -> AuditEvent {
    AuditEvent::new(Action::HookCall, Outcome::Success)
        .actor(Some("https://ehr.example.org"), Some("Practitioner/bench"))
        .patient(Some(format!("Patient/p{}", i % 5000)))
        .entity("Card", format!("00000000-0000-4000-8000-{i:012}"))
        .detail("hook", "order-select")
        .detail("cards", 3)
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize].as_secs_f64() * 1000.0
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let url = args.get(1).cloned().unwrap_or_else(|| "sqlite:///tmp/radsight-audit-bench.db?mode=rwc".into());
    let total: u64 = args.get(2).and_then(|n| n.parse().ok()).unwrap_or(100_000);
    let db = radsight::store::connect(&DatabaseSettings { url: url.clone(), max_connections: 4, acquire_timeout_ms: 30_000 }).await?;
    radsight::store::migrate(&db).await?;
    let log = AuditLog::default();
    println!("backend: {}", if url.starts_with("sqlite") { "sqlite (WAL, synchronous=FULL)" } else { "postgresql" });

    // 1. One durable commit per append, as a hook call does.
    let single = 2000u64;
    let mut lat = Vec::with_capacity(single as usize);
    let started = Instant::now();
    for i in 0..single {
        let t = Instant::now();
        log.record(&db, event(i)).await?;
        lat.push(t.elapsed());
    }
    let secs = started.elapsed().as_secs_f64();
    lat.sort();
    println!(
        "single appends: {single} in {secs:.2}s = {:.0}/s, p50 {:.2} ms, p99 {:.2} ms",
        single as f64 / secs,
        percentile(&lat, 0.5),
        percentile(&lat, 0.99)
    );

    // 2. Group commit: 100 entries per transaction.
    let grouped = 20_000u64;
    let started = Instant::now();
    let mut i = single;
    while i < single + grouped {
        let mut txn = log.begin(&db).await?;
        for _ in 0..100 {
            txn.append(event(i)).await?;
            i += 1;
        }
        txn.commit().await?;
    }
    let secs = started.elapsed().as_secs_f64();
    println!("group commit (100/txn): {grouped} in {secs:.2}s = {:.0}/s", grouped as f64 / secs);

    // 3. Fill up to `total` entries in large batches, then verify and prove.
    let started = Instant::now();
    while i < total {
        let mut txn = log.begin(&db).await?;
        for _ in 0..5000.min(total - i) {
            txn.append(event(i)).await?;
            i += 1;
        }
        txn.commit().await?;
    }
    println!("filled to {i} entries in {:.1}s", started.elapsed().as_secs_f64());

    let started = Instant::now();
    let report = verify_log(&db, &VerifyOptions::default()).await?;
    println!(
        "verify: {} entries in {:.1}s ({:.0} entries/s)",
        report.entries,
        started.elapsed().as_secs_f64(),
        report.entries as f64 / started.elapsed().as_secs_f64()
    );

    let mut lat = Vec::new();
    let mut x = 88172645463325252u64; // xorshift: reproducible random leaves
    for _ in 0..500 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let index = x % i;
        let t = Instant::now();
        let (_leaf, proof) = tree::inclusion_proof(&db, index, i).await?;
        let _root = tree::root(&db, i).await?;
        lat.push(t.elapsed());
        assert!(!proof.is_empty());
    }
    lat.sort();
    println!(
        "inclusion proof + root at {i} entries: p50 {:.2} ms, p99 {:.2} ms (500 random leaves)",
        percentile(&lat, 0.5),
        percentile(&lat, 0.99)
    );
    Ok(())
}
