//! Route usage: which configured route (VirtualService HTTP route, or Ingress rule for gateway traffic)
//! each client-side request took, and per route its requests, errors, latency and last use; routes nobody
//! used, requests the proxies found no route for (NR), requests no configured route matches, and weighted
//! splits whose observed distribution drifts from the weights.
//!
//! A request is attributed to a route by the `route_name` its proxy logged when a route of that name
//! applies to its host; otherwise by evaluating the route table as Envoy does (first match wins) on what
//! the log shows: authority, path (without query string), method, source workload and namespace.
//! Conditions a log does not show (headers, query parameters) never match, so such routes are attributed
//! only by name.

use super::codes::{ML2004, ML2005, ML2006};
use super::stats::{Histogram, Latency, chi_square, chi_square_p_value};
use super::{TrafficOptions, find_workload, finding, origin_of, workload_label};
use crate::Finding;
use chrono::{DateTime, Utc};
use meshlens_model::mesh::k8s::{HttpIngressPath, Ingress};
use meshlens_model::mesh::meta::labels_match;
use meshlens_model::mesh::networking::{HttpMatchRequest, HttpRoute, StringMatch, VirtualService};
use meshlens_model::mesh::{Kind, MeshConfig, Resource, WorkloadRef, host_matches, resolve_gateway_ref, resolve_host};
use regex::Regex;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// Failures observed on a set of requests, by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failures {
    /// Status 5xx, or no response at all.
    pub server_errors: u64,
    /// Of those, 502, 503 or 504 (Envoy's `gateway-error` retry condition).
    pub gateway_errors: u64,
    /// Envoy's upstream timeout (UT) or status 504.
    pub timeouts: u64,
    /// Retry limit reached (URX).
    pub retries_exhausted: u64,
    /// Rejected by circuit breaking (UO).
    pub overflows: u64,
    /// Upstream connection failure (UF).
    pub connect_failures: u64,
    /// Upstream connection terminated (UC).
    pub connection_terminations: u64,
}

impl Failures {
    pub(super) fn add(&mut self, other: &Failures) {
        self.server_errors += other.server_errors;
        self.gateway_errors += other.gateway_errors;
        self.timeouts += other.timeouts;
        self.retries_exhausted += other.retries_exhausted;
        self.overflows += other.overflows;
        self.connect_failures += other.connect_failures;
        self.connection_terminations += other.connection_terminations;
    }
}

impl Failures {
    /// The failures among `count` requests that ended with `status` and `flags`.
    pub(super) fn of(status: Option<u16>, flags: FailureFlags, count: u64) -> Failures {
        let flag = |f: FailureFlags| if flags.contains(f) { count } else { 0 };
        let when = |condition: bool| if condition { count } else { 0 };
        Failures {
            server_errors: when(status.is_none_or(|s| s >= 500)),
            gateway_errors: when(matches!(status, Some(502..=504))),
            timeouts: when(status == Some(504) || flags.contains(FailureFlags::UT)),
            retries_exhausted: flag(FailureFlags::URX),
            overflows: flag(FailureFlags::UO),
            connect_failures: flag(FailureFlags::UF),
            connection_terminations: flag(FailureFlags::UC),
        }
    }
}

/// The Envoy response flags that route usage and failure counts tell apart, as a set; others are ignored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub(super) struct FailureFlags(u8);

impl FailureFlags {
    /// No route (NR).
    pub const NR: FailureFlags = FailureFlags(1);
    pub const UT: FailureFlags = FailureFlags(1 << 1);
    pub const URX: FailureFlags = FailureFlags(1 << 2);
    pub const UO: FailureFlags = FailureFlags(1 << 3);
    pub const UF: FailureFlags = FailureFlags(1 << 4);
    pub const UC: FailureFlags = FailureFlags(1 << 5);

    /// The flag named `name` as logged (`URX`), if it is one of these.
    pub fn named(name: &str) -> FailureFlags {
        match name {
            "NR" => FailureFlags::NR,
            "UT" => FailureFlags::UT,
            "URX" => FailureFlags::URX,
            "UO" => FailureFlags::UO,
            "UF" => FailureFlags::UF,
            "UC" => FailureFlags::UC,
            _ => FailureFlags::default(),
        }
    }

    pub fn insert(&mut self, other: FailureFlags) {
        self.0 |= other.0;
    }

    pub fn contains(self, other: FailureFlags) -> bool {
        self.0 & other.0 == other.0
    }
}

/// One configured route.
#[derive(Debug)]
pub(super) struct RouteEntry<'a> {
    /// `VirtualService ns/name "route-name"` or `VirtualService ns/name #2`, `Ingress ns/name host/path`.
    pub id: String,
    /// `Kind ns/name` of the resource defining it.
    pub resource: String,
    pub origin: Option<String>,
    /// Hosts, resolved as Istio resolves them in the resource's namespace.
    pub hosts: Vec<String>,
    /// `mesh`, `namespace/gateway`, or [`INGRESS`] for Ingress rules.
    pub gateways: Vec<String>,
    pub kind: RouteKind<'a>,
}

