//! Access-log lines to request records, in batches: one batch per HTTP request, several per imported file.

use crate::attribution::{Attributor, ProxyIdentity};
use crate::formats::LineParser;
use crate::lines::LineReader;
use crate::sources::{Batch, Rejection};
use meshlens_model::RequestRecord;
use std::io::{self, BufRead};

/// Reads lines and converts them in batches of a bounded number of lines.
#[derive(Debug)]
pub struct LineBatches<'a, R> {
    lines: LineReader<R>,
    parser: LineParser,
    proxy: Option<&'a ProxyIdentity>,
    attributor: &'a Attributor,
}

impl<'a, R: BufRead> LineBatches<'a, R> {
    /// Records from `input`, each attributed to `proxy` (the workload that wrote the log) where known.
    pub fn new(input: R, parser: LineParser, proxy: Option<&'a ProxyIdentity>, attributor: &'a Attributor) -> Self {
        LineBatches { lines: LineReader::new(input), parser, proxy, attributor }
    }

    /// The next batch of at most `max_lines` non-blank lines; `None` at the end of the input. Rejections
    /// carry 1-based line numbers. Blank lines are skipped without being counted.
    pub fn next_batch(&mut self, max_lines: usize) -> io::Result<Option<Batch<RequestRecord>>> {
        let mut batch = Batch::default();
        let mut seen_any = false;
        while batch.received() < max_lines {
            let Some((number, line)) = self.lines.next_line()? else { break };
            seen_any = true;
            let parsed = match line {
                Ok(bytes) if bytes.trim_ascii().is_empty() => continue,
                Ok(bytes) => self.parser.parse_bytes(bytes),
                Err(err) => Err(err),
            };
            match parsed {
                Ok(mut record) => {
                    self.attributor.attribute(&mut record, self.proxy);
                    batch.records.push(record);
                }
                Err(err) => batch.rejected.push(Rejection { item: number, reason: err.to_string() }),
            }
        }
        Ok(seen_any.then_some(batch))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshlens_model::SourceFormat;

    #[test]
    fn mixed_text_and_ndjson_lines_are_detected_per_line() {
        let mut input = concat!(
            r#"[2025-06-01T15:37:04.814Z] "GET /get HTTP/1.1" 200 - via_upstream - "-" 0 621 94 63 "-" "fortio" "f47fa353" "httpbin:8000" "10.244.1.27:8080" outbound|8000||httpbin.default.svc.cluster.local 10.244.2.30:42658 10.96.243.7:8000 10.244.2.30:58932 - default"#,
            "\n\n",
            r#"{"start_time":"2024-03-18T10:11:12.345Z","method":"GET","response_code":200}"#,
            "\nnot a log line\n"
        )
        .as_bytes()
        .to_vec();
        input.extend_from_slice(b"\xff\xfe\n");
        let proxy = ProxyIdentity::from_workload_arg("default/sleep").unwrap();
        let attributor = Attributor::default();
        let mut batches = LineBatches::new(input.as_slice(), LineParser::default(), Some(&proxy), &attributor);
        let first = batches.next_batch(3).unwrap().unwrap();
        assert_eq!(first.records.len(), 2);
        assert_eq!(first.records[0].source_workload.as_deref(), Some("sleep"));
        assert_eq!(first.records[1].source_format, SourceFormat::IstioJson);
        assert_eq!(first.rejected[0].item, 4);
        let second = batches.next_batch(3).unwrap().unwrap();
        assert_eq!(second.rejected.len(), 1);
        assert!(second.rejected[0].reason.contains("not valid UTF-8"), "{:?}", second.rejected);
        assert!(batches.next_batch(3).unwrap().is_none());
    }
}
