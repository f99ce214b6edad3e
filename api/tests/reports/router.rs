//! `/api/v1/reports` and `/api/v1/schedules` through `oneshot`: every endpoint, role and namespace scope,
//! and every caller mistake answered 4xx with the error body.

use crate::common::{Backend, TestEnv};
use axum::Router;
use axum::body::Body;
use http::{Method, Request, StatusCode, header};
use http_body_util::BodyExt;
use meshlens_api::{AppState, Caller, Role};
use serde_json::{Value, json};
use tower::ServiceExt;

fn app(state: &AppState, caller: Caller) -> Router {
    let v1 = meshlens_api::reports::routes().merge(meshlens_api::schedules::routes());
    Router::new().nest("/api/v1", v1).with_state(state.clone()).layer(axum::Extension(caller))
}

fn admin() -> Caller {
    Caller { role: Role::Admin, namespace: None }
}

fn viewer() -> Caller {
    Caller { role: Role::Viewer, namespace: None }
}

fn scoped(namespace: &str) -> Caller {
    Caller { role: Role::Viewer, namespace: Some(namespace.into()) }
}

struct Answer {
    status: StatusCode,
    content_type: String,
    location: Option<String>,
    body: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }

    /// The `error.code` of an error answer, checking its shape.
    fn error_code(&self) -> String {
        let json = self.json();
        assert!(json["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{json}");
        json["error"]["code"].as_str().expect("error code").to_owned()
    }
}

async fn call(app: Router, method: Method, uri: &str, body: Option<Value>) -> Answer {
    let mut request = Request::builder().method(method).uri(uri);
    let body = match body {
        Some(json) => {
            request = request.header(header::CONTENT_TYPE, "application/json");
            Body::from(json.to_string())
        }
        None => Body::empty(),
    };
    let response = app.oneshot(request.body(body).expect("request")).await.expect("infallible");
    let status = response.status();
    let header = |name| response.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let content_type = header(header::CONTENT_TYPE).unwrap_or_default();
    let location = header(header::LOCATION);
    let bytes = response.into_body().collect().await.expect("body").to_bytes();
    Answer { status, content_type, location, body: String::from_utf8_lossy(&bytes).into_owned() }
}