#[derive(Debug)]
pub(super) enum RouteKind<'a> {
    Http { vs: &'a VirtualService, index: usize, route: &'a HttpRoute },
    Ingress { path: &'a HttpIngressPath },
}

/// The pseudo-gateway Ingress rules are bound to: the mesh's ingress gateways serve them.
const INGRESS: &str = "<ingress>";

impl RouteEntry<'_> {
    /// The name Envoy logs as `%ROUTE_NAME%` for this route (Istio uses the HTTP route's `name`).
    fn envoy_name(&self) -> Option<&str> {
        match &self.kind {
            RouteKind::Http { route, .. } => route.name.as_deref(),
            RouteKind::Ingress { .. } => None,
        }
    }
}

/// Every HTTP route of the loaded VirtualServices and Ingresses, in the order Istio evaluates them within
/// a host (VirtualServices in load order, routes in order).
pub(super) fn route_table(mesh: &MeshConfig) -> Vec<RouteEntry<'_>> {
    let mut table = Vec::new();
    for loaded in mesh.of_kind(Kind::VirtualService) {
        let Resource::VirtualService(vs) = &loaded.resource else { continue };
        let namespace = vs.metadata.ns();
        let hosts: Vec<String> = vs.spec.hosts.iter().map(|h| resolve_host(h, namespace)).collect();
        let gateways: Vec<String> = if vs.spec.gateways.is_empty() {
            vec!["mesh".to_owned()]
        } else {
            vs.spec.gateways.iter().map(|g| resolve_gateway_ref(g, namespace)).collect()
        };
        for (index, route) in vs.spec.http.iter().enumerate() {
            let rule = route.name.as_ref().map_or_else(|| format!("#{index}"), |n| format!("{n:?}"));
            table.push(RouteEntry {
                id: format!("{} {rule}", loaded.resource.reference()),
                resource: loaded.resource.reference(),
                origin: Some(origin_of(loaded)),
                hosts: hosts.clone(),
                gateways: gateways.clone(),
                kind: RouteKind::Http { vs, index, route },
            });
        }
    }
    for loaded in mesh.of_kind(Kind::Ingress) {
        let Resource::Ingress(ingress) = &loaded.resource else { continue };
        push_ingress_rules(&mut table, loaded, ingress);
    }
    table
}

fn push_ingress_rules<'a>(
    table: &mut Vec<RouteEntry<'a>>,
    loaded: &'a meshlens_model::mesh::LoadedResource,
    ingress: &'a Ingress,
) {
    for rule in &ingress.spec.rules {
        let host = rule.host.clone().unwrap_or_else(|| "*".to_owned());
        for path in rule.http.iter().flat_map(|http| &http.paths) {
            table.push(RouteEntry {
                id: format!("{} {host}{}", loaded.resource.reference(), path.path.as_deref().unwrap_or("/")),
                resource: loaded.resource.reference(),
                origin: Some(origin_of(loaded)),
                hosts: vec![host.clone()],
                gateways: vec![INGRESS.to_owned()],
                kind: RouteKind::Ingress { path },
            });
        }
    }
}

/// Client-side requests grouped by what route attribution needs. NR requests never reached a cluster,
/// so their direction is unknown; they are included whatever it is.
#[derive(Debug)]
pub(super) struct TrafficRow {
    reporter: String,
    source_namespace: Option<String>,
    source_workload: Option<String>,
    authority: Option<String>,
    /// Only for NR and unmatched requests (see [`ClientRow::path`]).
    path: Option<String>,
    method: Option<String>,
    destination_service: Option<String>,
    destination_subset: Option<String>,
    /// [`Attribution::code`].
    attribution: i32,
    requests: u64,
    failures: Failures,
    last_seen: DateTime<Utc>,
    durations: Histogram,
}

/// Client-side requests alike in everything the client-side analyses look at, as the pass over the window
/// groups them (down to status, flags and duration: failures are classified from those, and latency
/// percentiles come out of exact duration histograms).
#[derive(Debug, Clone, Copy)]
pub(super) struct ClientRow<'a> {
    pub reporter: &'a str,
    pub outbound: bool,
    pub source_namespace: Option<&'a str>,
    pub source_workload: Option<&'a str>,
    pub authority: Option<&'a str>,
    /// Only where the report lists it, for NR and unmatched requests ([`lists_path`]): paths
    /// carry ids (`/orders/1234`), and grouping by them would make nearly every request a group of its own.
    pub path: Option<&'a str>,
    pub method: Option<&'a str>,
    pub destination_service: Option<&'a str>,
    pub destination_subset: Option<&'a str>,
    pub status: Option<u16>,
    pub flags: FailureFlags,
    pub duration_ms: Option<u64>,
    /// [`Attribution::code`], from [`Attributor::code`].
    pub attribution: i32,
    pub requests: u64,
    pub last_seen: DateTime<Utc>,
}

