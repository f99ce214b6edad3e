//! The public parsing API: format names, per-line auto-detection, the reporter override, and tolerance of
//! surrounding whitespace.

use meshlens_collector::{LineFormat, LineParser, parse_line};
use meshlens_model::{Direction, Mtls, Reporter, SourceFormat};

const ISTIO_INBOUND: &str = r#"[2019-03-06T09:31:27.360Z] "GET /status/418 HTTP/1.1" 418 - "-" 0 135 5 2 "-" "curl/7.60.0" "d209e46f" "httpbin:8000" "127.0.0.1:80" inbound|8000|http|httpbin.default.svc.cluster.local - 172.30.146.73:80 172.30.146.82:38618 outbound_.8000_._.httpbin.default.svc.cluster.local"#;
const ENVOY: &str = r#"[2016-04-15T20:17:00.310Z] "POST /api/v1/locations HTTP/2" 204 - 154 0 226 100 "10.0.35.28" "nsq2http" "cc21d9b0" "locations" "tcp://10.0.2.1:80""#;
const ISTIO_JSON: &str = r#"{"start_time":"2024-03-18T10:11:12.345Z","upstream_cluster":"outbound|9080||reviews.default.svc.cluster.local"}"#;

#[test]
fn format_names_round_trip() {
    for format in LineFormat::ALL {
        assert_eq!(format.to_string().parse::<LineFormat>().unwrap(), format);
    }
    assert_eq!("istio-text".parse::<LineFormat>().unwrap(), LineFormat::IstioText);
    let err = "apache".parse::<LineFormat>().unwrap_err().to_string();
    assert!(err.contains("\"apache\"") && err.contains("meshlens-json"), "{err}");
}

#[test]
fn auto_detects_each_line_on_its_own() {
    let formats: Vec<SourceFormat> = [ISTIO_INBOUND, ENVOY, ISTIO_JSON]
        .iter()
        .map(|line| parse_line(line, LineFormat::Auto).unwrap().source_format)
        .collect();
    assert_eq!(formats, [SourceFormat::IstioText, SourceFormat::EnvoyText, SourceFormat::IstioJson]);
    let record =
        parse_line(&serde_json::to_string(&parse_line(ENVOY, LineFormat::Auto).unwrap()).unwrap(), LineFormat::Auto);
    assert_eq!(record.unwrap().source_format, SourceFormat::EnvoyText, "a record's own JSON is taken as is");
}

#[test]
fn explicit_formats_skip_detection() {
    // Envoy's default line read as Istio text is a truncated Istio line.
    assert_eq!(parse_line(ENVOY, LineFormat::IstioText).unwrap().source_format, SourceFormat::IstioText);
    let err = parse_line(ISTIO_INBOUND, LineFormat::EnvoyText).unwrap_err().to_string();
    assert!(err.starts_with("field 15: unexpected extra field \"inbound|8000|http|"), "{err}");
    assert!(parse_line(ISTIO_JSON, LineFormat::MeshlensJson).is_err());
}

#[test]
fn meshlens_records_round_trip() {
    let record = parse_line(ISTIO_INBOUND, LineFormat::Auto).unwrap();
    let json = serde_json::to_string(&record).unwrap();
    assert_eq!(parse_line(&json, LineFormat::MeshlensJson).unwrap(), record);
    assert_eq!(parse_line(&json, LineFormat::Auto).unwrap(), record);
}

#[test]
fn reporter_can_be_overridden() {
    let derived = parse_line(ISTIO_JSON, LineFormat::Auto).unwrap();
    assert_eq!((derived.direction, derived.reporter), (Direction::Outbound, Reporter::Source));
    let gateway = LineParser::new(LineFormat::Auto).with_reporter(Reporter::Gateway).parse(ISTIO_JSON).unwrap();
    assert_eq!(gateway.reporter, Reporter::Gateway);
    assert_eq!(gateway, meshlens_model::RequestRecord { reporter: Reporter::Gateway, ..derived });
}

#[test]
fn surrounding_whitespace_and_line_terminators_are_ignored() {
    let plain = parse_line(ISTIO_INBOUND, LineFormat::Auto).unwrap();
    assert_eq!(plain.mtls, Mtls::Mutual);
    for padded in [format!("  \t{ISTIO_INBOUND}"), format!("{ISTIO_INBOUND}\r\n"), format!(" {ISTIO_JSON} \n")] {
        parse_line(&padded, LineFormat::Auto).unwrap_or_else(|err| panic!("{padded:?}: {err}"));
    }
    assert_eq!(parse_line(&format!("   {ISTIO_INBOUND}\r\n"), LineFormat::IstioText).unwrap(), plain);
}