async fn raw(app: Router, method: Method, uri: &str, body: &'static str) -> Answer {
    let request = Request::builder()
        .method(method)
        .uri(uri)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body))
        .expect("request");
    let response = app.oneshot(request).await.expect("infallible");
    let status = response.status();
    let bytes = response.into_body().collect().await.expect("body").to_bytes();
    Answer { status, content_type: String::new(), location: None, body: String::from_utf8_lossy(&bytes).into_owned() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_endpoints() {
    let env = TestEnv::new(Backend::Sqlite).await;
    let state = env.state(30, 12).await;

    // Making a report writes history: viewers may not.
    let denied = call(app(&state, viewer()), Method::POST, "/api/v1/reports", None).await;
    assert_eq!(denied.status, StatusCode::FORBIDDEN);
    assert_eq!(denied.error_code(), "forbidden");

    let policy = json!({"mtls_min_percent": 99.9, "max_findings": {"error": 0}});
    let created =
        call(app(&state, admin()), Method::POST, "/api/v1/reports", Some(json!({"window": "1h", "policy": policy})))
            .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let body = created.json();
    let id = body["id"].as_i64().expect("id");
    assert_eq!(created.location.as_deref(), Some(format!("/api/v1/reports/{id}").as_str()));
    assert_eq!(body["passed"], json!(false));
    assert_eq!(body["summary"]["mtls"]["plaintext"], json!(12));
    // No body: defaults (24h window, no policy).
    let second = call(app(&state, admin()), Method::POST, "/api/v1/reports", None).await;
    assert_eq!(second.status, StatusCode::CREATED, "{}", second.body);
    let second_id = second.json()["id"].as_i64().expect("id");
    assert_eq!(second.json()["passed"], Value::Null);

    // Caller mistakes.
    for (body, needle) in [
        (json!({"window": "yesterday"}), "window"),
        (json!({"window": "0s"}), "window"),
        (json!({"policy": {"mtls_min_percent": 101}}), "between 0 and 100"),
        (json!({"policy": {"max_findings": {"errors": 0}}}), "max_findings.errors"),
        (json!({"policy": "mtls_min_percent: [1]"}), "policy:1"),
        (json!({"windows": "1h"}), "unknown field `windows`"),
    ] {
        let answer = call(app(&state, admin()), Method::POST, "/api/v1/reports", Some(body.clone())).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{body}: {}", answer.body);
        assert_eq!(answer.error_code(), "bad_request");
        assert!(answer.json()["error"]["message"].as_str().unwrap_or("").contains(needle), "{body}: {}", answer.body);
    }
    let not_json = raw(app(&state, admin()), Method::POST, "/api/v1/reports", "{window").await;
    assert_eq!(not_json.status, StatusCode::BAD_REQUEST);

    // History: viewers read it, newest first, paginated.
    let list = call(app(&state, viewer()), Method::GET, "/api/v1/reports?limit=1", None).await;
    assert_eq!(list.status, StatusCode::OK, "{}", list.body);
    let page = list.json();
    assert_eq!(page["total"], json!(2));
    assert_eq!(page["reports"].as_array().map(Vec::len), Some(1));
    assert_eq!(page["reports"][0]["id"], json!(second_id));
    let next = call(app(&state, viewer()), Method::GET, "/api/v1/reports?limit=1&offset=1", None).await.json();
    assert_eq!(next["reports"][0]["id"], json!(id));
    for bad in
        ["/api/v1/reports?limit=0", "/api/v1/reports?limit=501", "/api/v1/reports?limit=x", "/api/v1/reports?sort=id"]
    {
        let answer = call(app(&state, viewer()), Method::GET, bad, None).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{bad}: {}", answer.body);
        assert_eq!(answer.error_code(), "bad_request");
    }

    // One report in each rendering, with its content type.
    for (format, content_type, marker) in [
        ("json", "application/json", "\"format_version\""),
        ("html", "text/html; charset=utf-8", "<!DOCTYPE html>"),
        ("md", "text/markdown; charset=utf-8", "# meshlens compliance report"),
        ("csv", "text/csv; charset=utf-8", "kind,namespace,source"),
    ] {
        let answer =
            call(app(&state, viewer()), Method::GET, &format!("/api/v1/reports/{id}?format={format}"), None).await;
        assert_eq!(answer.status, StatusCode::OK, "{format}: {}", answer.body);
        assert_eq!(answer.content_type, content_type);
        assert!(answer.body.contains(marker), "{format}");
    }
    let default = call(app(&state, viewer()), Method::GET, &format!("/api/v1/reports/{id}"), None).await;
    assert_eq!(default.content_type, "application/json");
    assert_eq!(default.json()["policy"]["passed"], json!(false));
    let html = call(app(&state, viewer()), Method::GET, &format!("/api/v1/reports/{id}?format=html"), None).await;
    assert!(html.body.contains("FAILED") && html.body.contains("mtls_min_percent"));

    for (uri, status, code) in [
        (format!("/api/v1/reports/{id}?format=pdf"), StatusCode::BAD_REQUEST, "bad_request"),
        ("/api/v1/reports/999999".to_owned(), StatusCode::NOT_FOUND, "not_found"),
        ("/api/v1/reports/abc".to_owned(), StatusCode::BAD_REQUEST, "bad_request"),
        (format!("/api/v1/reports/{id}?fmt=html"), StatusCode::BAD_REQUEST, "bad_request"),
    ] {
        let answer = call(app(&state, viewer()), Method::GET, &uri, None).await;
        assert_eq!(answer.status, status, "{uri}: {}", answer.body);
        assert_eq!(answer.error_code(), code, "{uri}");
    }
    drop(state);
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scoped_callers_get_their_namespace_slice() {
    let env = TestEnv::new(Backend::Sqlite).await;
    let state = env.state(30, 12).await;
    let policy = json!({"mtls_min_percent": 99.9});
    let first = call(app(&state, admin()), Method::POST, "/api/v1/reports", Some(json!({"policy": policy}))).await;
    let first_id = first.json()["id"].as_i64().expect("id");
    let created = call(app(&state, admin()), Method::POST, "/api/v1/reports", Some(json!({"policy": policy}))).await;
    let id = created.json()["id"].as_i64().expect("id");

    let whole = call(app(&state, viewer()), Method::GET, &format!("/api/v1/reports/{id}"), None).await.json();
    assert_eq!(whole["summary"]["mtls"]["requests"], json!(42));

    let batch = call(app(&state, scoped("batch")), Method::GET, &format!("/api/v1/reports/{id}"), None).await;
    assert_eq!(batch.status, StatusCode::OK, "{}", batch.body);
    let slice = batch.json();
    assert_eq!(slice["namespace"], json!("batch"));
    assert_eq!(slice["policy"], Value::Null, "the verdict is mesh-wide");
    assert_eq!(slice["summary"]["mtls"]["requests"], json!(12));
    assert_eq!(slice["edges"].as_array().map(Vec::len), Some(1));
    assert_eq!(slice["trend"]["previous_id"], json!(first_id), "trend recomputed between slices");
    assert_eq!(slice["trend"]["plaintext_requests"]["delta"], json!(0));
    assert!(slice["config"]["resources"].as_object().is_some_and(|m| m.is_empty()));

    // A namespace with no traffic sees an empty report, not someone else's.
    let other =
        call(app(&state, scoped("elsewhere")), Method::GET, &format!("/api/v1/reports/{id}?format=csv"), None).await;
    assert_eq!(other.status, StatusCode::OK);
    assert_eq!(other.body.lines().count(), 1, "header only: {}", other.body);

    // The history hides the mesh-wide verdict and shows the slice's figures.
    let list = call(app(&state, scoped("batch")), Method::GET, "/api/v1/reports", None).await.json();
    assert!(list["reports"].as_array().expect("reports").iter().all(|r| r["passed"].is_null()), "{list}");
    assert_eq!(list["reports"][0]["summary"]["mtls"]["requests"], json!(12));

    // Asking for another namespace than the scope is refused; an unscoped caller may ask for a slice.
    let refused =
        call(app(&state, scoped("batch")), Method::GET, &format!("/api/v1/reports/{id}?namespace=payments"), None)
            .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert_eq!(refused.error_code(), "forbidden");
    let refused_list =
        call(app(&state, scoped("batch")), Method::GET, "/api/v1/reports?namespace=payments", None).await;
    assert_eq!(refused_list.status, StatusCode::FORBIDDEN);
    let asked = call(app(&state, viewer()), Method::GET, &format!("/api/v1/reports/{id}?namespace=payments"), None)
        .await
        .json();
    assert_eq!(asked["namespace"], json!("payments"));
    assert_eq!(asked["summary"]["mtls"]["requests"], json!(42));

    // A scoped admin may make a report; the answer is its slice.
    let scoped_admin = Caller { role: Role::Admin, namespace: Some("batch".into()) };
    let made = call(app(&state, scoped_admin), Method::POST, "/api/v1/reports", Some(json!({"policy": policy}))).await;
    assert_eq!(made.status, StatusCode::CREATED);
    assert_eq!(made.json()["passed"], Value::Null);
    assert_eq!(made.json()["summary"]["mtls"]["requests"], json!(12));
    drop(state);
    env.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedules_endpoints() {
    let env = TestEnv::new(Backend::Sqlite).await;
    let state = env.state(0, 0).await;
    let schedule = json!({
        "name": "nightly",
        "cron": "0 2 * * *",
        "window": "24h",
        "policy": {"mtls_min_percent": 99.9},
        "formats": ["json", "html"],
        "webhook_url": "http://127.0.0.1:9/hook",
    });
    for caller in [viewer(), scoped("batch")] {
        for (method, uri, body) in [
            (Method::GET, "/api/v1/schedules", None),
            (Method::POST, "/api/v1/schedules", Some(schedule.clone())),
            (Method::GET, "/api/v1/schedules/1", None),
            (Method::DELETE, "/api/v1/schedules/1", None),
        ] {
            let answer = call(app(&state, caller.clone()), method.clone(), uri, body).await;
            assert_eq!(answer.status, StatusCode::FORBIDDEN, "{method} {uri}");
            assert_eq!(answer.error_code(), "forbidden");
        }
    }

    let created = call(app(&state, admin()), Method::POST, "/api/v1/schedules", Some(schedule.clone())).await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let view = created.json();
    let id = view["id"].as_i64().expect("id");
    assert_eq!(view["cron"], json!("0 2 * * *"));
    assert_eq!(view["window_seconds"], json!(86_400));
    assert_eq!(view["formats"], json!(["json", "html"]));
    assert_eq!(view["policy"], json!({"mtls_min_percent": 99.9}));
    let next_run: chrono::DateTime<chrono::Utc> = serde_json::from_value(view["next_run"].clone()).expect("next_run");
    assert_eq!(next_run.format("%H:%M:%S").to_string(), "02:00:00");
    assert!(next_run > chrono::Utc::now());

    let hourly = json!({"name": "hourly", "interval": "1h", "webhook_url": "https://hooks.example.com/x"});
    let second = call(app(&state, admin()), Method::POST, "/api/v1/schedules", Some(hourly)).await;
    assert_eq!(second.status, StatusCode::CREATED, "{}", second.body);
    assert_eq!(second.json()["interval_seconds"], json!(3600));
    assert_eq!(second.json()["formats"], json!(["json"]));

    for (body, needle) in [
        (schedule.clone(), "exists"),
        (json!({"name": "x", "cron": "* * * * *", "interval": "1h"}), "exactly one"),
        (json!({"name": "x"}), "exactly one"),
        (json!({"name": "x", "cron": "61 * * * *"}), "cron expression"),
        (json!({"name": "x", "interval": "0.5s"}), "at least 1s"),
        (json!({"name": "x", "interval": "soon"}), "interval"),
        (json!({"name": "x", "interval": "1h", "window": "-1h"}), "window"),
        (json!({"name": "x", "interval": "1h", "formats": ["pdf"]}), "formats"),
        (json!({"name": "x", "interval": "1h", "formats": []}), "formats"),
        (json!({"name": "x", "interval": "1h", "webhook_url": "ftp://h/x"}), "webhook_url"),
        (json!({"name": "x", "interval": "1h", "policy": {"nope": 1}}), "unknown field `nope`"),
        (json!({"name": "bad name!", "interval": "1h"}), "name"),
        (json!({"name": "x", "interval": "1h", "retries": 3}), "unknown field `retries`"),
        (json!({"interval": "1h"}), "missing field `name`"),
    ] {
        let answer = call(app(&state, admin()), Method::POST, "/api/v1/schedules", Some(body.clone())).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{body}: {}", answer.body);
        assert_eq!(answer.error_code(), "bad_request");
        assert!(answer.json()["error"]["message"].as_str().unwrap_or("").contains(needle), "{body}: {}", answer.body);
    }
    let empty = call(app(&state, admin()), Method::POST, "/api/v1/schedules", None).await;
    assert_eq!(empty.status, StatusCode::BAD_REQUEST);

    let list = call(app(&state, admin()), Method::GET, "/api/v1/schedules", None).await;
    assert_eq!(list.status, StatusCode::OK);
    let names: Vec<String> = list.json()["schedules"]
        .as_array()
        .expect("schedules")
        .iter()
        .map(|s| s["name"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(names, ["nightly", "hourly"]);
    let one = call(app(&state, admin()), Method::GET, &format!("/api/v1/schedules/{id}"), None).await;
    assert_eq!(one.status, StatusCode::OK);
    assert_eq!(one.json()["deliveries"], json!([]));

    for (method, uri, status) in [
        (Method::GET, "/api/v1/schedules/999".to_owned(), StatusCode::NOT_FOUND),
        (Method::GET, "/api/v1/schedules/abc".to_owned(), StatusCode::BAD_REQUEST),
        (Method::DELETE, "/api/v1/schedules/abc".to_owned(), StatusCode::BAD_REQUEST),
        (Method::DELETE, format!("/api/v1/schedules/{id}"), StatusCode::NO_CONTENT),
        (Method::DELETE, format!("/api/v1/schedules/{id}"), StatusCode::NOT_FOUND),
        (Method::GET, format!("/api/v1/schedules/{id}"), StatusCode::NOT_FOUND),
    ] {
        let answer = call(app(&state, admin()), method.clone(), &uri, None).await;
        assert_eq!(answer.status, status, "{method} {uri}: {}", answer.body);
    }
    drop(state);
    env.cleanup().await;
}