/// What callers experienced over the window: the rows route attribution works on, and per destination
/// service the requests and failures, and who called it.
#[derive(Debug, Default)]
pub(super) struct ClientTraffic {
    pub rows: Vec<TrafficRow>,
    /// Outbound requests per destination service.
    pub services: BTreeMap<String, (u64, Failures)>,
    /// (source namespace, source workload, destination service) of outbound requests.
    pub calls: BTreeSet<(String, String, String)>,
}

impl<'a> FromIterator<ClientRow<'a>> for ClientTraffic {
    fn from_iter<I: IntoIterator<Item = ClientRow<'a>>>(rows: I) -> Self {
        type Key<'a> = (&'a str, Option<&'a str>, Option<&'a str>, Option<&'a str>, Option<&'a str>, Option<&'a str>);
        type Destination<'a> = (Option<&'a str>, Option<&'a str>, i32);
        let owned = |s: Option<&str>| s.map(str::to_owned);
        let mut groups: HashMap<(Key<'a>, Destination<'a>), TrafficRow> = HashMap::new();
        let mut traffic = ClientTraffic::default();
        for row in rows {
            let failures = Failures::of(row.status, row.flags, row.requests);
            if row.outbound
                && let Some(service) = row.destination_service
            {
                let (requests, total) = traffic.services.entry(service.to_owned()).or_default();
                *requests += row.requests;
                total.add(&failures);
                if let (Some(namespace), Some(workload)) = (row.source_namespace, row.source_workload) {
                    traffic.calls.insert((namespace.to_owned(), workload.to_owned(), service.to_owned()));
                }
            }
            let key = (
                (row.reporter, row.source_namespace, row.source_workload, row.authority, row.path, row.method),
                (row.destination_service, row.destination_subset, row.attribution),
            );
            let group = groups.entry(key).or_insert_with(|| TrafficRow {
                reporter: row.reporter.to_owned(),
                source_namespace: owned(row.source_namespace),
                source_workload: owned(row.source_workload),
                authority: owned(row.authority),
                path: owned(row.path),
                method: owned(row.method),
                destination_service: owned(row.destination_service),
                destination_subset: owned(row.destination_subset),
                attribution: row.attribution,
                requests: 0,
                failures: Failures::default(),
                last_seen: row.last_seen,
                durations: Histogram::default(),
            });
            group.requests += row.requests;
            group.failures.add(&failures);
            group.last_seen = group.last_seen.max(row.last_seen);
            if let Some(duration) = row.duration_ms {
                group.durations.add(duration, row.requests);
            }
        }
        traffic.rows = groups.into_values().collect();
        traffic
    }
}

/// A destination of a weighted route: configured weight against observed requests.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SplitDestination {
    pub host: String,
    pub subset: Option<String>,
    pub weight: i32,
    pub observed: u64,
    /// Share of the requests that reached one of the route's destinations, percent.
    pub observed_percent: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Split {
    pub destinations: Vec<SplitDestination>,
    pub chi_square: f64,
    pub p_value: f64,
    /// Every destination expected at least 5 requests, the usual condition for the test to hold.
    pub enough_samples: bool,
    pub drift: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RouteUsage {
    pub route: String,
    pub resource: String,
    pub hosts: Vec<String>,
    pub gateways: Vec<String>,
    pub requests: u64,
    /// Requests attributed by the logged route name (the rest by evaluating the route's matches).
    pub matched_by_name: u64,
    pub errors: u64,
    pub error_rate: f64,
    pub failures: Failures,
    pub latency: Option<Latency>,
    pub last_seen: Option<DateTime<Utc>>,
    /// Requests by method.
    pub methods: BTreeMap<String, u64>,
    /// Requests to hosts this route serves, through any route: evidence that the logs cover the host.
    pub host_requests: u64,
    pub split: Option<Split>,
    /// Index into [`route_table`], for the analyses that read the route's configuration.
    #[serde(skip)]
    pub(super) entry: usize,
}

/// Requests a proxy found no route for (NR).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NoRoute {
    pub authority: String,
    pub source: String,
    pub requests: u64,
    /// The most frequent path.
    pub example_path: Option<String>,
}

/// Requests to a host with routes, none of which matches what the log shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Unmatched {
    pub authority: String,
    pub method: Option<String>,
    pub path: Option<String>,
    pub requests: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RouteReport {
    /// Every configured route, used or not, in route-table order.
    pub routes: Vec<RouteUsage>,
    /// Routes without requests in the window.
    pub unused: Vec<String>,
    pub no_route: Vec<NoRoute>,
    /// At most [`MAX_UNMATCHED`], most requests first.
    pub unmatched: Vec<Unmatched>,
    /// Requests to hosts that no route configures (Istio's default route).
    pub default_route_requests: u64,
}

/// Longest `unmatched` list reported; paths with ids in them would otherwise flood the report.
pub const MAX_UNMATCHED: usize = 50;

