//! Malformed input for every format: each line is rejected with an error that names the problem, and no
//! input makes a parser panic.

use meshlens_collector::{LineFormat, MAX_JSON_FIELDS, MAX_LINE_BYTES, ParseError, parse_bytes, parse_line};
use proptest::prelude::*;

const ISTIO: &str = r#"[2025-06-01T15:37:04.814Z] "GET /get HTTP/1.1" 200 - via_upstream - "-" 0 621 94 63 "-" "fortio" "f47fa353" "httpbin:8000" "10.244.1.27:8080" outbound|8000||httpbin.default.svc.cluster.local 10.244.2.30:42658 10.96.243.7:8000 10.244.2.30:58932 - default"#;
const ENVOY: &str = r#"[2016-04-15T20:17:00.310Z] "POST /api/v1/locations HTTP/2" 204 - 154 0 226 100 "10.0.35.28" "nsq2http" "cc21d9b0" "locations" "tcp://10.0.2.1:80""#;
const ISTIO_JSON: &str =
    r#"{"start_time":"2024-03-18T10:11:12.345Z","method":"GET","response_code":200,"duration":38}"#;
const MESHLENS_JSON: &str = r#"{"timestamp":"2025-06-02T08:00:00Z","response_flags":[],"reporter":"source","direction":"outbound","mtls":"unknown","source_format":"meshlens_json"}"#;

/// Asserts that `line` fails in `format` with exactly `message`.
#[track_caller]
fn fails(format: LineFormat, line: &str, message: &str) {
    match parse_line(line, format) {
        Ok(record) => panic!("{line:?} parsed as {record:?}"),
        Err(err) => assert_eq!(err.to_string(), message, "{line:?}"),
    }
}

#[test]
fn the_valid_templates_parse() {
    for (format, line) in [
        (LineFormat::IstioText, ISTIO),
        (LineFormat::EnvoyText, ENVOY),
        (LineFormat::IstioJson, ISTIO_JSON),
        (LineFormat::MeshlensJson, MESHLENS_JSON),
    ] {
        parse_line(line, format).unwrap_or_else(|err| panic!("{format}: {err}"));
        parse_line(line, LineFormat::Auto).unwrap_or_else(|err| panic!("auto ({format}): {err}"));
    }
}

