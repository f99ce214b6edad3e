//! Telemetry out of the request path: one access-log record per request, written by a background task
//! from a bounded queue (a full queue drops the record and counts it — traffic never waits for the log),
//! the same records and the request's spans to an OTLP endpoint ([`crate::otlp`]), and Istio's standard
//! Prometheus metrics.

use crate::otlp::{EndpointError, Exporter, OtlpOptions, ProxyResource, TraceContext};
use meshlens_model::{Mtls, Reporter, RequestRecord};
use std::borrow::Cow;
use std::fmt::Write as _;
use std::hash::BuildHasher as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

/// Access-log encodings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AccessLogFormat {
    /// Istio's TEXT format (1.9+).
    #[default]
    IstioText,
    /// The model's `RequestRecord` as JSON, one object per line.
    Json,
}

/// Where access-log lines go.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum AccessLogTarget {
    #[default]
    Stdout,
    File(PathBuf),
    Off,
}

/// One request, as the access log and metrics see it: the normalized record plus the text format's fields
/// that the model does not carry.
#[derive(Debug, Clone, Default)]
pub struct LogEntry {
    pub record: RequestRecord,
    pub transport_failure: Option<String>,
    pub upstream_local_address: Option<String>,
    /// The hop's trace context (its server span), for OTLP.
    pub trace: Option<TraceContext>,
    /// Time from the request to the end of the response, more precise than the record's milliseconds.
    pub duration: Duration,
}

/// What the Istio metrics read of a finished request: their labels and the duration.
#[derive(Debug, Clone, Copy)]
pub struct Sample<'a> {
    pub reporter: Reporter,
    pub source_workload: Option<&'a str>,
    pub source_namespace: Option<&'a str>,
    pub source_principal: Option<&'a str>,
    pub destination_workload: Option<&'a str>,
    pub destination_namespace: Option<&'a str>,
    pub destination_principal: Option<&'a str>,
    pub destination_service: Option<&'a str>,
    pub status: Option<u16>,
    /// In Envoy's order.
    pub response_flags: &'a [&'a str],
    pub mtls: Mtls,
    pub duration_ms: u64,
}

/// Records queued for the writer before new ones are dropped.
const QUEUE: usize = 8192;