/// What a request looks like to route matching.
struct Request<'r> {
    /// `mesh`, or the gateways and [`INGRESS`] for a gateway's records.
    gateways: Vec<String>,
    /// The authority's host, as the route's hosts are compared with it.
    host: String,
    authority: &'r str,
    path: &'r str,
    method: Option<&'r str>,
    source_namespace: Option<&'r str>,
    source_labels: Option<&'r BTreeMap<String, String>>,
}

/// Evaluates route matches, compiling each regex once.
#[derive(Default)]
pub(super) struct Matcher {
    regexes: HashMap<(String, bool), Option<Regex>>,
}

impl Matcher {
    /// Istio's StringMatch: `regex` must match the whole value (RE2 semantics).
    fn string(&mut self, m: &StringMatch, value: &str, ignore_case: bool) -> bool {
        let fold = |s: &str| if ignore_case { s.to_ascii_lowercase() } else { s.to_owned() };
        if let Some(exact) = &m.exact {
            fold(exact) == fold(value)
        } else if let Some(prefix) = &m.prefix {
            fold(value).starts_with(&fold(prefix))
        } else if let Some(pattern) = &m.regex {
            let regex = self.regexes.entry((pattern.clone(), ignore_case)).or_insert_with(|| {
                let flags = if ignore_case { "(?i)" } else { "" };
                Regex::new(&format!("{flags}^(?:{pattern})$")).ok()
            });
            regex.as_ref().is_some_and(|r| r.is_match(value))
        } else {
            true
        }
    }

    fn request(&mut self, m: &HttpMatchRequest, vs_namespace: &str, request: &Request<'_>) -> bool {
        // Conditions that access logs do not record.
        if !m.headers.is_empty() || !m.query_params.is_empty() || !m.without_headers.is_empty() || m.scheme.is_some() {
            return false;
        }
        let uri_ok = m.uri.as_ref().is_none_or(|uri| self.string(uri, request.path, m.ignore_uri_case));
        let method_ok =
            m.method.as_ref().is_none_or(|method| request.method.is_some_and(|v| self.string(method, v, false)));
        let authority_ok = m.authority.as_ref().is_none_or(|a| self.string(a, request.authority, false));
        let labels_ok = m.source_labels.is_empty()
            || request.source_labels.is_some_and(|labels| labels_match(&m.source_labels, labels));
        let namespace_ok = m.source_namespace.as_ref().is_none_or(|ns| request.source_namespace == Some(ns.as_str()));
        let gateways_ok = m.gateways.is_empty()
            || m.gateways.iter().any(|g| request.gateways.contains(&resolve_gateway_ref(g, vs_namespace)));
        uri_ok && method_ok && authority_ok && labels_ok && namespace_ok && gateways_ok
    }

    fn entry(&mut self, entry: &RouteEntry<'_>, request: &Request<'_>) -> bool {
        match &entry.kind {
            RouteKind::Http { vs, route, .. } => {
                route.matches.is_empty() || route.matches.iter().any(|m| self.request(m, vs.metadata.ns(), request))
            }
            RouteKind::Ingress { path } => ingress_path_matches(path, request.path),
        }
    }
}

/// Kubernetes Ingress path semantics: `Exact` compares whole paths, `Prefix` whole path elements;
/// `ImplementationSpecific` is a prefix for Istio.
fn ingress_path_matches(rule: &HttpIngressPath, path: &str) -> bool {
    let wanted = rule.path.as_deref().unwrap_or("/");
    match rule.path_type.as_deref() {
        Some("Exact") => path == wanted,
        Some("Prefix") => {
            let wanted = wanted.trim_end_matches('/');
            wanted.is_empty() || path == wanted || path.strip_prefix(wanted).is_some_and(|rest| rest.starts_with('/'))
        }
        _ => path.starts_with(wanted),
    }
}

/// The host a sidecar's route configuration would look up for an authority: short names are relative
/// to the client's namespace, `name.namespace` is a service name too.
fn mesh_host(host: &str, source_namespace: Option<&str>) -> String {
    match host.split('.').count() {
        1 => resolve_host(host, source_namespace.unwrap_or("default")),
        2 => format!("{host}.svc.cluster.local"),
        3 if host.ends_with(".svc") => format!("{host}.cluster.local"),
        _ => host.to_owned(),
    }
}

