//! The chart endpoints against a real store: SVG that parses and holds the series, PNG that decodes to
//! the asked size, empty windows, namespace scope and parameter errors.

mod telemetry_fixture;

use axum::Router;
use http::StatusCode;
use meshlens_api::{Caller, MeshSnapshot, charts};
use meshlens_model::mesh::LoadReport;
use meshlens_model::mesh::settings::MeshSettings;
use telemetry_fixture::{Answer, Fixture, app, fixture, fixture_with, get, viewer};

fn charts_app(fixture: &Fixture, caller: Caller) -> Router {
    app(charts::routes(), &fixture.state, caller)
}

/// The texts of an SVG answer, after checking that it is well-formed SVG.
fn svg_texts(answer: &Answer) -> Vec<String> {
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    assert_eq!(answer.headers["content-type"], "image/svg+xml");
    let text = answer.text();
    let doc = roxmltree::Document::parse(&text).expect("the SVG is well-formed XML");
    assert_eq!(doc.root_element().tag_name().name(), "svg");
    doc.descendants().filter(|n| n.has_tag_name("text")).filter_map(|n| n.text()).map(|t| t.trim().to_owned()).collect()
}

fn polylines(answer: &Answer) -> usize {
    let text = answer.text();
    let doc = roxmltree::Document::parse(&text).expect("XML");
    doc.descendants().filter(|n| n.has_tag_name("polyline")).count()
}

fn has(texts: &[String], wanted: &str) -> bool {
    texts.iter().any(|t| t.contains(wanted))
}

#[tokio::test]
async fn mtls_coverage_draws_overall_and_per_namespace_lines() {
    let fixture = fixture(3000).await;
    let app = charts_app(&fixture, viewer(None));
    let answer = get(&app, "/api/v1/charts/mtls-coverage").await;
    let texts = svg_texts(&answer);
    assert!(has(&texts, "mTLS coverage — last 60m"), "{texts:?}");
    assert!(has(&texts, "all requests"), "legend names the series: {texts:?}");
    assert!(has(&texts, "mutual TLS (%)"));
    assert!(polylines(&answer) >= 1);
    assert!(!has(&texts, "no data in window"));

    let texts = svg_texts(&get(&app, "/api/v1/charts/mtls-coverage?by=namespace&window=2h&step=10m").await);
    for namespace in ["bank", "default", "shop"] {
        assert!(texts.iter().any(|t| t == namespace), "{namespace} in {texts:?}");
    }
    assert!(has(&texts, "per 600s"));
}

#[tokio::test]
async fn request_chart_has_rate_and_error_panels_per_service() {
    let fixture = fixture(3000).await;
    let app = charts_app(&fixture, viewer(None));
    let answer = get(&app, "/api/v1/charts/requests?window=1h").await;
    let texts = svg_texts(&answer);
    assert!(has(&texts, "requests/s") && has(&texts, "errors (%)"), "{texts:?}");
    assert!(has(&texts, "(busiest 8 of 15 services)"), "{texts:?}");
    let legends = texts.iter().filter(|t| t.ends_with(".default")).count();
    assert_eq!(legends, 16, "8 services in each of the 2 panels: {texts:?}");

    let texts = svg_texts(&get(&app, "/api/v1/charts/requests?service=reviews").await);
    assert!(texts.iter().any(|t| t == "reviews.default"), "{texts:?}");
    assert_eq!(texts.iter().filter(|t| t.ends_with(".default")).count(), 2, "{texts:?}");
    assert!(has(&texts, "service reviews"));
}

#[tokio::test]
async fn latency_chart_renders_png_of_the_asked_size() {
    let fixture = fixture_with(3000, |i, r| {
        r.route_name = Some(if i % 4 == 0 { "canary" } else { "primary" }.into());
    })
    .await;
    let app = charts_app(&fixture, viewer(None));
    let texts = svg_texts(&get(&app, "/api/v1/charts/latency?route=canary").await);
    for series in ["p50", "p95", "p99"] {
        assert!(texts.iter().any(|t| t == series), "{series} in {texts:?}");
    }
    assert!(has(&texts, "route canary"));

    let answer = get(&app, "/api/v1/charts/latency?route=canary&format=png&width=640&height=320").await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text());
    assert_eq!(answer.headers["content-type"], "image/png");
    assert_eq!(&answer.body[..8], b"\x89PNG\r\n\x1a\n");
    let decoder = png::Decoder::new(std::io::Cursor::new(answer.body.to_vec()));
    let mut reader = decoder.read_info().expect("PNG header");
    let mut pixels = vec![0; reader.output_buffer_size().expect("size")];
    let frame = reader.next_frame(&mut pixels).expect("PNG data");
    assert_eq!((frame.width, frame.height), (640, 320));
    let pixels = &pixels[..frame.buffer_size()];
    let drawn = pixels.chunks(3).filter(|p| p != &[255, 255, 255]).count();
    assert!(drawn > 2000, "lines, axes and text were drawn: {drawn} non-white pixels");
}

