//! The web dashboard: one page at `/` with its stylesheet and script under `/dashboard/`, embedded in the
//! binary from `api/assets/dashboard/` (plain HTML, CSS and JavaScript: nothing to build, nothing fetched
//! from elsewhere). The files themselves are public; the page reads everything it shows from `/api/v1`
//! with the bearer token the user gives it (`/#token=...`, kept in the tab's session storage, or typed
//! into its form), so authentication stays where it is. docs/dashboard.md describes the page.
//!
//! Every answer carries a Content-Security-Policy that allows scripts and styles from this origin only,
//! `fetch` to this origin, images and frames from the object URLs the page makes for charts and reports,
//! and nothing else.

use axum::Router;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http::{HeaderName, HeaderValue, header};

const INDEX_HTML: &str = include_str!("../assets/dashboard/index.html");
const DASHBOARD_CSS: &str = include_str!("../assets/dashboard/dashboard.css");
const DASHBOARD_JS: &str = include_str!("../assets/dashboard/dashboard.js");

/// Scripts only from this origin and never inline; inline styles are allowed because the reports the page
/// shows (self-contained HTML, framed from an object URL that inherits this policy) carry theirs inline.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
     img-src 'self' blob: data:; connect-src 'self'; frame-src blob:; base-uri 'none'; form-action 'none'";

/// The dashboard's routes: `GET /` and its assets (`/dashboard/dashboard.css`, `/dashboard/dashboard.js`),
/// all without authentication.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(|| async { asset("text/html; charset=utf-8", INDEX_HTML) }))
        .route("/dashboard/dashboard.css", get(|| async { asset("text/css; charset=utf-8", DASHBOARD_CSS) }))
        .route("/dashboard/dashboard.js", get(|| async { asset("text/javascript; charset=utf-8", DASHBOARD_JS) }))
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let headers: [(HeaderName, HeaderValue); 5] = [
        (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
        // The files change with the binary; revalidating costs little next to a stale page after an upgrade.
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        (header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY)),
        (header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
        (header::REFERRER_POLICY, HeaderValue::from_static("no-referrer")),
    ];
    (headers, body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{AppState, MeshSnapshot};
    use axum::body::Body;
    use http::{Request, StatusCode};
    use http_body_util::BodyExt;
    use meshlens_store::{Store, StoreConfig};
    use std::sync::Arc;
    use tower::ServiceExt;

    async fn app() -> (tempfile::TempDir, Router) {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(StoreConfig::new(dir.path())).await.expect("open store");
        let state = AppState::new(Arc::new(store), MeshSnapshot::default()).expect("executor");
        (dir, crate::router(state))
    }

    async fn get(router: &Router, uri: &str) -> (StatusCode, http::HeaderMap, String) {
        let request = Request::builder().uri(uri).body(Body::empty()).expect("request");
        let response = router.clone().oneshot(request).await.expect("infallible");
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.into_body().collect().await.expect("body").to_bytes();
        (status, headers, String::from_utf8(body.to_vec()).expect("utf-8"))
    }

    fn header<'a>(headers: &'a http::HeaderMap, name: &str) -> &'a str {
        headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_page_and_its_assets_are_served_without_a_token() {
        let (_dir, router) = app().await;
        for (uri, content_type, marker) in [
            ("/", "text/html; charset=utf-8", "<script src=\"/dashboard/dashboard.js\" defer></script>"),
            ("/dashboard/dashboard.css", "text/css; charset=utf-8", ".topbar"),
            ("/dashboard/dashboard.js", "text/javascript; charset=utf-8", "/api/v1/mtls/coverage"),
        ] {
            let (status, headers, body) = get(&router, uri).await;
            assert_eq!(status, StatusCode::OK, "{uri}");
            assert_eq!(header(&headers, "content-type"), content_type, "{uri}");
            assert_eq!(header(&headers, "x-content-type-options"), "nosniff", "{uri}");
            assert_eq!(header(&headers, "content-security-policy"), CONTENT_SECURITY_POLICY, "{uri}");
            assert!(!header(&headers, "x-request-id").is_empty(), "{uri}: the router's layers apply");
            assert!(body.contains(marker), "{uri} lacks {marker:?}");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_data_stays_behind_the_token() {
        let (_dir, router) = app().await;
        for uri in ["/api/v1/graph", "/api/v1/mtls/coverage", "/api/v1/reports", "/api/v1/charts/requests"] {
            let (status, headers, body) = get(&router, uri).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{uri}: {body}");
            assert_eq!(header(&headers, "www-authenticate"), "Bearer", "{uri}");
        }
        // Paths next to the dashboard's are still the API's 404, not the page.
        let (status, _, body) = get(&router, "/dashboard/other.js").await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
        assert!(body.contains("not_found"), "{body}");
    }

    #[test]
    fn the_page_loads_nothing_from_elsewhere() {
        for (name, text) in
            [("index.html", INDEX_HTML), ("dashboard.css", DASHBOARD_CSS), ("dashboard.js", DASHBOARD_JS)]
        {
            for external in ["http://", "https://", "//cdn", "@import"] {
                // The SVG namespace is an identifier, not a resource.
                let hits = text.matches(external).count();
                let allowed = text.matches("http://www.w3.org/2000/svg").count();
                let hits = if external == "http://" { hits - allowed } else { hits };
                assert_eq!(hits, 0, "{name} references {external}");
            }
        }
        // The page never puts API data into markup.
        assert!(!DASHBOARD_JS.contains("innerHTML"), "dashboard.js builds elements, never HTML text");
        // Every section the issue asks for has its stable id.
        for id in [
            "overview-mtls",
            "overview-findings-error",
            "overview-findings-warning",
            "overview-findings-info",
            "top-gaps",
            "graph-container",
            "mtls-table",
            "routes-table",
            "recommendations-list",
            "chart-mtls",
            "create-report",
            "reports-table",
            "report-frame",
            "auth-message",
            "token-form",
            "window-select",
            "namespace-select",
        ] {
            assert!(INDEX_HTML.contains(&format!("id=\"{id}\"")), "index.html has no #{id}");
        }
    }
}