/// Strips the port from an authority (`reviews:9080`, `[::1]:80`).
fn authority_host(authority: &str) -> &str {
    match authority.rsplit_once(':') {
        Some((host, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => authority,
    }
}

/// The gateways whose selector picks `workload` (all of them when the workload is unknown).
fn gateways_of(mesh: &MeshConfig, workload: Option<&WorkloadRef>) -> Vec<String> {
    let mut gateways: Vec<String> = mesh
        .of_kind(Kind::Gateway)
        .filter_map(|loaded| match &loaded.resource {
            Resource::Gateway(gw) => {
                let selected = workload.is_none_or(|w| labels_match(&gw.spec.selector, &w.labels));
                selected.then(|| format!("{}/{}", gw.metadata.ns(), gw.metadata.name))
            }
            _ => None,
        })
        .collect();
    gateways.push(INGRESS.to_owned());
    gateways
}

/// Where a group of requests went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Attribution {
    Route { entry: usize, by_name: bool },
    NoRoute,
    Unmatched,
    Default,
}

/// [`Attribution::code`]s of the requests that took no route.
const NO_ROUTE: i32 = -1;
const UNMATCHED: i32 = -2;
const DEFAULT_ROUTE: i32 = -3;

impl Attribution {
    /// The attribution as the client query groups by it: `2 × entry + by_name` for a route of the
    /// [`route_table`], a negative constant otherwise.
    fn code(self) -> i32 {
        match self {
            Attribution::Route { entry, by_name } => {
                i32::try_from(entry).map_or(i32::MAX, |e| e.saturating_mul(2).saturating_add(i32::from(by_name)))
            }
            Attribution::NoRoute => NO_ROUTE,
            Attribution::Unmatched => UNMATCHED,
            Attribution::Default => DEFAULT_ROUTE,
        }
    }

    fn from_code(code: i32) -> Option<Attribution> {
        match code {
            NO_ROUTE => Some(Attribution::NoRoute),
            UNMATCHED => Some(Attribution::Unmatched),
            DEFAULT_ROUTE => Some(Attribution::Default),
            code if code >= 0 => Some(Attribution::Route { entry: (code / 2) as usize, by_name: code % 2 == 1 }),
            _ => None,
        }
    }
}

/// Whether the report lists the paths of requests attributed `code`: those of NR and unmatched requests.
pub(super) fn lists_path(code: i32) -> bool {
    matches!(code, NO_ROUTE | UNMATCHED)
}

/// What route attribution looks at of a request: what its access-log record shows.
#[derive(Debug, Clone, Copy)]
pub(super) struct RouteKey<'r> {
    pub reporter: &'r str,
    pub source_namespace: Option<&'r str>,
    pub source_workload: Option<&'r str>,
    pub authority: Option<&'r str>,
    pub path: Option<&'r str>,
    pub method: Option<&'r str>,
    pub route_name: Option<&'r str>,
    pub no_route: bool,
}

/// Attributes requests to the routes of one configuration; the rules are in the module docs.
pub(super) struct Attributor<'m> {
    mesh: &'m MeshConfig,
    table: Vec<RouteEntry<'m>>,
    workloads: Vec<WorkloadRef>,
}

impl<'m> Attributor<'m> {
    pub(super) fn new(mesh: &'m MeshConfig) -> Self {
        Attributor { mesh, table: route_table(mesh), workloads: mesh.workloads() }
    }

    /// The request as route matching sees it.
    fn request<'a>(&'a self, key: &RouteKey<'a>) -> Request<'a> {
        let source = match (key.source_namespace, key.source_workload) {
            (Some(namespace), Some(name)) => find_workload(&self.workloads, namespace, name),
            _ => None,
        };
        let authority = key.authority.unwrap_or("");
        let raw_host = authority_host(authority).to_ascii_lowercase();
        let (gateways, host) = if key.reporter == "gateway" {
            (gateways_of(self.mesh, source), raw_host)
        } else {
            (vec!["mesh".to_owned()], mesh_host(&raw_host, key.source_namespace))
        };
        Request {
            gateways,
            host,
            authority,
            path: key.path.map_or("/", |p| p.split('?').next().unwrap_or(p)),
            method: key.method,
            source_namespace: key.source_namespace,
            source_labels: source.map(|w| &w.labels),
        }
    }

    /// The routes that serve the request's host through one of its gateways, in evaluation order.
    fn candidates(&self, request: &Request<'_>) -> Vec<usize> {
        (0..self.table.len())
            .filter(|&i| {
                let entry = &self.table[i];
                entry.gateways.iter().any(|g| request.gateways.contains(g))
                    && entry.hosts.iter().any(|h| host_matches(h, &request.host))
            })
            .collect()
    }

    /// The [`Attribution::code`] of a request: requests alike in their key go the same way, so callers
    /// attribute each distinct key once.
    pub(super) fn code(&self, matcher: &mut Matcher, key: &RouteKey<'_>) -> i32 {
        self.attribute(matcher, key).code()
    }

    fn attribute(&self, matcher: &mut Matcher, key: &RouteKey<'_>) -> Attribution {
        if key.no_route {
            return Attribution::NoRoute;
        }
        let request = self.request(key);
        let candidates = self.candidates(&request);
        let by_name = key
            .route_name
            .and_then(|name| candidates.iter().copied().find(|&i| self.table[i].envoy_name() == Some(name)));
        if let Some(entry) = by_name {
            Attribution::Route { entry, by_name: true }
        } else if let Some(entry) = candidates.iter().copied().find(|&i| matcher.entry(&self.table[i], &request)) {
            Attribution::Route { entry, by_name: false }
        } else if candidates.is_empty() {
            Attribution::Default
        } else {
            Attribution::Unmatched
        }
    }
}

