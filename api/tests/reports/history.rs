//! The report history in SQL on both backends: stored reports read back identical, list newest first
//! with paging, and a new report's trend compares with the previous stored one.

use crate::common::{Backend, TestEnv, records};
use crate::on_both_backends;
use chrono::{TimeDelta, Utc};
use meshlens_analyzer::traffic::Window;
use meshlens_api::reports::{Policy, generate, history};

async fn stored_reports_read_back_and_list_newest_first(backend: Backend) {
    let env = TestEnv::new(backend).await;
    let state = env.state(30, 12).await;
    let catalog = state.store.catalog();
    assert!(history::latest(catalog, None).await.expect("latest").is_none());
    let window = meshlens_api::analysis::window_until_now(Some(TimeDelta::hours(1)));
    let policy = Policy::parse("p", "mtls_min_percent: 99.9").expect("policy");
    let mut ids = Vec::new();
    for _ in 0..3 {
        let report = generate(&state, Some(catalog), window, Some(&policy), None).await.expect("report");
        ids.push(history::insert(catalog, &report, None).await.expect("insert"));
    }
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    let stored = history::get(catalog, ids[1]).await.expect("get").expect("exists");
    assert_eq!(stored.meta.id, ids[1]);
    assert_eq!(stored.meta.passed, Some(false));
    assert_eq!(stored.meta.summary, stored.report.summary);
    assert_eq!(stored.meta.config_hash, stored.report.config.hash);
    assert_eq!(stored.meta.window.start, stored.report.window.start);
    assert_eq!(stored.report.trend.as_ref().map(|t| t.previous_id), Some(ids[0]));
    // Microsecond timestamps survive the round trip exactly.
    assert_eq!(stored.meta.created_at, stored.report.generated_at);

    let (page, total) = history::list(catalog, 2, 0).await.expect("list");
    assert_eq!(total, 3);
    assert_eq!(page.iter().map(|m| m.id).collect::<Vec<_>>(), [ids[2], ids[1]]);
    let (rest, _) = history::list(catalog, 2, 2).await.expect("page 2");
    assert_eq!(rest.iter().map(|m| m.id).collect::<Vec<_>>(), [ids[0]]);
    assert!(history::get(catalog, 999_999).await.expect("get").is_none());
    assert_eq!(history::latest(catalog, None).await.expect("latest").map(|s| s.meta.id), Some(ids[2]));
    assert!(history::latest(catalog, Some(42)).await.expect("latest of a schedule").is_none());
    drop(state);
    env.cleanup().await;
}

async fn trend_shows_the_change_since_the_previous_report(backend: Backend) {
    let env = TestEnv::new(backend).await;
    let state = env.state(0, 0).await;
    let now = Utc::now();
    // An hour and a half ago: 30 mutual and 12 plaintext requests; in the last hour only mutual ones.
    let mut older = records(now - TimeDelta::minutes(90), 30, 12);
    older.extend(records(now - TimeDelta::minutes(10), 50, 0));
    state.store.append_requests(older).await.expect("append");
    let catalog = state.store.catalog();

    let before = Window { start: now - TimeDelta::hours(2), end: now - TimeDelta::hours(1) };
    let first = generate(&state, Some(catalog), before, None, None).await.expect("first report");
    assert!(first.trend.is_none(), "nothing to compare with");
    let first_id = history::insert(catalog, &first, None).await.expect("store first");

    let after = Window { start: now - TimeDelta::hours(1), end: now };
    let second = generate(&state, Some(catalog), after, None, None).await.expect("second report");
    let trend = second.trend.as_ref().expect("trend against the first");
    assert_eq!(trend.previous_id, first_id);
    let previous = trend.mtls_percent.previous.expect("previous percent");
    assert!((previous - 3000.0 / 42.0).abs() < 1e-9, "{previous}");
    assert_eq!(trend.mtls_percent.current, Some(100.0));
    assert!((trend.mtls_percent.delta.expect("delta") - (100.0 - 3000.0 / 42.0)).abs() < 1e-9);
    assert_eq!((trend.plaintext_requests.previous, trend.plaintext_requests.current), (Some(12), Some(0)));
    assert_eq!(trend.plaintext_requests.delta, Some(-12));
    assert!(trend.findings_error.delta.expect("error delta") < 0, "{trend:?}");
    assert!(
        trend.resolved_findings.iter().any(|k| k.code == "ML2001" && k.resource == "Service payments/ledger"),
        "{:?}",
        trend.resolved_findings
    );
    assert!(trend.new_findings.iter().all(|k| k.code != "ML2001"));
    assert!(!trend.config_changed);
    drop(state);
    env.cleanup().await;
}

on_both_backends!(stored_reports_read_back_and_list_newest_first, trend_shows_the_change_since_the_previous_report);
