//! Analysis results are shared between requests for the same window and scope while fresh, never across
//! scopes, and recomputed once stale (`meshlens_api::analysis::cache`).

use crate::common::{Backend, Env, get, records};
use chrono::Utc;
use http::StatusCode;
use meshlens_api::{ApiLimits, Role};
use serde_json::Value;
use std::time::Duration;

async fn plaintext(router: &axum::Router, uri: &str, token: &str) -> Value {
    let answer = get(router, uri, token).await;
    assert_eq!(answer.status, StatusCode::OK, "{uri}: {}", String::from_utf8_lossy(&answer.body));
    answer.json()
}

fn total_requests(graph: &Value) -> u64 {
    graph["items"].as_array().expect("items").iter().map(|e| e["requests"].as_u64().expect("requests")).sum()
}

fn limits(fresh: u64, stale: u64) -> ApiLimits {
    ApiLimits {
        analysis_fresh_for: Duration::from_secs(fresh),
        analysis_stale_for: Duration::from_secs(stale),
        ..ApiLimits::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fresh_results_are_shared_and_stale_ones_recomputed() {
    let env = Env::new(Backend::Sqlite).await;
    let token = env.token(Role::Viewer, None).await;
    let shop = env.token(Role::Viewer, Some("shop")).await;
    // The limits are read per request and the cache is shared by every clone of the state, so each phase
    // below routes through the same cache under other ages.
    let router = |fresh, stale| meshlens_api::router(env.state.clone().with_limits(limits(fresh, stale)));
    let fresh = router(3600, 3600);

    let first = plaintext(&fresh, "/api/v1/graph?window=1h", &token).await;
    let before = total_requests(&first);
    // Scoped first, so that the unscoped result cannot leak into it.
    let scoped = plaintext(&fresh, "/api/v1/graph?window=1h", &shop).await;
    assert!(total_requests(&scoped) < before, "{scoped}");

    env.store.append_requests(records(Utc::now())).await.expect("append");
    let cached = plaintext(&fresh, "/api/v1/graph?window=1h", &token).await;
    assert_eq!(total_requests(&cached), before, "a fresh result is reused");
    assert_eq!(cached["window"], first["window"], "and says which window it covers");

    // A fixed range is its own key: it runs now and sees the new records.
    let uri = format!("/api/v1/graph?start={}&window=1h", (Utc::now() - chrono::TimeDelta::hours(1)).to_rfc3339());
    let fixed = plaintext(&fresh, &uri.replace('+', "%2B"), &token).await;
    assert!(total_requests(&fixed) > before, "{fixed}");

    // Stale: answered at once from the old result while one background run replaces it.
    let stale_while_refreshing = router(0, 3600);
    let stale = plaintext(&stale_while_refreshing, "/api/v1/graph?window=1h", &token).await;
    assert_eq!(total_requests(&stale), before);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let refreshed = loop {
        let answer = plaintext(&fresh, "/api/v1/graph?window=1h", &token).await;
        if total_requests(&answer) > before {
            break answer;
        }
        assert!(tokio::time::Instant::now() < deadline, "the background refresh never replaced the result");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_ne!(refreshed["window"], first["window"]);

    // Too old to serve: recomputed before answering.
    env.store.append_requests(records(Utc::now())).await.expect("append");
    let recomputed = plaintext(&router(0, 0), "/api/v1/graph?window=1h", &token).await;
    assert!(total_requests(&recomputed) > total_requests(&refreshed), "{recomputed}");
    env.cleanup().await;
}