#[derive(Default)]
struct Accumulator {
    requests: u64,
    matched_by_name: u64,
    failures: Failures,
    last_seen: Option<DateTime<Utc>>,
    durations: Histogram,
    methods: BTreeMap<String, u64>,
    destinations: BTreeMap<(Option<String>, Option<String>), u64>,
    host_requests: u64,
}

/// Sums the client-side requests per route, as [`client_traffic`] attributed them.
pub(super) fn analyze(mesh: &MeshConfig, rows: &[TrafficRow], options: &TrafficOptions) -> (RouteReport, Vec<Finding>) {
    let attributor = Attributor::new(mesh);
    let table = &attributor.table;
    let mut accumulators: Vec<Accumulator> = table.iter().map(|_| Accumulator::default()).collect();
    let mut no_route: BTreeMap<(String, String), (u64, BTreeMap<String, u64>)> = BTreeMap::new();
    let mut unmatched: BTreeMap<(String, Option<String>, Option<String>), u64> = BTreeMap::new();
    let mut default_route_requests = 0;

    for row in rows {
        let key = RouteKey {
            reporter: &row.reporter,
            source_namespace: row.source_namespace.as_deref(),
            source_workload: row.source_workload.as_deref(),
            authority: row.authority.as_deref(),
            path: row.path.as_deref(),
            method: row.method.as_deref(),
            route_name: None,
            no_route: row.attribution == NO_ROUTE,
        };
        let request = attributor.request(&key);
        for i in attributor.candidates(&request) {
            accumulators[i].host_requests += row.requests;
        }
        let authority = request.authority;
        let path = request.path;
        let Some(attribution) = Attribution::from_code(row.attribution).filter(|a| match a {
            Attribution::Route { entry, .. } => *entry < table.len(),
            _ => true,
        }) else {
            continue;
        };
        match attribution {
            Attribution::Route { entry, by_name } => {
                let acc = &mut accumulators[entry];
                acc.requests += row.requests;
                if by_name {
                    acc.matched_by_name += row.requests;
                }
                acc.failures.add(&row.failures);
                acc.last_seen = acc.last_seen.max(Some(row.last_seen));
                acc.durations.merge(&row.durations);
                *acc.methods.entry(row.method.clone().unwrap_or_else(|| "-".to_owned())).or_default() += row.requests;
                *acc.destinations
                    .entry((row.destination_service.clone(), row.destination_subset.clone()))
                    .or_default() += row.requests;
            }
            Attribution::NoRoute => {
                let source = workload_label(row.source_namespace.as_deref(), row.source_workload.as_deref());
                let (requests, paths) = no_route.entry((authority.to_owned(), source)).or_default();
                *requests += row.requests;
                *paths.entry(path.to_owned()).or_default() += row.requests;
            }
            Attribution::Unmatched => {
                *unmatched.entry((authority.to_owned(), row.method.clone(), Some(path.to_owned()))).or_default() +=
                    row.requests;
            }
            Attribution::Default => default_route_requests += row.requests,
        }
    }

    let mut report = RouteReport {
        routes: Vec::new(),
        unused: Vec::new(),
        no_route: no_route
            .into_iter()
            .map(|((authority, source), (requests, paths))| NoRoute {
                authority,
                source,
                requests,
                example_path: paths.into_iter().max_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(&a.0))).map(|(p, _)| p),
            })
            .collect(),
        unmatched: Vec::new(),
        default_route_requests,
    };
    let mut unmatched: Vec<Unmatched> = unmatched
        .into_iter()
        .map(|((authority, method, path), requests)| Unmatched { authority, method, path, requests })
        .collect();
    unmatched.sort_by_key(|u| std::cmp::Reverse(u.requests));
    unmatched.truncate(MAX_UNMATCHED);
    report.unmatched = unmatched;

    for (index, (entry, acc)) in table.iter().zip(accumulators).enumerate() {
        if acc.requests == 0 {
            report.unused.push(entry.id.clone());
        }
        let errors = acc.failures.server_errors;
        report.routes.push(RouteUsage {
            route: entry.id.clone(),
            resource: entry.resource.clone(),
            hosts: entry.hosts.clone(),
            gateways: entry.gateways.clone(),
            requests: acc.requests,
            matched_by_name: acc.matched_by_name,
            errors,
            error_rate: if acc.requests == 0 { 0.0 } else { round4(errors as f64 / acc.requests as f64) },
            failures: acc.failures,
            latency: Latency::of(&acc.durations),
            last_seen: acc.last_seen,
            methods: acc.methods,
            host_requests: acc.host_requests,
            split: split(entry, &acc.destinations, options),
            entry: index,
        });
    }
    let findings = findings(table, &report);
    (report, findings)
}

fn round4(v: f64) -> f64 {
    (v * 10_000.0).round() / 10_000.0
}

