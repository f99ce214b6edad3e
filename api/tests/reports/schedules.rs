//! The schedule ticker on both backends: a due schedule makes exactly one report per due time (a second
//! round, or a second process, does not repeat it), and its delivery reaches a real local webhook
//! receiver, retried with backoff after failures and given up after the last attempt.

use crate::common::{Backend, TestEnv};
use crate::on_both_backends;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use chrono::{TimeDelta, Utc};
use meshlens_api::AppState;
use meshlens_api::reports::history;
use meshlens_api::schedules::db::{self, NewSchedule};
use meshlens_api::schedules::ticker::{deliver_due, run_due};
use meshlens_api::schedules::webhook::WebhookClient;
use meshlens_api::schedules::{Ticker, TickerOptions};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What the receiver got: (headers, JSON body) per request.
type Received = Arc<Mutex<Vec<(HeaderMap, serde_json::Value)>>>;

/// A webhook receiver on a loopback port that answers the first `failures` requests with 503.
async fn receiver(failures: usize) -> (String, Received) {
    #[derive(Clone)]
    struct Hook {
        received: Received,
        failures: usize,
    }
    async fn hook(State(hook): State<Hook>, headers: HeaderMap, body: String) -> StatusCode {
        let json = serde_json::from_str(&body).unwrap_or(serde_json::Value::Null);
        let mut received = hook.received.lock().expect("lock");
        received.push((headers, json));
        if received.len() <= hook.failures { StatusCode::SERVICE_UNAVAILABLE } else { StatusCode::NO_CONTENT }
    }
    let received = Received::default();
    let app = Router::new().route("/hook", post(hook)).with_state(Hook { received: Arc::clone(&received), failures });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await.ok() });
    (format!("http://{addr}/hook"), received)
}

fn schedule(name: &str, webhook_url: Option<String>, next_run: chrono::DateTime<Utc>) -> NewSchedule {
    NewSchedule {
        name: name.into(),
        cron: None,
        interval_seconds: Some(3600),
        window_seconds: 3600,
        policy: Some(r#"{"mtls_min_percent": 99.9}"#.into()),
        formats: r#"["json","md"]"#.into(),
        webhook_url,
        next_run,
        created_at: Utc::now(),
    }
}

fn fast(max_attempts: u32) -> TickerOptions {
    TickerOptions {
        poll: Duration::from_millis(50),
        max_attempts,
        backoff_base: Duration::from_millis(1),
        backoff_max: Duration::from_millis(5),
        request_timeout: Duration::from_secs(5),
    }
}

async fn scheduled_runs(state: &AppState) -> Vec<i64> {
    let (page, _) = history::list(state.store.catalog(), 100, 0).await.expect("list");
    page.iter().filter(|m| m.schedule_id.is_some()).map(|m| m.id).collect()
}

async fn a_due_schedule_runs_once_and_is_delivered(backend: Backend) {
    let env = TestEnv::new(backend).await;
    let state = env.state(30, 12).await;
    let catalog = state.store.catalog();
    let (url, received) = receiver(1).await;
    let due = Utc::now() - TimeDelta::seconds(5);
    let id = db::insert(catalog, &schedule("hourly", Some(url.clone()), due)).await.expect("insert");

    run_due(&state, Utc::now()).await.expect("run");
    run_due(&state, Utc::now()).await.expect("second round: nothing due");
    let runs = scheduled_runs(&state).await;
    assert_eq!(runs.len(), 1, "one report per due time: {runs:?}");
    let row = db::get(catalog, id).await.expect("get").expect("schedule");
    assert_eq!(row.last_report_id, Some(runs[0]));
    assert_eq!(row.next_run, (due + TimeDelta::hours(1)).timestamp_micros(), "next period, same phase");
    let stored = history::get(catalog, runs[0]).await.expect("get").expect("report");
    assert_eq!(stored.meta.schedule_id, Some(id));
    assert_eq!(stored.meta.passed, Some(false), "30 of 42 mutual fails 99.9%");
    assert_eq!(stored.report.window.end.timestamp_micros(), due.timestamp_micros(), "the window ends at the due time");

    // Committing the same run again (another process that was slower) changes nothing.
    let again = history::NewRow::of(&stored.report, Some(id)).expect("row");
    let lost = db::commit_run(catalog, &row, due.timestamp_micros(), due + TimeDelta::hours(2), &again, Utc::now())
        .await
        .expect("commit");
    assert_eq!(lost, None);
    assert_eq!(scheduled_runs(&state).await.len(), 1);

    // Delivery: the first attempt gets a 503, the retry succeeds.
    let client = WebhookClient::new(Duration::from_secs(5));
    let options = fast(5);
    deliver_due(&state, &client, &options, Utc::now()).await.expect("first attempt");
    let pending = db::deliveries(catalog, id, 10).await.expect("deliveries");
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].status, "pending");
    assert_eq!(pending[0].attempts, 1);
    assert_eq!(pending[0].last_status, Some(503));
    assert!(pending[0].last_error.as_deref().is_some_and(|e| e.contains("503")), "{:?}", pending[0].last_error);
    tokio::time::sleep(Duration::from_millis(20)).await;
    deliver_due(&state, &client, &options, Utc::now()).await.expect("retry");
    let delivered = db::deliveries(catalog, id, 10).await.expect("deliveries");
    assert_eq!(delivered[0].status, "delivered", "{delivered:?}");
    assert_eq!(delivered[0].attempts, 2);
    assert_eq!(delivered[0].last_status, Some(204));
    assert!(delivered[0].delivered_at.is_some() && delivered[0].next_attempt_at.is_none());

    let received = received.lock().expect("lock").clone();
    assert_eq!(received.len(), 2);
    let (headers, payload) = &received[1];
    assert_eq!(headers["x-meshlens-delivery"], delivered[0].id.to_string().as_str());
    assert_eq!(headers["x-meshlens-attempt"], "2");
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(payload["event"], "report");
    assert_eq!(payload["schedule"]["name"], "hourly");
    assert_eq!(payload["report"]["id"], runs[0]);
    assert_eq!(payload["report"]["passed"], false);
    assert_eq!(payload["report"]["summary"]["mtls"]["plaintext"], 12);
    assert_eq!(payload["renderings"]["json"]["summary"]["mtls"]["mutual"], 30);
    assert!(payload["renderings"]["md"].as_str().is_some_and(|md| md.starts_with("# meshlens compliance report")));
    assert!(payload["renderings"].get("html").is_none(), "only the schedule's formats");
    drop(state);
    env.cleanup().await;
}

