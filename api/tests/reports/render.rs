//! Renderings of a real report (12 plaintext and 30 mutual requests into a STRICT namespace): the HTML
//! page is self-contained and well-formed and shows the numbers, the Markdown has its tables, the CSV
//! parses with the documented columns, and the JSON round-trips.

use crate::common::{Backend, TestEnv, report};
use meshlens_api::reports::render::CSV_COLUMNS;
use meshlens_api::reports::{Format, Report, render};

async fn fixture() -> (TestEnv, Report) {
    let env = TestEnv::new(Backend::Sqlite).await;
    let state = env.state(30, 12).await;
    let report = report(&state).await;
    (env, report)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_holds_the_analyses() {
    let (_env, report) = fixture().await;
    assert_eq!(report.summary.mtls.requests, 42);
    assert_eq!(report.summary.mtls.mutual, 30);
    assert_eq!(report.summary.mtls.plaintext, 12);
    let percent = report.summary.mtls.percent.expect("known traffic");
    assert!((percent - 30.0 * 100.0 / 42.0).abs() < 1e-9, "{percent}");
    let payments = report.mtls.namespaces.iter().find(|n| n.namespace == "payments").expect("payments");
    assert_eq!(payments.configured_modes, ["STRICT"]);
    assert_eq!(payments.classification, "violation");
    let plaintext = &report.plaintext_edges;
    assert_eq!(plaintext.len(), 1, "{plaintext:?}");
    assert_eq!(plaintext[0].source, "batch/cron-7");
    assert_eq!(plaintext[0].plaintext_requests, 12);
    assert_eq!(plaintext[0].source_principal.as_deref(), Some("spiffe://cluster.local/ns/batch/sa/cron"));
    assert_eq!(plaintext[0].destination_principals, ["spiffe://cluster.local/ns/payments/sa/ledger"]);
    let violation = report.findings.iter().find(|f| f.code == "ML2001").expect("ML2001 finding");
    assert_eq!(violation.namespace.as_deref(), Some("payments"));
    assert!(report.summary.findings.error >= 1);
    assert!(report.config.hash.starts_with("sha256:") && report.config.hash.len() == 7 + 64);
    assert_eq!(report.config.resources.get("Pod"), Some(&3));
    assert!(report.trend.is_none() && report.policy.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_round_trips() {
    let (_env, report) = fixture().await;
    let json = render(&report, Some(7), Format::Json);
    let back: Report = serde_json::from_str(&json).expect("rendered JSON is a report");
    assert_eq!(back, report);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn html_is_self_contained_well_formed_and_shows_the_numbers() {
    let (_env, report) = fixture().await;
    let html = render(&report, Some(7), Format::Html);
    assert!(html.starts_with("<!DOCTYPE html>"));
    // Well-formed: every element closed and every text escaped (a strict XML parser accepts it).
    let doc = roxmltree::Document::parse_with_options(
        &html,
        roxmltree::ParsingOptions { allow_dtd: true, ..Default::default() },
    )
    .unwrap_or_else(|e| panic!("HTML is not well-formed: {e}"));
    // Self-contained: no scripts, no external stylesheets, images or links to fetch.
    for node in doc.descendants().filter(|n| n.is_element()) {
        let name = node.tag_name().name();
        assert_ne!(name, "script");
        assert_ne!(name, "link");
        assert_ne!(name, "img");
        for attr in ["src", "href"] {
            assert!(node.attribute(attr).is_none(), "<{name} {attr}=...> refers outside the page");
        }
    }
    assert!(
        !html.contains("http://")
            || html.matches("http://").all(|_| html.contains("xmlns=\"http://www.w3.org/2000/svg\""))
    );
    let svgs = doc.descendants().filter(|n| n.tag_name().name() == "svg").count();
    assert!(svgs >= 2, "charts inline as SVG: {svgs}");
    assert!(doc.descendants().any(|n| n.tag_name().name() == "style"));
    let text: String = doc.descendants().filter_map(|n| n.text()).collect::<Vec<_>>().join(" ");
    assert!(text.contains("71.429%"), "overall mTLS percent");
    assert!(text.contains("batch/cron-7"));
    assert!(text.contains("spiffe://cluster.local/ns/batch/sa/cron"));
    assert!(text.contains("ML2001"));
    assert!(text.contains("meshlens compliance report #7"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn html_escapes_what_it_quotes() {
    let (_env, mut report) = fixture().await;
    report.findings[0].message = "<script>alert('x')</script> & \u{7} done".into();
    let html = render(&report, None, Format::Html);
    assert!(!html.contains("<script>"));
    assert!(html.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp;"));
    roxmltree::Document::parse_with_options(&html, roxmltree::ParsingOptions { allow_dtd: true, ..Default::default() })
        .expect("still well-formed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn markdown_has_the_sections_and_numbers() {
    let (_env, report) = fixture().await;
    let md = render(&report, Some(3), Format::Md);
    assert!(md.starts_with("# meshlens compliance report #3\n"));
    for heading in
        ["## mTLS by namespace", "## Plaintext edges", "## Findings", "## Resilience gaps", "## Recommendations"]
    {
        assert!(md.contains(heading), "{heading}");
    }
    assert!(md.contains("- mTLS: **71.429%** (30 mutual, 12 plaintext, 0 unknown of 42 requests)"), "{md}");
    assert!(md.contains("| payments | 42 | 71.429% | 12 | 0 | STRICT | violation |"), "{md}");
    assert!(md.contains("| batch/cron-7 | spiffe://cluster.local/ns/batch/sa/cron |"), "{md}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csv_parses_with_one_row_per_edge_and_finding() {
    let (_env, report) = fixture().await;
    let csv_text = render(&report, None, Format::Csv);
    let mut reader = csv::Reader::from_reader(csv_text.as_bytes());
    let headers: Vec<String> = reader.headers().expect("header").iter().map(str::to_owned).collect();
    assert_eq!(headers, CSV_COLUMNS);
    let rows: Vec<csv::StringRecord> = reader.records().collect::<Result<_, _>>().expect("rows parse");
    assert_eq!(rows.len(), report.edges.len() + report.findings.len());
    let column = |name: &str| headers.iter().position(|h| h == name).expect("column");
    let plaintext_edge = rows
        .iter()
        .find(|r| &r[column("kind")] == "edge" && &r[column("source")] == "batch/cron-7")
        .expect("the plaintext edge");
    assert_eq!(&plaintext_edge[column("plaintext")], "12");
    assert_eq!(&plaintext_edge[column("mtls_percent")], "0.000");
    assert_eq!(&plaintext_edge[column("classification")], "violation");
    let finding = rows.iter().find(|r| &r[column("code")] == "ML2001").expect("ML2001 row");
    assert_eq!(&finding[column("kind")], "finding");
    assert_eq!(&finding[column("level")], "Error");
    assert_eq!(&finding[column("namespace")], "payments");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_namespace_slice_holds_only_that_namespace() {
    let (_env, report) = fixture().await;
    let batch = report.slice("batch");
    assert_eq!(batch.namespace.as_deref(), Some("batch"));
    // The plaintext edge leaves batch: it stays (source namespace), with its counts as the overall figure.
    assert_eq!(batch.edges.len(), 1);
    assert_eq!(batch.summary.mtls.plaintext, 12);
    assert_eq!(batch.summary.mtls.mutual, 0);
    assert!(batch.mtls.namespaces.is_empty(), "nothing arrived in batch");
    assert!(batch.findings.iter().all(|f| f.namespace.as_deref() == Some("batch")));
    assert!(batch.config.resources.is_empty() && batch.policy.is_none());
    let other = report.slice("elsewhere");
    assert!(other.edges.is_empty() && other.findings.is_empty() && other.plaintext_edges.is_empty());
    assert_eq!(other.summary.mtls.requests, 0);
}