/// Why telemetry could not start.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("access log: {0}")]
    AccessLog(#[from] std::io::Error),
    #[error(transparent)]
    Otlp(#[from] EndpointError),
}

#[derive(Debug)]
pub struct Telemetry {
    tx: Option<mpsc::Sender<Arc<LogEntry>>>,
    dropped: AtomicU64,
    metrics: Metrics,
    otlp: Option<Exporter>,
}

impl Telemetry {
    /// Starts the writer task (on the current runtime) unless logging is off, and the OTLP exporter when
    /// asked for.
    pub async fn start(
        target: AccessLogTarget,
        format: AccessLogFormat,
        otlp: Option<(OtlpOptions, ProxyResource)>,
    ) -> Result<Telemetry, TelemetryError> {
        let otlp = otlp.map(|(options, resource)| Exporter::start(options, &resource)).transpose()?;
        let writer: Option<Box<dyn tokio::io::AsyncWrite + Send + Unpin>> = match &target {
            AccessLogTarget::Off => None,
            AccessLogTarget::Stdout => Some(Box::new(tokio::io::stdout())),
            AccessLogTarget::File(path) => {
                let file = tokio::fs::OpenOptions::new().create(true).append(true).open(path).await?;
                Some(Box::new(file))
            }
        };
        let tx = writer.map(|mut writer| {
            let (tx, mut rx) = mpsc::channel::<Arc<LogEntry>>(QUEUE);
            tokio::spawn(async move {
                let mut buf = String::new();
                while let Some(entry) = rx.recv().await {
                    buf.clear();
                    format_entry(&mut buf, &entry, format);
                    // Drain whatever else is queued before one write and flush.
                    while let Ok(entry) = rx.try_recv() {
                        format_entry(&mut buf, &entry, format);
                    }
                    if let Err(err) = async {
                        writer.write_all(buf.as_bytes()).await?;
                        writer.flush().await
                    }
                    .await
                    {
                        tracing::warn!(%err, "access log write failed");
                    }
                }
            });
            tx
        });
        Ok(Telemetry { tx, dropped: AtomicU64::new(0), metrics: Metrics::default(), otlp })
    }

    /// The OTLP exporter, when spans and logs are exported.
    pub fn otlp(&self) -> Option<&Exporter> {
        self.otlp.as_ref()
    }

    /// Whether anything reads more of a request's record than the metrics do: the access log or OTLP.
    pub fn records_wanted(&self) -> bool {
        self.tx.is_some() || self.otlp.is_some()
    }

    /// Counts a finished request in the Istio metrics.
    pub fn observe(&self, sample: &Sample<'_>) {
        self.metrics.observe(sample);
    }

    /// Queues a finished request's record for the access log and the OTLP exporter, whichever are on
    /// ([`Telemetry::records_wanted`]).
    pub fn send(&self, entry: LogEntry) {
        if !self.records_wanted() {
            return;
        }
        let entry = Arc::new(entry);
        if let Some(otlp) = &self.otlp {
            otlp.emit_request(entry.clone());
        }
        if let Some(tx) = &self.tx
            && tx.try_send(entry).is_err()
        {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Sends what the OTLP exporter has queued, waiting at most `timeout` (at shutdown).
    pub async fn flush(&self, timeout: Duration) {
        if let Some(otlp) = &self.otlp {
            otlp.flush(timeout).await;
        }
    }

    /// Prometheus text exposition of the Istio metrics and the proxy's own counters.
    pub fn render_prometheus(&self) -> String {
        let mut out = self.metrics.render();
        let _ = writeln!(
            out,
            "# HELP meshlens_proxy_access_log_dropped_total Access-log records dropped because the queue was full."
        );
        let _ = writeln!(out, "# TYPE meshlens_proxy_access_log_dropped_total counter");
        let _ = writeln!(out, "meshlens_proxy_access_log_dropped_total {}", self.dropped.load(Ordering::Relaxed));
        if let Some(otlp) = &self.otlp {
            otlp.render_prometheus(&mut out);
        }
        out
    }
}

/// One access-log line in `format`, without the newline.
pub fn format_line(buf: &mut String, entry: &LogEntry, format: AccessLogFormat) {
    match format {
        AccessLogFormat::IstioText => istio_text(buf, entry),
        AccessLogFormat::Json => {
            if let Ok(json) = serde_json::to_string(&entry.record) {
                buf.push_str(&json);
            }
        }
    }
}

fn format_entry(buf: &mut String, entry: &LogEntry, format: AccessLogFormat) {
    format_line(buf, entry, format);
    buf.push('\n');
}

/// Istio 1.9+'s TEXT line:
/// `[%START_TIME%] "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%" %RESPONSE_CODE%
/// %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% %CONNECTION_TERMINATION_DETAILS%
/// "%UPSTREAM_TRANSPORT_FAILURE_REASON%" %BYTES_RECEIVED% %BYTES_SENT% %DURATION%
/// %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% "%REQ(X-FORWARDED-FOR)%" "%REQ(USER-AGENT)%" "%REQ(X-REQUEST-ID)%"
/// "%REQ(:AUTHORITY)%" "%UPSTREAM_HOST%" %UPSTREAM_CLUSTER_RAW% %UPSTREAM_LOCAL_ADDRESS%
/// %DOWNSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_REMOTE_ADDRESS% %REQUESTED_SERVER_NAME% %ROUTE_NAME%`
pub fn istio_text(buf: &mut String, entry: &LogEntry) {
    let r = &entry.record;
    let s = |v: &Option<String>| v.as_deref().filter(|v| !v.is_empty()).unwrap_or("-").to_owned();
    let n = |v: Option<u64>| v.map_or("-".to_owned(), |v| v.to_string());
    let flags = if r.response_flags.is_empty() { "-".to_owned() } else { r.response_flags.join(",") };
    let _ = write!(
        buf,
        "[{}] \"{} {} {}\" {} {} {} - \"{}\" {} {} {} {} \"{}\" \"{}\" \"{}\" \"{}\" \"{}\" {} {} {} {} {} {}",
        r.timestamp.format("%Y-%m-%dT%H:%M:%S%.3fZ"),
        s(&r.method),
        s(&r.path),
        s(&r.protocol),
        r.status.unwrap_or(0),
        flags,
        s(&r.response_code_details),
        s(&entry.transport_failure),
        r.bytes_received.unwrap_or(0),
        r.bytes_sent.unwrap_or(0),
        n(r.duration_ms),
        n(r.upstream_service_time_ms),
        s(&r.x_forwarded_for),
        s(&r.user_agent),
        s(&r.request_id),
        s(&r.authority),
        s(&r.upstream_host),
        s(&r.upstream_cluster),
        s(&entry.upstream_local_address),
        s(&r.downstream_local_address),
        s(&r.downstream_remote_address),
        s(&r.requested_server_name),
        s(&r.route_name),
    );
}

// ---------------------------------------------------------------------------------------------------------
// Metrics

/// Istio's default histogram buckets for `istio_request_duration_milliseconds`.
const BUCKETS: [f64; 19] = [
    0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0, 60000.0, 300000.0,
    600000.0, 1800000.0, 3600000.0,
];

/// Istio's standard labels, in exposition order.
const LABELS: [&str; 14] = [
    "reporter",
    "source_workload",
    "source_workload_namespace",
    "source_principal",
    "destination_workload",
    "destination_workload_namespace",
    "destination_principal",
    "destination_service",
    "destination_service_name",
    "destination_service_namespace",
    "request_protocol",
    "response_code",
    "response_flags",
    "connection_security_policy",
];

/// Where the values that tell series apart sit in [`LABELS`]: all but the destination service's name and
/// namespace (parts of `destination_service`) and the protocol (always `http`).
const KEY_LABELS: [usize; 11] = [0, 1, 2, 3, 4, 5, 6, 7, 11, 12, 13];

#[derive(Debug, Default)]
struct Series {
    count: u64,
    sum: f64,
    /// Requests by the first bucket bound they are within (the last slot: above every bound); summed into
    /// Prometheus' cumulative buckets when rendered, so that counting a request touches one slot.
    buckets: [u64; BUCKETS.len() + 1],
}

/// The series, found by a hash of their label values so that counting a request allocates nothing unless
/// it starts a new series. The hash (foldhash, over a couple of hundred bytes of label values per request)
/// is about a tenth of std's SipHash here; a collision only puts two series in one [`SameHash`] list,
/// which the label comparison tells apart.
#[derive(Debug, Default)]
struct Metrics {
    series: Mutex<foldhash::HashMap<u64, SameHash>>,
    hasher: foldhash::fast::RandomState,
}

/// The series (label values and counts) whose label values hash alike: almost always one.
type SameHash = Vec<(Vec<String>, Series)>;

fn unknown(value: Option<&str>) -> Cow<'_, str> {
    match value {
        Some(v) if !v.is_empty() => Cow::Borrowed(v),
        _ => Cow::Borrowed("unknown"),
    }
}

fn principal(value: Option<&str>) -> Cow<'_, str> {
    match value {
        None => Cow::Borrowed("unknown"),
        Some(p) if p.starts_with("spiffe://") => Cow::Borrowed(p),
        Some(p) => Cow::Owned(format!("spiffe://{p}")),
    }
}

/// `response_code` label values without formatting a number per request.
static STATUS_LABELS: std::sync::LazyLock<Vec<String>> =
    std::sync::LazyLock::new(|| (0..600).map(|code: u16| code.to_string()).collect());

impl Metrics {
    fn observe(&self, r: &Sample<'_>) {
        // Istio reports the security policy only where it is known: on the server side.
        let security = match (r.reporter, r.mtls) {
            (Reporter::Destination, Mtls::Mutual) => "mutual_tls",
            (Reporter::Destination, _) => "none",
            _ => "unknown",
        };
        // Istio's gateways report their client-side view as `source`; Prometheus queries (and Kiali) rely
        // on it, so the label follows Istio even though the access log says `gateway`.
        let reporter = match r.reporter {
            Reporter::Gateway => "source",
            other => other.as_str(),
        };
        let status = r.status.unwrap_or(0);
        let status = match STATUS_LABELS.get(usize::from(status)) {
            Some(label) => Cow::Borrowed(label.as_str()),
            None => Cow::Owned(status.to_string()),
        };
        let flags = match r.response_flags {
            [] => Cow::Borrowed("-"),
            [one] => Cow::Borrowed(*one),
            many => Cow::Owned(many.join(",")),
        };
        // The values that tell series apart, in `LABELS` order ([`KEY_LABELS`]); the others follow from
        // them and are worked out only for a new series.
        let key: [Cow<'_, str>; KEY_LABELS.len()] = [
            Cow::Borrowed(reporter),
            unknown(r.source_workload),
            unknown(r.source_namespace),
            principal(r.source_principal),
            unknown(r.destination_workload),
            unknown(r.destination_namespace),
            principal(r.destination_principal),
            unknown(r.destination_service),
            status,
            flags,
            Cow::Borrowed(security),
        ];
        // Hashing a label costs more than comparing it: the hash takes the labels that tell series apart
        // most often (namespaces, principals and the security policy mostly follow from the workloads),
        // and finding the series still compares all of them.
        let hash = self.hasher.hash_one((&key[0], &key[1], &key[4], &key[7], &key[8], &key[9]));
        let ms = r.duration_ms as f64;
        let mut series = self.series.lock().unwrap_or_else(|e| e.into_inner());
        let same_hash = series.entry(hash).or_default();
        let found = same_hash.iter().position(|(labels, _)| KEY_LABELS.iter().zip(&key).all(|(&i, v)| labels[i] == *v));
        let index = match found {
            Some(index) => index,
            None => {
                let (service_name, service_namespace) = r
                    .destination_service
                    .and_then(meshlens_model::names::service_fqdn_parts)
                    .unwrap_or(("unknown", "unknown"));
                let [reporter, sw, sns, sp, dw, dns, dp, ds, code, flags, security] = key;
                let labels = [
                    reporter,
                    sw,
                    sns,
                    sp,
                    dw,
                    dns,
                    dp,
                    ds,
                    service_name.into(),
                    service_namespace.into(),
                    "http".into(),
                    code,
                    flags,
                    security,
                ];
                same_hash.push((labels.map(Cow::into_owned).into(), Series::default()));
                same_hash.len() - 1
            }
        };
        let entry = &mut same_hash[index].1;
        entry.count += 1;
        entry.sum += ms;
        entry.buckets[BUCKETS.partition_point(|&bound| bound < ms)] += 1;
    }

    fn render(&self) -> String {
        let series = self.series.lock().unwrap_or_else(|e| e.into_inner());
        let mut rows: Vec<(String, &Series)> =
            series.values().flatten().map(|(labels, s)| (label_set(labels), s)).collect();
        rows.sort_by(|a, b| a.0.cmp(&b.0));
        let mut out = String::new();
        let _ = writeln!(out, "# HELP istio_requests_total Requests processed by the proxy.");
        let _ = writeln!(out, "# TYPE istio_requests_total counter");
        for (labels, s) in &rows {
            let _ = writeln!(out, "istio_requests_total{{{labels}}} {}", s.count);
        }
        let _ = writeln!(out, "# HELP istio_request_duration_milliseconds Request duration in milliseconds.");
        let _ = writeln!(out, "# TYPE istio_request_duration_milliseconds histogram");
        for (labels, s) in &rows {
            let cumulative = s.buckets.iter().scan(0, |total, count| {
                *total += count;
                Some(*total)
            });
            for (bound, count) in BUCKETS.iter().zip(cumulative) {
                let _ = writeln!(out, "istio_request_duration_milliseconds_bucket{{{labels},le=\"{bound}\"}} {count}");
            }
            let _ = writeln!(out, "istio_request_duration_milliseconds_bucket{{{labels},le=\"+Inf\"}} {}", s.count);
            let _ = writeln!(out, "istio_request_duration_milliseconds_sum{{{labels}}} {}", s.sum);
            let _ = writeln!(out, "istio_request_duration_milliseconds_count{{{labels}}} {}", s.count);
        }
        out
    }
}

fn label_set(values: &[String]) -> String {
    LABELS
        .iter()
        .zip(values)
        .map(|(name, value)| {
            let escaped = value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n");
            format!("{name}=\"{escaped}\"")
        })
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshlens_model::{Reporter, RequestRecord};

    #[test]
    fn text_line_has_every_istio_field() {
        let record = RequestRecord {
            timestamp: "2026-11-25T21:26:18.409Z".parse().unwrap(),
            method: Some("GET".into()),
            path: Some("/productpage".into()),
            protocol: Some("HTTP/1.1".into()),
            status: Some(404),
            response_flags: vec!["NR".into()],
            response_code_details: Some("route_not_found".into()),
            bytes_received: Some(0),
            bytes_sent: Some(0),
            duration_ms: Some(1),
            request_id: Some("abc".into()),
            authority: Some("bookinfo".into()),
            downstream_local_address: Some("127.0.0.1:8080".into()),
            downstream_remote_address: Some("127.0.0.1:5555".into()),
            ..Default::default()
        };
        let mut line = String::new();
        istio_text(&mut line, &LogEntry { record, ..Default::default() });
        assert_eq!(
            line,
            "[2026-11-25T21:26:18.409Z] \"GET /productpage HTTP/1.1\" 404 NR route_not_found - \"-\" 0 0 1 - \"-\" \"-\" \
             \"abc\" \"bookinfo\" \"-\" - - 127.0.0.1:8080 127.0.0.1:5555 - -"
        );
    }

    fn sample(destination_service: &str, duration_ms: u64) -> Sample<'_> {
        Sample {
            reporter: Reporter::Destination,
            source_workload: None,
            source_namespace: None,
            source_principal: None,
            destination_workload: None,
            destination_namespace: None,
            destination_principal: None,
            destination_service: Some(destination_service),
            status: Some(200),
            response_flags: &[],
            mtls: meshlens_model::Mtls::Mutual,
            duration_ms,
        }
    }

    #[test]
    fn metrics_use_istio_names() {
        let metrics = Metrics::default();
        metrics.observe(&sample("reviews.default.svc.cluster.local", 7));
        let text = metrics.render();
        assert!(text.contains("istio_requests_total{reporter=\"destination\""), "{text}");
        assert!(text.contains("destination_service_name=\"reviews\""), "{text}");
        assert!(text.contains("connection_security_policy=\"mutual_tls\"} 1"), "{text}");
        assert!(text.contains("le=\"10\"} 1"), "{text}");
        assert!(text.contains("le=\"5\"} 0"), "{text}");
    }

    #[test]
    fn histogram_buckets_are_cumulative() {
        let metrics = Metrics::default();
        for ms in [0, 5, 7, 7_000, 4_000_000] {
            metrics.observe(&sample("reviews.default.svc.cluster.local", ms));
        }
        let text = metrics.render();
        let bucket = |le: &str| {
            text.lines()
                .find(|l| {
                    l.starts_with("istio_request_duration_milliseconds_bucket{")
                        && l.contains(&format!("le=\"{le}\"}}"))
                })
                .and_then(|l| l.rsplit(' ').next())
                .map(str::to_owned)
        };
        let counts: Vec<_> = ["0.5", "5", "10", "5000", "10000", "3600000", "+Inf"].map(bucket).into_iter().collect();
        let expected = ["1", "2", "3", "3", "4", "4", "5"].map(|c| Some(c.to_owned()));
        assert_eq!(counts, expected, "{text}");
    }
}