async fn deliveries_give_up_after_the_last_attempt(backend: Backend) {
    let env = TestEnv::new(backend).await;
    let state = env.state(0, 0).await;
    let catalog = state.store.catalog();
    // Nothing listens there: connection refused every time.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}/hook", closed.local_addr().expect("addr"));
    drop(closed);
    let id =
        db::insert(catalog, &schedule("doomed", Some(url), Utc::now() - TimeDelta::seconds(1))).await.expect("insert");
    run_due(&state, Utc::now()).await.expect("run");
    let client = WebhookClient::new(Duration::from_secs(2));
    let options = fast(3);
    for _ in 0..5 {
        deliver_due(&state, &client, &options, Utc::now()).await.expect("attempt");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let deliveries = db::deliveries(catalog, id, 10).await.expect("deliveries");
    assert_eq!(deliveries.len(), 1);
    assert_eq!(deliveries[0].status, "failed");
    assert_eq!(deliveries[0].attempts, 3, "max_attempts, no more");
    assert!(
        deliveries[0].last_error.as_deref().is_some_and(|e| e.to_lowercase().contains("connect")),
        "{deliveries:?}"
    );
    assert_eq!(deliveries[0].last_status, None);
    drop(state);
    env.cleanup().await;
}

async fn the_ticker_task_runs_and_stops(backend: Backend) {
    let env = TestEnv::new(backend).await;
    let state = env.state(5, 0).await;
    let catalog = state.store.catalog();
    let (url, received) = receiver(0).await;
    let id = db::insert(catalog, &schedule("soon", Some(url), Utc::now() + TimeDelta::milliseconds(300)))
        .await
        .expect("insert");
    let ticker = Ticker::spawn(state.clone(), fast(3));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let deliveries = db::deliveries(catalog, id, 10).await.expect("deliveries");
        if deliveries.first().is_some_and(|d| d.status == "delivered") {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "not delivered in time: {deliveries:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::timeout(Duration::from_secs(5), ticker.stop()).await.expect("the ticker stops promptly");
    assert_eq!(received.lock().expect("lock").len(), 1);
    assert_eq!(scheduled_runs(&state).await.len(), 1);
    drop(state);
    env.cleanup().await;
}

on_both_backends!(
    a_due_schedule_runs_once_and_is_delivered,
    deliveries_give_up_after_the_last_attempt,
    the_ticker_task_runs_and_stops
);