/// Goodness of fit of the observed split to the configured weights, for routes with two or more weighted
/// destinations.
fn split(
    entry: &RouteEntry<'_>,
    observed: &BTreeMap<(Option<String>, Option<String>), u64>,
    options: &TrafficOptions,
) -> Option<Split> {
    let RouteKind::Http { vs, route, .. } = &entry.kind else { return None };
    if route.route.len() < 2 || route.route.iter().any(|d| d.weight.is_none_or(|w| w < 0)) {
        return None;
    }
    let namespace = vs.metadata.ns();
    let mut destinations: Vec<SplitDestination> = route
        .route
        .iter()
        .map(|d| {
            let host = resolve_host(&d.destination.host, namespace);
            let count = observed.get(&(Some(host.clone()), d.destination.subset.clone())).copied().unwrap_or(0);
            SplitDestination {
                host,
                subset: d.destination.subset.clone(),
                weight: d.weight.unwrap_or(0),
                observed: count,
                observed_percent: 0.0,
            }
        })
        .collect();
    let total: u64 = destinations.iter().map(|d| d.observed).sum();
    let weight_sum: i32 = destinations.iter().map(|d| d.weight).sum();
    if weight_sum <= 0 {
        return None;
    }
    for d in &mut destinations {
        d.observed_percent = if total == 0 { 0.0 } else { (d.observed as f64 * 1000.0 / total as f64).round() / 10.0 };
    }
    let counts: Vec<u64> = destinations.iter().map(|d| d.observed).collect();
    let shares: Vec<f64> = destinations.iter().map(|d| f64::from(d.weight)).collect();
    let statistic = chi_square(&counts, &shares);
    let cells = shares.iter().filter(|s| **s > 0.0).count() as u32;
    let p_value = chi_square_p_value(statistic, cells.saturating_sub(1));
    let enough_samples =
        total > 0 && shares.iter().filter(|s| **s > 0.0).all(|s| total as f64 * s / f64::from(weight_sum) >= 5.0);
    Some(Split {
        destinations,
        chi_square: (statistic * 1000.0).round() / 1000.0,
        p_value: significant(p_value),
        enough_samples,
        drift: enough_samples && p_value < options.drift_p_value,
    })
}

/// Four significant digits, so that reports do not show floating-point noise.
fn significant(v: f64) -> f64 {
    if v == 0.0 || !v.is_finite() {
        return v;
    }
    let magnitude = 10f64.powi(3 - v.abs().log10().floor() as i32);
    (v * magnitude).round() / magnitude
}