#[tokio::test]
async fn empty_windows_draw_a_readable_chart() {
    let fixture = fixture(300).await;
    let app = charts_app(&fixture, viewer(None));
    let window = "start=2001-01-01T00:00:00Z&end=2001-01-01T06:00:00Z";
    for chart in ["mtls-coverage", "requests", "latency", "split-drift"] {
        let texts = svg_texts(&get(&app, &format!("/api/v1/charts/{chart}?{window}")).await);
        assert!(has(&texts, "no data in window"), "{chart}: {texts:?}");
        let png = get(&app, &format!("/api/v1/charts/{chart}?{window}&format=png")).await;
        assert_eq!(png.status, StatusCode::OK, "{chart}: {}", png.text());
        assert_eq!(&png.body[..4], b"\x89PNG");
    }
}

#[tokio::test]
async fn scoped_callers_chart_only_their_namespace() {
    let fixture = fixture(3000).await;
    let shop = charts_app(&fixture, viewer(Some("shop")));
    let texts = svg_texts(&get(&shop, "/api/v1/charts/mtls-coverage?by=namespace").await);
    assert!(texts.iter().any(|t| t == "shop") && texts.iter().any(|t| t == "bank"), "{texts:?}");
    assert!(!texts.iter().any(|t| t == "default"), "requests within default are not shop's: {texts:?}");
    assert!(has(&texts, "namespace shop"));

    let answer = get(&shop, "/api/v1/charts/requests?namespace=bank").await;
    let message = answer.error(StatusCode::FORBIDDEN, "forbidden");
    assert!(message.contains("scoped to namespace `shop`"), "{message}");
    assert_eq!(get(&shop, "/api/v1/charts/requests?namespace=shop").await.status, StatusCode::OK);
}

#[tokio::test]
async fn bad_parameters_are_refused_with_the_reason() {
    let fixture = fixture(30).await;
    let app = charts_app(&fixture, viewer(None));
    for (query, expected) in [
        ("window=5y", "window: `5y` is not a duration"),
        ("window=40d", "longer than 31 days"),
        ("window=1h&start=2026-01-01T00:00:00Z", "either start or window"),
        ("start=2026-01-02T00:00:00Z&end=2026-01-01T00:00:00Z", "the window is empty"),
        ("end=yesterday", "end: `yesterday` is not an RFC 3339 time"),
        ("window=7d&step=1s", "at most 1000 are drawn"),
        ("width=50000", "width must be between 100 and 4000"),
        ("format=gif", "format"),
        ("by=service", "by: `service` is not `namespace`"),
        ("colour=red", "unknown field `colour`"),
    ] {
        let answer = get(&app, &format!("/api/v1/charts/mtls-coverage?{query}")).await;
        let message = answer.error(StatusCode::BAD_REQUEST, "bad_request");
        assert!(message.contains(expected), "{query}: {message}");
    }
}

const SPLIT_ROUTE: &str = "
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews]
  http:
  - name: reviews-split
    route:
    - destination: {host: reviews, subset: v1}
      weight: 80
    - destination: {host: reviews, subset: v2}
      weight: 20
";

#[tokio::test]
async fn split_drift_compares_configured_weights_with_observed_shares() {
    // Half the requests reach each subset of an 80/20 route: a drift.
    let fixture = fixture_with(2000, |i, r| {
        r.source_namespace = Some("default".into());
        r.destination_namespace = Some("default".into());
        r.destination_service = Some("reviews.default.svc.cluster.local".into());
        r.authority = Some("reviews:9080".into());
        r.route_name = Some("reviews-split".into());
        r.destination_subset = Some(if i % 2 == 0 { "v1" } else { "v2" }.into());
    })
    .await;
    let mut report = LoadReport::default();
    report.parse_str("reviews.yaml", SPLIT_ROUTE);
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    fixture.state.set_mesh(MeshSnapshot::new(report, MeshSettings::default()));

    let app = charts_app(&fixture, viewer(None));
    let texts = svg_texts(&get(&app, "/api/v1/charts/split-drift").await);
    assert!(has(&texts, "configured weight") && has(&texts, "observed"), "{texts:?}");
    let labels: Vec<&String> = texts.iter().filter(|t| t.contains("reviews-split")).collect();
    assert_eq!(labels.len(), 2, "one group per subset: {texts:?}");
    assert!(labels.iter().any(|t| t.ends_with("→ v1 (drift, p=0.0e0)") || t.contains("→ v1 (drift")), "{labels:?}");
    assert!(labels.iter().any(|t| t.contains("→ v2 (drift")), "{labels:?}");

    // Another namespace's token does not see this route.
    let bank = charts_app(&fixture, viewer(Some("bank")));
    let texts = svg_texts(&get(&bank, "/api/v1/charts/split-drift").await);
    assert!(has(&texts, "no data in window"), "{texts:?}");
    // Asking for the route by name keeps it; another name drops it.
    let texts = svg_texts(&get(&app, "/api/v1/charts/split-drift?route=reviews").await);
    assert!(has(&texts, "reviews-split"));
    let texts = svg_texts(&get(&app, "/api/v1/charts/split-drift?route=ratings").await);
    assert!(has(&texts, "no data in window"));
}