#[test]
fn text_lines_with_wrong_types_name_the_field() {
    let istio = LineFormat::IstioText;
    fails(istio, &ISTIO.replace(" 621 94 ", " 621 abc "), r#"field 10 (duration): expected an integer, found "abc""#);
    fails(
        istio,
        &ISTIO.replace(" 200 ", " OK "),
        r#"field 3 (response_code): expected an HTTP status code, found "OK""#,
    );
    fails(
        istio,
        &ISTIO.replace(" 200 - ", " 200 via_upstream "),
        r#"field 4 (response_flags): expected response flags such as UH or UF,URX, or -, found "via_upstream""#,
    );
    fails(
        istio,
        &ISTIO.replace(r#""fortio""#, "fortio"),
        r#"field 13 (user_agent): expected a quoted string, found "fortio""#,
    );
    fails(
        LineFormat::EnvoyText,
        &ENVOY.replace(" 154 ", " -154 "),
        r#"field 5 (bytes_received): expected an integer, found "-154""#,
    );
}

#[test]
fn bad_timestamps_are_rejected() {
    fails(
        LineFormat::IstioText,
        &ISTIO.replace("2025-06-01T15:37:04.814Z", "01/Jun/2025:15:37:04 +0000"),
        r#"field 1 (start_time): expected an RFC 3339 timestamp, found "01/Jun/2025:15:37:04 +0000""#,
    );
    fails(
        LineFormat::EnvoyText,
        &ENVOY.replace("2016-04-15", "2016-04-31"),
        &format!("field 1 (start_time): expected an RFC 3339 timestamp, found {:?}", "2016-04-31T20:17:00.310Z"),
    );
    fails(
        LineFormat::IstioText,
        &ISTIO.replace("[2025-06-01T15:37:04.814Z]", "2025-06-01T15:37:04.814Z"),
        r#"field 1 (start_time): expected a bracketed time like [2024-05-01T12:00:00.000Z], found "2025-06-01T15:37:04.814Z""#,
    );
    fails(
        LineFormat::IstioJson,
        &ISTIO_JSON.replace("2024-03-18T10:11:12.345Z", "1710756672"),
        r#"field "start_time": expected an RFC 3339 timestamp, found "1710756672""#,
    );
}

#[test]
fn truncated_text_lines_need_the_first_three_fields() {
    fails(
        LineFormat::IstioText,
        r#"[2025-06-01T15:37:04.814Z] "GET /get HTTP/1.1""#,
        "field 3 (response_code) is missing",
    );
    fails(LineFormat::EnvoyText, "[2025-06-01T15:37:04.814Z]", "field 2 (request) is missing");
    fails(
        LineFormat::IstioText,
        r#"[2025-06-01T15:37:04.814Z] "GET /get" 200"#,
        r#"field 2 (request): expected a request line "METHOD PATH PROTOCOL", found "GET /get""#,
    );
    let cut_in_quotes = &ISTIO[..ISTIO.find("fortio").unwrap() + 3];
    fails(LineFormat::IstioText, cut_in_quotes, "field 13: unterminated quoted string");
}

#[test]
fn unterminated_quotes_and_brackets_are_rejected() {
    fails(
        LineFormat::IstioText,
        r#"[2025-06-01T15:37:04.814Z "GET / HTTP/1.1" 200"#,
        "field 1: unterminated bracketed time",
    );
    fails(
        LineFormat::IstioText,
        r#"[2025-06-01T15:37:04.814Z] "GET / HTTP/1.1 200 -"#,
        "field 2: unterminated quoted string",
    );
    fails(LineFormat::Auto, &ENVOY[..ENVOY.len() - 1], "field 13: unterminated quoted string");
}

#[test]
fn extra_fields_are_rejected() {
    fails(
        LineFormat::IstioText,
        &format!("{ISTIO} 4bf92f3577b34da6"),
        r#"field 23: unexpected extra field "4bf92f3577b34da6"; the Istio text format has at most 22 fields"#,
    );
    fails(
        LineFormat::EnvoyText,
        &format!("{ENVOY} outbound|80||x"),
        r#"field 14: unexpected extra field "outbound|80||x"; the Envoy text format has at most 13 fields"#,
    );
}

#[test]
fn json_lines_with_wrong_types_name_the_field() {
    let json = LineFormat::IstioJson;
    fails(json, &ISTIO_JSON.replace("38", "\"abc\""), r#"field "duration": expected an integer, found "abc""#);
    fails(json, &ISTIO_JSON.replace("38", "38.5"), r#"field "duration": expected an integer, found "38.5""#);
    fails(json, &ISTIO_JSON.replace("38", "-1"), r#"field "duration": expected an integer, found "-1""#);
    fails(json, &ISTIO_JSON.replace("38", "[38]"), r#"field "duration": expected a string or a number, found "[38]""#);
    fails(
        json,
        &ISTIO_JSON.replace("200", "true"),
        r#"field "response_code": expected a string or a number, found "true""#,
    );
    fails(json, r#"{"start_time":null,"method":"GET"}"#, r#"field "start_time" is missing"#);
    fails(json, r#"{"method":"GET"}"#, r#"field "start_time" is missing"#);
    fails(
        LineFormat::MeshlensJson,
        &MESHLENS_JSON.replace(r#""mtls":"unknown""#, r#""mtls":"maybe""#),
        "invalid meshlens record: field \"mtls\": unknown variant `maybe`, expected one of `mutual`, `plaintext`, `unknown`",
    );
    fails(
        LineFormat::MeshlensJson,
        &MESHLENS_JSON.replace(r#""response_flags":[],"#, ""),
        "invalid meshlens record: missing field `response_flags`",
    );
    fails(
        LineFormat::MeshlensJson,
        &MESHLENS_JSON.replace('}', r#","status":"200"}"#),
        "invalid meshlens record: field \"status\": invalid type: string \"200\", expected u16",
    );
}

#[test]
fn broken_json_is_rejected() {
    for format in [LineFormat::Auto, LineFormat::IstioJson, LineFormat::MeshlensJson] {
        fails(
            format,
            r#"{"start_time":"2024-03-18T10:11:12.345Z""#,
            "invalid JSON: EOF while parsing an object at line 1 column 40",
        );
        fails(
            format,
            r#"{"start_time":"2024-03-18T10:11:12.345Z"} {}"#,
            "invalid JSON: trailing characters at line 1 column 43",
        );
    }
    fails(
        LineFormat::IstioJson,
        "[1, 2]",
        "invalid JSON: invalid type: sequence, expected a JSON object at line 1 column 0",
    );
    fails(LineFormat::Auto, r#"{"time":"2024-03-18T10:11:12.345Z"}"#, &ParseError::UnknownJsonFormat.to_string());
}

#[test]
fn json_objects_with_too_many_fields_are_rejected() {
    let fields: Vec<String> = (0..=MAX_JSON_FIELDS).map(|i| format!("\"k{i}\":{i}")).collect();
    let line = format!(r#"{{"start_time":"2024-03-18T10:11:12.345Z",{}}}"#, fields.join(","));
    for format in [LineFormat::Auto, LineFormat::IstioJson, LineFormat::MeshlensJson] {
        fails(format, &line, "JSON object has more than 256 fields");
    }
}

#[test]
fn huge_lines_and_fields_are_rejected_or_quoted_briefly() {
    let huge = format!("[2025-06-01T15:37:04.814Z] \"GET /{} HTTP/1.1\" 200", "a".repeat(MAX_LINE_BYTES));
    fails(LineFormat::Auto, &huge, &format!("line is {} bytes long; the limit is 65536 bytes", huge.len()));
    let err = parse_bytes(huge.as_bytes(), LineFormat::IstioText).unwrap_err();
    assert_eq!(err, ParseError::LineTooLong { len: huge.len(), limit: MAX_LINE_BYTES });

    // A big field within the limit parses, and a big bad field is quoted only in part.
    let long_path = ISTIO.replace("/get", &format!("/{}", "p".repeat(30_000)));
    assert_eq!(parse_line(&long_path, LineFormat::Auto).unwrap().path.unwrap().len(), 30_001);
    let long_bad = ISTIO.replace(" 621 ", &format!(" {} ", "9".repeat(40_000)));
    let message = parse_line(&long_bad, LineFormat::Auto).unwrap_err().to_string();
    assert!(message.starts_with("field 9 (bytes_sent): expected an integer, found \"999"), "{message}");
    assert!(message.ends_with("... (40000 bytes)") && message.len() < 200, "{message}");
}

#[test]
fn invalid_utf8_fails_the_line() {
    let mut line = ISTIO.as_bytes().to_vec();
    line[40] = 0xff;
    for format in LineFormat::ALL {
        assert_eq!(parse_bytes(&line, format).unwrap_err(), ParseError::InvalidUtf8 { offset: 40 });
    }
    assert!(parse_bytes(ISTIO.as_bytes(), LineFormat::Auto).is_ok());
}

#[test]
fn garbage_is_not_an_access_log() {
    fails(
        LineFormat::Auto,
        "hello world",
        r#"cannot detect the format: expected a line starting with '[' (text access log) or '{' (JSON), found 'h'"#,
    );
    fails(LineFormat::Auto, "   \t ", "line is empty");
    fails(LineFormat::Auto, "[]", "field 1 (start_time): expected an RFC 3339 timestamp, found \"\"");
    fails(
        LineFormat::IstioText,
        "{\"start_time\":1}",
        r#"field 1 (start_time): expected a bracketed time like [2024-05-01T12:00:00.000Z], found "{\"start_time\":1}""#,
    );
    fails(
        LineFormat::IstioJson,
        ISTIO,
        "invalid JSON: invalid type: sequence, expected a JSON object at line 1 column 0",
    );
    fails(LineFormat::MeshlensJson, "\u{feff}{}", "invalid JSON: expected value at line 1 column 1");
}

/// Each format's valid line, for mutation below.
fn template() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![ISTIO, ENVOY, ISTIO_JSON, MESHLENS_JSON])
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_strings_never_panic(line in "\\PC*") {
        for format in LineFormat::ALL {
            let _ = parse_line(&line, format);
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(line in prop::collection::vec(any::<u8>(), 0..300)) {
        for format in LineFormat::ALL {
            let _ = parse_bytes(&line, format);
        }
    }

    /// Valid lines cut anywhere or with one byte replaced exercise the paths random strings rarely reach.
    #[test]
    fn mutated_valid_lines_never_panic(line in template(), at in any::<prop::sample::Index>(), byte in any::<u8>(), cut in any::<bool>()) {
        let mut bytes = line.as_bytes().to_vec();
        let at = at.index(bytes.len());
        if cut { bytes.truncate(at) } else { bytes[at] = byte }
        for format in LineFormat::ALL {
            let _ = parse_bytes(&bytes, format);
        }
    }
}