fn describe_split(destinations: &[SplitDestination], value: impl Fn(&SplitDestination) -> String) -> String {
    destinations
        .iter()
        .map(|d| {
            let name = meshlens_model::names::service_fqdn_parts(&d.host).map_or(d.host.as_str(), |(name, _)| name);
            match &d.subset {
                Some(subset) => format!("{name}/{subset} {}", value(d)),
                None => format!("{name} {}", value(d)),
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn findings(table: &[RouteEntry<'_>], report: &RouteReport) -> Vec<Finding> {
    let mut out = Vec::new();
    for usage in &report.routes {
        let entry = &table[usage.entry];
        let rule = entry.id.strip_prefix(&entry.resource).map_or(entry.id.as_str(), str::trim_start);
        if usage.requests == 0 && usage.host_requests > 0 {
            let message = format!(
                "HTTP route {rule} received no requests in the window while its host received {}.",
                usage.host_requests
            );
            out.push(finding(&ML2004, entry.resource.clone(), entry.origin.clone(), message));
        }
        if let Some(split) = usage.split.as_ref().filter(|s| s.drift) {
            let observed: u64 = split.destinations.iter().map(|d| d.observed).sum();
            let message = format!(
                "HTTP route {rule} splits {}, but {observed} requests were split {} (chi-square p = {:.1e}).",
                describe_split(&split.destinations, |d| format!("{}%", d.weight)),
                describe_split(&split.destinations, |d| format!("{}%", d.observed_percent)),
                split.p_value
            );
            out.push(finding(&ML2006, entry.resource.clone(), entry.origin.clone(), message));
        }
    }
    let mut by_authority: BTreeMap<&str, Vec<&NoRoute>> = BTreeMap::new();
    for nr in &report.no_route {
        by_authority.entry(nr.authority.as_str()).or_default().push(nr);
    }
    for (authority, entries) in by_authority {
        let total: u64 = entries.iter().map(|e| e.requests).sum();
        let sources: Vec<String> = entries.iter().map(|e| format!("{} ({})", e.source, e.requests)).collect();
        let message = format!("{total} requests to {authority} got no route (NR) from {}.", sources.join(", "));
        out.push(finding(&ML2005, format!("Host {}", authority_host(authority)), None, message));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(path: &str, path_type: &str) -> HttpIngressPath {
        HttpIngressPath { path: Some(path.to_owned()), path_type: Some(path_type.to_owned()), ..Default::default() }
    }

    #[test]
    fn ingress_paths_follow_kubernetes_semantics() {
        assert!(ingress_path_matches(&path("/api", "Prefix"), "/api/v1"));
        assert!(ingress_path_matches(&path("/api/", "Prefix"), "/api"));
        assert!(!ingress_path_matches(&path("/api", "Prefix"), "/apiv2"));
        assert!(ingress_path_matches(&path("/", "Prefix"), "/anything"));
        assert!(!ingress_path_matches(&path("/api", "Exact"), "/api/"));
    }

    #[test]
    fn hosts_resolve_like_a_sidecar() {
        assert_eq!(mesh_host("reviews", Some("shop")), "reviews.shop.svc.cluster.local");
        assert_eq!(mesh_host("reviews.shop", None), "reviews.shop.svc.cluster.local");
        assert_eq!(mesh_host("reviews.shop.svc", None), "reviews.shop.svc.cluster.local");
        assert_eq!(mesh_host("api.example.com", None), "api.example.com");
        assert_eq!(authority_host("reviews:9080"), "reviews");
        assert_eq!(authority_host("reviews"), "reviews");
    }

    #[test]
    fn regex_matches_are_anchored_and_bad_regexes_never_match() {
        let mut matcher = Matcher::default();
        let m = |regex: &str| StringMatch { regex: Some(regex.to_owned()), ..Default::default() };
        assert!(matcher.string(&m("/api/v[0-9]+"), "/api/v2", false));
        assert!(!matcher.string(&m("/api/v[0-9]+"), "/api/v2/users", false));
        assert!(!matcher.string(&m("(unclosed"), "(unclosed", false));
        let exact = StringMatch { exact: Some("/Login".into()), ..Default::default() };
        assert!(matcher.string(&exact, "/login", true));
        assert!(!matcher.string(&exact, "/login", false));
    }

    #[test]
    fn attribution_codes_round_trip() {
        for attribution in [
            Attribution::Route { entry: 0, by_name: false },
            Attribution::Route { entry: 7, by_name: true },
            Attribution::NoRoute,
            Attribution::Unmatched,
            Attribution::Default,
        ] {
            assert_eq!(Attribution::from_code(attribution.code()), Some(attribution));
        }
        assert_eq!(Attribution::from_code(-4), None);
    }

    /// Paths carry ids; grouping by them would keep one row per request. Requests a route took are grouped
    /// by the route, and only NR and unmatched requests keep their path for the report.
    #[tokio::test]
    async fn requests_are_grouped_by_route_and_only_unrouted_ones_by_path() {
        use meshlens_model::mesh::LoadReport;
        use meshlens_model::{Direction, RequestRecord};
        let mut load = LoadReport::default();
        load.parse_str(
            "mesh.yaml",
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: cart, namespace: shop}\n\
             spec: {hosts: [cart], http: [{match: [{uri: {prefix: /api}}], route: [{destination: {host: cart}}]}]}\n",
        );
        assert!(load.errors.is_empty(), "{:?}", load.errors);
        let mesh = MeshConfig::new(load.resources);
        let start = DateTime::<Utc>::UNIX_EPOCH + chrono::TimeDelta::days(20_000);
        let record = |path: String, flags: Vec<String>| RequestRecord {
            timestamp: start,
            direction: Direction::Outbound,
            source_namespace: Some("shop".into()),
            source_workload: Some("web".into()),
            authority: Some("cart".into()),
            path: Some(path),
            method: Some("GET".into()),
            status: Some(if flags.is_empty() { 200 } else { 404 }),
            response_flags: flags,
            duration_ms: Some(5),
            destination_service: Some("cart.shop.svc.cluster.local".into()),
            ..Default::default()
        };
        let mut records: Vec<RequestRecord> = (0..100).map(|id| record(format!("/api/orders/{id}"), vec![])).collect();
        records.extend((0..3).map(|id| record(format!("/static/{id}"), vec![])));
        records.extend((0..2).map(|id| record(format!("/nothing/{id}"), vec!["NR".into()])));
        let ctx = super::super::requests_context(&records).unwrap();
        let window = super::super::Window { start, end: start + chrono::TimeDelta::seconds(1) };
        let traffic = super::super::pass::gather(&ctx, &mesh, &window).await.unwrap().client;
        let mut rows: Vec<(i32, Option<&str>, u64)> =
            traffic.rows.iter().map(|r| (r.attribution, r.path.as_deref(), r.requests)).collect();
        rows.sort();
        let route = Attribution::Route { entry: 0, by_name: false }.code();
        assert_eq!(
            rows,
            [
                (UNMATCHED, Some("/static/0"), 1),
                (UNMATCHED, Some("/static/1"), 1),
                (UNMATCHED, Some("/static/2"), 1),
                (NO_ROUTE, Some("/nothing/0"), 1),
                (NO_ROUTE, Some("/nothing/1"), 1),
                (route, None, 100),
            ]
        );
        let (report, _) = analyze(&mesh, &traffic.rows, &TrafficOptions::default());
        assert_eq!(report.routes[0].requests, 100);
        assert_eq!(report.unmatched.len(), 3);
        assert_eq!(report.no_route[0].requests, 2);
    }

    #[test]
    fn significant_digits() {
        assert_eq!(significant(0.000_123_456), 0.000_123_5);
        assert_eq!(significant(0.5), 0.5);
        assert_eq!(significant(0.0), 0.0);
    }
}
