//! The route table: VirtualService HTTP routes and Kubernetes Ingress rules compiled once per config
//! snapshot into matchers and actions, so that a request is routed without touching the YAML model.
//!
//! Virtual hosts are chosen as Envoy does (exact domain, then the longest wildcard suffix, then `*`); within
//! a virtual host the first route whose match applies wins, in the order the VirtualService lists them.

use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use meshlens_model::mesh::duration::Duration as MeshDuration;
use meshlens_model::mesh::k8s::{Ingress, ServicePort};
use meshlens_model::mesh::meta::IntOrString;
use meshlens_model::mesh::networking::{
    Destination, HeaderOperations, HttpFaultInjection, HttpMatchRequest, HttpRetry, HttpRoute, StringMatch,
};
use meshlens_model::mesh::{MeshConfig, host_matches, resolve_gateway_ref, resolve_host};
use meshlens_model::names::split_ascii;
use regex::Regex;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// A config problem that makes a route unusable; the whole snapshot is rejected, as Istio's validation would.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{resource}: {message}")]
pub struct CompileError {
    pub resource: String,
    pub message: String,
}

/// What the route table needs to know about a request.
#[derive(Debug, Clone, Copy)]
pub struct RequestView<'a> {
    pub method: &'a Method,
    /// Authority without port, lowercase.
    pub host: &'a str,
    pub port: Option<u16>,
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub scheme: &'a str,
    pub headers: &'a HeaderMap,
    /// `namespace/name` of the Gateways whose listener took the request; empty on sidecars (`mesh`).
    pub gateways: &'a [String],
    pub source_labels: &'a BTreeMap<String, String>,
    pub source_namespace: Option<&'a str>,
}

/// Virtual hosts, each a list of routes.
#[derive(Debug, Clone, Default)]
pub struct RouteTable {
    hosts: Vec<VirtualHost>,
}

#[derive(Debug, Clone)]
struct VirtualHost {
    domains: Vec<String>,
    routes: Vec<Arc<Route>>,
}

/// The route a request matched, and which of its matches it met.
#[derive(Debug, Clone)]
pub struct Matched {
    pub route: Arc<Route>,
    /// Index into `route.matches`; `None` when the route has no match conditions.
    matched: Option<usize>,
}

impl Matched {
    /// The part of the path a `rewrite.uri` replaces: the matched prefix, or the whole path for exact and
    /// regex matches.
    pub fn rewrite_scope(&self) -> RewriteScope<'_> {
        match self.matched.and_then(|i| self.route.matches[i].uri.as_ref()) {
            Some(StringMatcher::Prefix(p) | StringMatcher::PathPrefix(p)) => RewriteScope::Prefix(p),
            Some(StringMatcher::Exact(_) | StringMatcher::Regex(_)) => RewriteScope::WholePath,
            Some(StringMatcher::Present) | None => RewriteScope::Prefix("/"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RewriteScope<'a> {
    Prefix(&'a str),
    WholePath,
}

impl RouteTable {
    /// The first route of the best virtual host that matches the request.
    pub fn find(&self, req: &RequestView<'_>) -> Option<Matched> {
        let vhost = self
            .hosts
            .iter()
            .filter_map(|vh| {
                vh.domains.iter().filter(|d| host_matches(d, req.host)).map(|d| domain_rank(d)).max().map(|r| (r, vh))
            })
            .max_by_key(|(rank, _)| *rank)
            .map(|(_, vh)| vh)?;
        vhost.routes.iter().find_map(|route| {
            if route.matches.is_empty() {
                return Some(Matched { route: route.clone(), matched: None });
            }
            let matched = route.matches.iter().position(|m| m.matches(req))?;
            Some(Matched { route: route.clone(), matched: Some(matched) })
        })
    }

    /// Appends another table's virtual hosts (Ingress rules served next to Gateway routes on one port).
    pub fn merge(&mut self, other: RouteTable) {
        for vh in other.hosts {
            self.push(vh.domains, vh.routes);
        }
    }

    fn push(&mut self, domains: Vec<String>, routes: Vec<Arc<Route>>) {
        // Routes for the same domains from several resources are appended in load order, as Istio merges
        // VirtualServices for one host.
        match self.hosts.iter_mut().find(|vh| vh.domains == domains) {
            Some(vh) => vh.routes.extend(routes),
            None => self.hosts.push(VirtualHost { domains, routes }),
        }
    }

    /// Routes of the VirtualServices bound to `gateways` (`namespace/name`), limited to the hosts the
    /// gateway servers expose (`server_hosts`, `ns/host` entries reduced to their host part).
    pub fn for_gateway(
        mesh: &MeshConfig,
        gateways: &[String],
        server_hosts: &[String],
        https_redirect: bool,
    ) -> Result<RouteTable, Vec<CompileError>> {
        let mut table = RouteTable::default();
        let mut errors = Vec::new();
        let mut seen = Vec::new();
        for gateway in gateways {
            let bound = mesh
                .virtual_services()
                .filter(|vs| vs.spec.gateways.iter().any(|g| resolve_gateway_ref(g, vs.metadata.ns()) == *gateway));
            for vs in bound {
                let key = (vs.metadata.ns().to_owned(), vs.metadata.name.clone());
                if seen.contains(&key) {
                    continue;
                }
                seen.push(key);
                let ns = vs.metadata.ns();
                let domains: Vec<String> = vs
                    .spec
                    .hosts
                    .iter()
                    .map(|h| resolve_host(h, ns))
                    .filter_map(|h| intersect_host(&h, server_hosts))
                    .collect();
                if domains.is_empty() {
                    continue;
                }
                let resource = format!("VirtualService {ns}/{}", vs.metadata.name);
                let routes = if https_redirect {
                    vec![Arc::new(Route::https_redirect())]
                } else {
                    compile_routes(&vs.spec.http, ns, &resource, &mut errors)
                };
                table.push(domains, routes);
            }
        }
        if errors.is_empty() { Ok(table) } else { Err(errors) }
    }

    /// A sidecar's outbound table: for every Service host, the VirtualServices bound to `mesh`, or a default
    /// route to the Service itself.
    pub fn for_mesh(mesh: &MeshConfig) -> Result<RouteTable, Vec<CompileError>> {
        let mut table = RouteTable::default();
        let mut errors = Vec::new();
        let mut hosts: Vec<String> = mesh.services().map(|s| resolve_host(&s.metadata.name, s.metadata.ns())).collect();
        for vs in mesh
            .virtual_services()
            .filter(|vs| vs.spec.gateways.is_empty() || vs.spec.gateways.iter().any(|g| g == "mesh"))
        {
            hosts.extend(vs.spec.hosts.iter().map(|h| resolve_host(h, vs.metadata.ns())));
        }
        hosts.sort();
        hosts.dedup();
        for host in hosts {
            let mut routes = Vec::new();
            for vs in mesh.virtual_services_for(&host, "mesh") {
                let ns = vs.metadata.ns();
                let resource = format!("VirtualService {ns}/{}", vs.metadata.name);
                routes.extend(compile_routes(&vs.spec.http, ns, &resource, &mut errors));
            }
            if routes.is_empty() && !host.starts_with('*') {
                routes.push(Arc::new(Route::to_target(Target { host: host.clone(), port: None, subset: None })));
            }
            table.push(vec![host], routes);
        }
        if errors.is_empty() { Ok(table) } else { Err(errors) }
    }

    /// A Kubernetes Ingress table: rules by host, `Exact` before `Prefix` and longer paths first (the
    /// Ingress spec's precedence), `defaultBackend` last.
    pub fn for_ingresses<'a>(ingresses: impl IntoIterator<Item = &'a Ingress>) -> RouteTable {
        let mut by_host: BTreeMap<String, Vec<(u8, usize, Arc<Route>)>> = BTreeMap::new();
        let mut defaults = Vec::new();
        for ingress in ingresses {
            let ns = ingress.metadata.ns();
            let name = format!("{ns}/{}", ingress.metadata.name);
            for rule in &ingress.spec.rules {
                let host = rule.host.clone().unwrap_or_else(|| "*".into()).to_ascii_lowercase();
                for path in rule.http.iter().flat_map(|h| &h.paths) {
                    let Some(target) = ingress_target(&path.backend, ns) else { continue };
                    let raw = path.path.clone().unwrap_or_else(|| "/".into());
                    let (matcher, rank) = match path.path_type.as_deref() {
                        Some("Exact") => (Some(StringMatcher::Exact(raw.clone())), 2),
                        Some("Prefix") => (path_prefix(&raw), 1),
                        _ => implementation_specific(&raw),
                    };
                    let mut route = Route::to_target(target);
                    route.name = Some(name.as_str().into());
                    route.matches = vec![RequestMatch { uri: matcher, ..Default::default() }];
                    by_host.entry(host.clone()).or_default().push((rank, raw.len(), Arc::new(route)));
                }
            }
            if let Some(target) = ingress.spec.default_backend.as_ref().and_then(|b| ingress_target(b, ns)) {
                let mut route = Route::to_target(target);
                route.name = Some(name.as_str().into());
                defaults.push(Arc::new(route));
            }
        }
        let mut table = RouteTable::default();
        for (host, mut routes) in by_host {
            routes.sort_by_key(|r| std::cmp::Reverse((r.0, r.1)));
            let mut routes: Vec<Arc<Route>> = routes.into_iter().map(|(_, _, r)| r).collect();
            routes.extend(defaults.iter().cloned());
            table.push(vec![host], routes);
        }
        if !table.hosts.iter().any(|vh| vh.domains == ["*"]) && !defaults.is_empty() {
            table.push(vec!["*".into()], defaults);
        }
        table
    }

    /// A sidecar's inbound table: everything goes to the local application.
    pub fn inbound(port: u16) -> RouteTable {
        let mut route = Route::to_target(Target::inbound(port));
        route.name = Some("default".into());
        route.retry = RetryPolicy::none();
        RouteTable { hosts: vec![VirtualHost { domains: vec!["*".into()], routes: vec![Arc::new(route)] }] }
    }
}

/// Envoy's virtual host precedence: exact, then longer wildcard suffixes, then `*`.
fn domain_rank(domain: &str) -> (bool, usize) {
    (!domain.starts_with('*'), domain.len())
}

/// The narrower of a VirtualService host and the gateway server hosts it must fall within.
fn intersect_host(vs_host: &str, server_hosts: &[String]) -> Option<String> {
    server_hosts.iter().find_map(|server| {
        let server = server.split_once('/').map_or(server.as_str(), |(_, h)| h);
        if host_matches(server, vs_host) || server == vs_host {
            Some(vs_host.to_owned())
        } else if host_matches(vs_host, server) {
            Some(server.to_owned())
        } else {
            None
        }
    })
}

fn ingress_target(backend: &meshlens_model::mesh::k8s::IngressBackend, ns: &str) -> Option<Target> {
    let (service, port) = backend.target()?;
    let port = match port {
        Some(IntOrString::Int(n)) => PortRef::Number(u16::try_from(n).ok()?),
        Some(IntOrString::String(name)) => PortRef::Named(name),
        None => PortRef::Unset,
    };
    Some(Target::with_port_ref(resolve_host(service, ns), port))
}

/// Kubernetes `Prefix`: element-wise, so `/foo` matches `/foo`, `/foo/` and `/foo/bar` but not `/foobar`.
fn path_prefix(path: &str) -> Option<StringMatcher> {
    let trimmed = path.trim_end_matches('/');
    if trimmed.is_empty() { None } else { Some(StringMatcher::PathPrefix(trimmed.to_owned())) }
}

/// Istio's reading of `ImplementationSpecific`: `/foo.*` and `/foo/*` are prefixes, `/` matches
/// everything, anything else is exact.
fn implementation_specific(path: &str) -> (Option<StringMatcher>, u8) {
    if path.is_empty() || path == "/" {
        (None, 0)
    } else if let Some(prefix) = path.strip_suffix(".*") {
        (Some(StringMatcher::Prefix(prefix.to_owned())), 1)
    } else if let Some(prefix) = path.strip_suffix('*').filter(|p| p.ends_with('/')) {
        (Some(StringMatcher::Prefix(prefix.to_owned())), 1)
    } else {
        (Some(StringMatcher::Exact(path.to_owned())), 2)
    }
}

// ---------------------------------------------------------------------------------------------------------
// Routes

/// One compiled HTTP route.
#[derive(Debug, Clone)]
pub struct Route {
    /// `http[].name`, shown as `%ROUTE_NAME%`.
    pub name: Option<Arc<str>>,
    matches: Vec<RequestMatch>,
    pub action: Action,
    pub rewrite: Option<Rewrite>,
    pub request_headers: HeaderOps,
    pub response_headers: HeaderOps,
    /// Route timeout; `None` is Istio's default (disabled).
    pub timeout: Option<Duration>,
    pub retry: RetryPolicy,
    pub fault: Option<Fault>,
    pub mirrors: Vec<Mirror>,
}

#[derive(Debug, Clone)]
pub enum Action {
    Forward(Vec<WeightedTarget>),
    Redirect(Redirect),
    Direct { status: StatusCode, body: String },
}

#[derive(Debug, Clone)]
pub struct WeightedTarget {
    pub target: Target,
    pub weight: u32,
    pub request_headers: HeaderOps,
    pub response_headers: HeaderOps,
}

/// A destination: service FQDN, port (when the config names it) and subset.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Target {
    pub host: String,
    pub port: Option<u16>,
    pub subset: Option<String>,
}

/// A Service port named by an Ingress backend, resolved against the Service later.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PortRef {
    Number(u16),
    Named(String),
    Unset,
}

impl Target {
    fn with_port_ref(host: String, port: PortRef) -> Target {
        match port {
            PortRef::Number(n) => Target { host, port: Some(n), subset: None },
            // A named port travels as `host#name` until `resolve_port` looks it up on the Service.
            PortRef::Named(name) => Target { host: format!("{host}#{name}"), port: None, subset: None },
            PortRef::Unset => Target { host, port: None, subset: None },
        }
    }

    /// The sidecar's inbound cluster for a workload port.
    pub fn inbound(port: u16) -> Target {
        Target { host: format!("inbound|{port}||"), port: Some(port), subset: None }
    }

    /// Whether this is an inbound (local application) target.
    pub fn is_inbound(&self) -> bool {
        self.host.starts_with("inbound|")
    }

    /// The Service host, without a named-port suffix.
    pub fn service_host(&self) -> &str {
        split_ascii(&self.host, b'#').map_or(&self.host, |(h, _)| h)
    }

    /// The Service port this target sends to: the one named, else the Service's only port, else the port
    /// the request came in on. `ports` are the Service's, if it exists.
    pub fn resolve_port(&self, ports: Option<&[ServicePort]>, request_port: Option<u16>) -> Option<u16> {
        if let Some(port) = self.port {
            return Some(port);
        }
        if let Some((_, name)) = split_ascii(&self.host, b'#') {
            return ports?.iter().find(|p| p.name.as_deref() == Some(name)).map(|p| p.port);
        }
        match ports {
            Some([only]) => Some(only.port),
            _ => request_port,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Rewrite {
    pub uri: Option<String>,
    pub authority: Option<String>,
    pub uri_regex: Option<(Regex, String)>,
}

impl Rewrite {
    /// The new path (with the original query) for `path_and_query`.
    pub fn path(&self, path: &str, query: Option<&str>, scope: RewriteScope<'_>) -> Option<String> {
        let new_path = if let Some((regex, replacement)) = &self.uri_regex {
            regex.replace_all(path, replacement.as_str()).into_owned()
        } else {
            let uri = self.uri.as_ref()?;
            match scope {
                RewriteScope::WholePath => uri.clone(),
                RewriteScope::Prefix(prefix) => match path.get(..prefix.len()) {
                    Some(head) if head.eq_ignore_ascii_case(prefix) => format!("{uri}{}", &path[prefix.len()..]),
                    _ => uri.clone(),
                },
            }
        };
        Some(match query {
            Some(q) => format!("{new_path}?{q}"),
            None => new_path,
        })
    }
}

#[derive(Debug, Clone)]
pub struct Redirect {
    pub uri: Option<String>,
    pub authority: Option<String>,
    pub port: Option<u16>,
    pub scheme: Option<String>,
    pub status: StatusCode,
}

/// Request or response header edits (`headers.request` / `headers.response`).
#[derive(Debug, Clone, Default)]
pub struct HeaderOps {
    set: Vec<(HeaderName, HeaderValue)>,
    add: Vec<(HeaderName, HeaderValue)>,
    remove: Vec<HeaderName>,
}

impl HeaderOps {
    fn compile(ops: Option<&HeaderOperations>, resource: &str, errors: &mut Vec<CompileError>) -> HeaderOps {
        let Some(ops) = ops else { return HeaderOps::default() };
        let mut pair = |name: &str, value: &str| match (HeaderName::try_from(name), HeaderValue::try_from(value)) {
            (Ok(n), Ok(v)) => Some((n, v)),
            _ => {
                errors
                    .push(CompileError { resource: resource.to_owned(), message: format!("invalid header {name:?}") });
                None
            }
        };
        let set = ops.set.iter().filter_map(|(k, v)| pair(k, v)).collect();
        let add = ops.add.iter().filter_map(|(k, v)| pair(k, v)).collect();
        let remove = ops.remove.iter().filter_map(|k| HeaderName::try_from(k.as_str()).ok()).collect();
        HeaderOps { set, add, remove }
    }

    pub fn apply(&self, headers: &mut HeaderMap) {
        for name in &self.remove {
            headers.remove(name);
        }
        for (name, value) in &self.set {
            headers.insert(name.clone(), value.clone());
        }
        for (name, value) in &self.add {
            headers.append(name.clone(), value.clone());
        }
    }
}

/// When and how often to retry, in Envoy's terms.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Retries after the first try.
    pub retries: u32,
    pub per_try_timeout: Option<Duration>,
    pub on: RetryOn,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct RetryOn {
    pub five_xx: bool,
    pub gateway_error: bool,
    pub reset: bool,
    pub connect_failure: bool,
    pub retriable_4xx: bool,
    pub refused_stream: bool,
    pub status_codes: Vec<u16>,
    /// gRPC status codes from `cancelled`, `deadline-exceeded`, `internal`, `resource-exhausted`, `unavailable`.
    pub grpc: Vec<u32>,
}

/// Istio's retry conditions when a route sets none.
const ISTIO_DEFAULT_RETRY_ON: &str = "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes";

impl RetryPolicy {
    /// Istio's default: 2 retries on connect failures, refused streams, gRPC unavailable/cancelled and 503.
    pub fn istio_default() -> RetryPolicy {
        RetryPolicy { retries: 2, per_try_timeout: None, on: RetryOn::parse(ISTIO_DEFAULT_RETRY_ON, vec![503]) }
    }

    pub fn none() -> RetryPolicy {
        RetryPolicy { retries: 0, per_try_timeout: None, on: RetryOn::default() }
    }

    fn compile(retry: Option<&HttpRetry>) -> RetryPolicy {
        let Some(retry) = retry else { return RetryPolicy::istio_default() };
        let mut policy = RetryPolicy::istio_default();
        policy.retries = u32::try_from(retry.attempts).unwrap_or(0);
        policy.per_try_timeout = retry.per_try_timeout.map(MeshDuration::as_std).filter(|d| !d.is_zero());
        if retry.retry_on.as_deref().is_some_and(|s| !s.trim().is_empty()) {
            // As Istio does: numeric entries become retriable status codes (and enable them).
            let conditions = retry.retry_on_conditions();
            let codes: Vec<u16> = conditions.iter().filter_map(|c| c.parse().ok()).collect();
            let mut names: Vec<&str> = conditions.iter().copied().filter(|c| c.parse::<u16>().is_err()).collect();
            if !codes.is_empty() {
                names.push("retriable-status-codes");
            }
            policy.on = RetryOn::parse(&names.join(","), codes);
        }
        policy
    }
}

impl RetryOn {
    fn parse(conditions: &str, status_codes: Vec<u16>) -> RetryOn {
        let mut on = RetryOn::default();
        for condition in conditions.split(',').map(str::trim) {
            match condition {
                "5xx" => on.five_xx = true,
                "gateway-error" => on.gateway_error = true,
                "reset" => on.reset = true,
                "connect-failure" => on.connect_failure = true,
                "retriable-4xx" => on.retriable_4xx = true,
                "refused-stream" => on.refused_stream = true,
                "retriable-status-codes" => on.status_codes.clone_from(&status_codes),
                "cancelled" => on.grpc.push(1),
                "deadline-exceeded" => on.grpc.push(4),
                "resource-exhausted" => on.grpc.push(8),
                "internal" => on.grpc.push(13),
                "unavailable" => on.grpc.push(14),
                _ => {}
            }
        }
        on
    }

    /// Whether a response with `status` (and gRPC status, if any) should be retried.
    pub fn retry_status(&self, status: StatusCode, grpc_status: Option<u32>) -> bool {
        let code = status.as_u16();
        (self.five_xx && status.is_server_error())
            || (self.gateway_error && matches!(code, 502..=504))
            || (self.retriable_4xx && code == 409)
            || self.status_codes.contains(&code)
            || grpc_status.is_some_and(|g| self.grpc.contains(&g))
    }

    /// Whether a local failure (connect failure, reset, per-try timeout) should be retried.
    pub fn retry_error(&self, error: &crate::ProxyError) -> bool {
        use crate::ProxyError as E;
        match error {
            E::ConnectFailure(_) => self.connect_failure || self.reset || self.five_xx || self.gateway_error,
            E::UpstreamReset(_) => self.reset || self.five_xx || self.refused_stream,
            E::Timeout => self.five_xx || self.gateway_error || self.reset,
            _ => false,
        }
    }
}

/// Fault injection: a delay and/or an abort, each for a percentage of requests.
#[derive(Debug, Clone, PartialEq)]
pub struct Fault {
    pub delay: Option<(Duration, f64)>,
    pub abort: Option<(StatusCode, f64)>,
}

impl Fault {
    fn compile(fault: &HttpFaultInjection, resource: &str, errors: &mut Vec<CompileError>) -> Fault {
        // An unset percentage means every request, which is what a fault without one is written for.
        let delay = fault.delay.as_ref().and_then(|d| {
            let pct = d.percentage.map(|p| p.value).or(d.percent.map(f64::from)).unwrap_or(100.0);
            d.fixed_delay.map(|delay| (delay.as_std(), pct))
        });
        let abort = fault.abort.as_ref().and_then(|a| {
            let status = a.http_status.and_then(|s| StatusCode::from_u16(s).ok());
            if status.is_none() {
                errors.push(CompileError {
                    resource: resource.to_owned(),
                    message: "fault.abort needs a valid httpStatus (grpcStatus aborts are not supported)".into(),
                });
            }
            status.map(|s| (s, a.percentage.map_or(100.0, |p| p.value)))
        });
        Fault { delay, abort }
    }
}

/// A mirror destination and the share of requests copied to it.
#[derive(Debug, Clone, PartialEq)]
pub struct Mirror {
    pub target: Target,
    pub percent: f64,
}

impl Route {
    fn to_target(target: Target) -> Route {
        Route {
            name: None,
            matches: Vec::new(),
            action: Action::Forward(vec![WeightedTarget {
                target,
                weight: 100,
                request_headers: HeaderOps::default(),
                response_headers: HeaderOps::default(),
            }]),
            rewrite: None,
            request_headers: HeaderOps::default(),
            response_headers: HeaderOps::default(),
            timeout: None,
            retry: RetryPolicy::istio_default(),
            fault: None,
            mirrors: Vec::new(),
        }
    }

    fn https_redirect() -> Route {
        let mut route = Route::to_target(Target { host: String::new(), port: None, subset: None });
        route.action = Action::Redirect(Redirect {
            uri: None,
            authority: None,
            port: None,
            scheme: Some("https".into()),
            status: StatusCode::MOVED_PERMANENTLY,
        });
        route
    }

    /// Picks a weighted destination.
    pub fn pick(targets: &[WeightedTarget]) -> Option<&WeightedTarget> {
        let total: u64 = targets.iter().map(|t| u64::from(t.weight)).sum();
        if total == 0 {
            return targets.first();
        }
        let mut point = fastrand::u64(0..total);
        targets.iter().find(|t| {
            let weight = u64::from(t.weight);
            if point < weight {
                true
            } else {
                point -= weight;
                false
            }
        })
    }
}

fn compile_routes(http: &[HttpRoute], ns: &str, resource: &str, errors: &mut Vec<CompileError>) -> Vec<Arc<Route>> {
    http.iter()
        .enumerate()
        .filter_map(|(i, route)| compile_route(route, ns, &format!("{resource} http[{i}]"), errors))
        .map(Arc::new)
        .collect()
}

fn compile_route(hr: &HttpRoute, ns: &str, resource: &str, errors: &mut Vec<CompileError>) -> Option<Route> {
    let err = |errors: &mut Vec<CompileError>, message: String| {
        errors.push(CompileError { resource: resource.to_owned(), message });
    };
    if hr.delegate.is_some() {
        err(errors, "delegate VirtualServices are not supported".into());
        return None;
    }
    let mut matches = Vec::new();
    for m in &hr.matches {
        match RequestMatch::compile(m) {
            Ok(compiled) => matches.push(compiled),
            Err(message) => err(errors, message),
        }
    }
    let action = if let Some(redirect) = &hr.redirect {
        let status =
            StatusCode::from_u16(redirect.redirect_code.unwrap_or(301)).unwrap_or(StatusCode::MOVED_PERMANENTLY);
        Action::Redirect(Redirect {
            uri: redirect.uri.clone(),
            authority: redirect.authority.clone(),
            port: redirect.port.and_then(|p| u16::try_from(p).ok()),
            scheme: redirect.scheme.clone(),
            status,
        })
    } else if let Some(direct) = &hr.direct_response {
        let body = match &direct.body {
            Some(serde_json::Value::Object(body)) => {
                body.get("string").and_then(|s| s.as_str()).unwrap_or("").to_owned()
            }
            _ => String::new(),
        };
        let Ok(status) = StatusCode::from_u16(direct.status) else {
            err(errors, format!("invalid directResponse status {}", direct.status));
            return None;
        };
        Action::Direct { status, body }
    } else {
        if hr.route.is_empty() {
            err(errors, "route has no destination, redirect or directResponse".into());
            return None;
        }
        let single = hr.route.len() == 1;
        Action::Forward(
            hr.route
                .iter()
                .map(|d| WeightedTarget {
                    target: target_of(&d.destination, ns),
                    weight: d.weight.map_or(if single { 100 } else { 0 }, |w| u32::try_from(w).unwrap_or(0)),
                    request_headers: HeaderOps::compile(
                        d.headers.as_ref().and_then(|h| h.request.as_ref()),
                        resource,
                        errors,
                    ),
                    response_headers: HeaderOps::compile(
                        d.headers.as_ref().and_then(|h| h.response.as_ref()),
                        resource,
                        errors,
                    ),
                })
                .collect(),
        )
    };
    let rewrite = match &hr.rewrite {
        Some(rw) => {
            let uri_regex = match &rw.uri_regex_rewrite {
                Some(rr) => match Regex::new(&rr.pattern) {
                    // RE2 `\1` references become the regex crate's `${1}`.
                    Ok(re) => Some((re, re2_replacement(&rr.rewrite))),
                    Err(e) => {
                        err(errors, format!("invalid uriRegexRewrite: {e}"));
                        None
                    }
                },
                None => None,
            };
            Some(Rewrite { uri: rw.uri.clone(), authority: rw.authority.clone(), uri_regex })
        }
        None => None,
    };
    let mut mirrors = Vec::new();
    if let Some(mirror) = &hr.mirror {
        let percent = hr.mirror_percentage.map(|p| p.value).or(hr.mirror_percent.map(f64::from)).unwrap_or(100.0);
        mirrors.push(Mirror { target: target_of(mirror, ns), percent });
    }
    for mirror in &hr.mirrors {
        mirrors.push(Mirror {
            target: target_of(&mirror.destination, ns),
            percent: mirror.percentage.map_or(100.0, |p| p.value),
        });
    }
    Some(Route {
        name: hr.name.as_deref().map(Arc::from),
        matches,
        action,
        rewrite,
        request_headers: HeaderOps::compile(hr.headers.as_ref().and_then(|h| h.request.as_ref()), resource, errors),
        response_headers: HeaderOps::compile(hr.headers.as_ref().and_then(|h| h.response.as_ref()), resource, errors),
        timeout: hr.timeout.map(MeshDuration::as_std).filter(|d| !d.is_zero()),
        retry: RetryPolicy::compile(hr.retries.as_ref()),
        fault: hr.fault.as_ref().map(|f| Fault::compile(f, resource, errors)),
        mirrors,
    })
}

fn re2_replacement(rewrite: &str) -> String {
    let mut out = String::with_capacity(rewrite.len());
    let mut chars = rewrite.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, chars.peek()) {
            ('\\', Some(d)) if d.is_ascii_digit() => {
                out.push_str(&format!("${{{d}}}"));
                chars.next();
            }
            ('$', _) => out.push_str("$$"),
            _ => out.push(c),
        }
    }
    out
}

fn target_of(destination: &Destination, ns: &str) -> Target {
    Target {
        host: resolve_host(&destination.host, ns),
        port: destination.port.as_ref().and_then(|p| p.number).and_then(|n| u16::try_from(n).ok()),
        subset: destination.subset.clone(),
    }
}

// ---------------------------------------------------------------------------------------------------------
// Matching

#[derive(Debug, Clone)]
enum StringMatcher {
    Exact(String),
    Prefix(String),
    /// Kubernetes `Prefix` path: matches the prefix followed by `/` or the end.
    PathPrefix(String),
    Regex(Regex),
    /// `{}` in a header or query match: the key is present.
    Present,
}

impl StringMatcher {
    fn compile(m: &StringMatch, ignore_case: bool) -> Result<StringMatcher, String> {
        let fold = |s: &String| if ignore_case { s.to_ascii_lowercase() } else { s.clone() };
        Ok(match (&m.exact, &m.prefix, &m.regex) {
            (Some(e), _, _) => StringMatcher::Exact(fold(e)),
            (None, Some(p), _) => StringMatcher::Prefix(fold(p)),
            (None, None, Some(r)) => {
                // Envoy's safe_regex must match the whole value.
                StringMatcher::Regex(
                    Regex::new(&format!("^(?:{r})$")).map_err(|e| format!("invalid regex {r:?}: {e}"))?,
                )
            }
            (None, None, None) => StringMatcher::Present,
        })
    }

    fn matches(&self, value: &str, ignore_case: bool) -> bool {
        let folded;
        let value = if ignore_case {
            folded = value.to_ascii_lowercase();
            folded.as_str()
        } else {
            value
        };
        match self {
            StringMatcher::Exact(e) => value == e,
            StringMatcher::Prefix(p) => value.starts_with(p.as_str()),
            StringMatcher::PathPrefix(p) => {
                value.strip_prefix(p.as_str()).is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
            }
            StringMatcher::Regex(r) => r.is_match(value),
            StringMatcher::Present => true,
        }
    }
}

/// One `match` entry: all its conditions must hold.
#[derive(Debug, Clone, Default)]
struct RequestMatch {
    uri: Option<StringMatcher>,
    ignore_uri_case: bool,
    scheme: Option<StringMatcher>,
    method: Option<StringMatcher>,
    authority: Option<StringMatcher>,
    headers: Vec<(HeaderName, StringMatcher)>,
    without_headers: Vec<(HeaderName, StringMatcher)>,
    port: Option<u16>,
    query: Vec<(String, StringMatcher)>,
    source_labels: BTreeMap<String, String>,
    gateways: Vec<String>,
    source_namespace: Option<String>,
}

impl RequestMatch {
    fn compile(m: &HttpMatchRequest) -> Result<RequestMatch, String> {
        let opt = |s: &Option<StringMatch>, ic| s.as_ref().map(|s| StringMatcher::compile(s, ic)).transpose();
        let headers = |map: &BTreeMap<String, StringMatch>| -> Result<Vec<_>, String> {
            map.iter()
                .map(|(k, v)| {
                    let name = HeaderName::try_from(k.as_str()).map_err(|_| format!("invalid header name {k:?}"))?;
                    Ok((name, StringMatcher::compile(v, false)?))
                })
                .collect()
        };
        Ok(RequestMatch {
            uri: opt(&m.uri, m.ignore_uri_case)?,
            ignore_uri_case: m.ignore_uri_case,
            scheme: opt(&m.scheme, false)?,
            method: opt(&m.method, false)?,
            authority: opt(&m.authority, false)?,
            headers: headers(&m.headers)?,
            without_headers: headers(&m.without_headers)?,
            port: m.port.and_then(|p| u16::try_from(p).ok()),
            query: m
                .query_params
                .iter()
                .map(|(k, v)| Ok((k.clone(), StringMatcher::compile(v, false)?)))
                .collect::<Result<_, String>>()?,
            source_labels: m.source_labels.clone(),
            gateways: m.gateways.clone(),
            source_namespace: m.source_namespace.clone(),
        })
    }

    fn matches(&self, req: &RequestView<'_>) -> bool {
        let header = |name: &HeaderName| -> Option<String> {
            let values: Vec<&str> = req.headers.get_all(name).iter().filter_map(|v| v.to_str().ok()).collect();
            (!values.is_empty()).then(|| values.join(","))
        };
        self.uri.as_ref().is_none_or(|m| m.matches(req.path, self.ignore_uri_case))
            && self.scheme.as_ref().is_none_or(|m| m.matches(req.scheme, false))
            && self.method.as_ref().is_none_or(|m| m.matches(req.method.as_str(), false))
            && self.authority.as_ref().is_none_or(|m| {
                let authority = req.headers.get(http::header::HOST).and_then(|h| h.to_str().ok()).unwrap_or(req.host);
                m.matches(authority, false)
            })
            && self.headers.iter().all(|(name, m)| header(name).is_some_and(|v| m.matches(&v, false)))
            && self.without_headers.iter().all(|(name, m)| header(name).is_none_or(|v| !m.matches(&v, false)))
            && self.port.is_none_or(|p| req.port == Some(p))
            && self.query.iter().all(|(key, m)| query_value(req.query, key).is_some_and(|v| m.matches(v, false)))
            && self.source_labels.iter().all(|(k, v)| req.source_labels.get(k) == Some(v))
            && (self.gateways.is_empty()
                || self.gateways.iter().any(|g| req.gateways.contains(g) || (g == "mesh" && req.gateways.is_empty())))
            && self.source_namespace.as_deref().is_none_or(|ns| req.source_namespace == Some(ns))
    }
}

fn query_value<'a>(query: Option<&'a str>, key: &str) -> Option<&'a str> {
    query?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == key).then_some(v)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshlens_model::mesh::LoadReport;

    pub(crate) fn mesh(yaml: &str) -> MeshConfig {
        let mut report = LoadReport::default();
        report.parse_str("t.yaml", yaml);
        assert!(report.errors.is_empty(), "{:?}", report.errors);
        MeshConfig::new(report.resources)
    }

    fn view<'a>(
        method: &'a Method,
        host: &'a str,
        path: &'a str,
        query: Option<&'a str>,
        headers: &'a HeaderMap,
    ) -> RequestView<'a> {
        static EMPTY: std::sync::OnceLock<BTreeMap<String, String>> = std::sync::OnceLock::new();
        RequestView {
            method,
            host,
            port: Some(80),
            path,
            query,
            scheme: "http",
            headers,
            gateways: &[],
            source_labels: EMPTY.get_or_init(BTreeMap::new),
            source_namespace: None,
        }
    }

    const VS: &str = r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: default}
spec:
  hosts: [reviews]
  http:
  - name: jason
    match: [{headers: {end-user: {exact: jason}}, uri: {prefix: /api}, ignoreUriCase: true}]
    route: [{destination: {host: reviews, subset: v2}}]
    rewrite: {uri: /v2}
  - name: get-only
    match: [{method: {exact: GET}, queryParams: {debug: {exact: "1"}}}]
    route: [{destination: {host: reviews, subset: v3}}]
  - name: regex
    match: [{uri: {regex: "/item/[0-9]+"}}]
    redirect: {uri: /items, authority: shop.example.com}
  - route:
    - {destination: {host: reviews, subset: v1}, weight: 80}
    - {destination: {host: reviews, subset: v3}, weight: 20}
    retries: {attempts: 3, retryOn: "5xx,503"}
    fault: {abort: {httpStatus: 500, percentage: {value: 50}}}
"#;

    #[test]
    fn virtual_service_matches_in_order() {
        let table = RouteTable::for_mesh(&mesh(VS)).unwrap();
        let host = "reviews.default.svc.cluster.local";
        let get = Method::GET;
        let mut jason = HeaderMap::new();
        jason.insert("end-user", HeaderValue::from_static("jason"));
        let m = table.find(&view(&get, host, "/API/x", None, &jason)).unwrap();
        assert_eq!(m.route.name.as_deref(), Some("jason"));
        assert_eq!(
            m.route.rewrite.as_ref().unwrap().path("/API/x", Some("a=1"), m.rewrite_scope()).unwrap(),
            "/v2/x?a=1"
        );
        let none = HeaderMap::new();
        assert_eq!(
            table.find(&view(&get, host, "/api", Some("debug=1"), &none)).unwrap().route.name.as_deref(),
            Some("get-only")
        );
        assert_eq!(
            table.find(&view(&get, host, "/item/12", None, &none)).unwrap().route.name.as_deref(),
            Some("regex")
        );
        let last = table.find(&view(&get, host, "/item/12x", None, &none)).unwrap().route;
        assert!(last.name.is_none());
        assert_eq!(last.retry.retries, 3);
        assert!(last.retry.on.five_xx && last.retry.on.status_codes == [503]);
        assert_eq!(last.fault.as_ref().unwrap().abort, Some((StatusCode::INTERNAL_SERVER_ERROR, 50.0)));
        assert!(table.find(&view(&get, "ratings.default.svc.cluster.local", "/", None, &none)).is_none());
    }

    #[test]
    fn unset_retries_use_istio_defaults() {
        let policy = RetryPolicy::compile(None);
        assert_eq!(policy.retries, 2);
        assert!(policy.on.connect_failure && policy.on.refused_stream && !policy.on.five_xx);
        assert_eq!(policy.on.status_codes, [503]);
        assert_eq!(policy.on.grpc, [14, 1]);
    }

    #[test]
    fn weighted_pick_follows_weights() {
        let Action::Forward(targets) = &RouteTable::for_mesh(&mesh(VS)).unwrap().hosts[0].routes[3].action else {
            panic!()
        };
        let v1 = (0..10_000).filter(|_| Route::pick(targets).unwrap().target.subset.as_deref() == Some("v1")).count();
        // 80% of 10,000 has a standard deviation of 40: +-300 is 7.5 sigma.
        assert!((7_700..=8_300).contains(&v1), "{v1}");
    }

    #[test]
    fn bad_regex_is_a_compile_error() {
        let errors = RouteTable::for_mesh(&mesh(
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: r}\nspec: {hosts: [r], http: [{match: [{uri: {regex: \"(\"}}], route: [{destination: {host: r}}]}]}\n",
        ))
        .unwrap_err();
        assert!(errors[0].message.contains("invalid regex"), "{errors:?}");
    }

    #[test]
    fn ingress_paths_follow_the_kubernetes_spec() {
        let yaml = r#"
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: web, namespace: shop}
spec:
  defaultBackend: {service: {name: fallback, port: {number: 80}}}
  rules:
  - host: shop.example.com
    http:
      paths:
      - {path: /foo, pathType: Prefix, backend: {service: {name: foo, port: {number: 80}}}}
      - {path: /foo/bar, pathType: Exact, backend: {service: {name: bar, port: {name: http}}}}
      - {path: "/img/*", pathType: ImplementationSpecific, backend: {service: {name: img, port: {number: 80}}}}
"#;
        let mesh = mesh(yaml);
        let ingresses: Vec<&Ingress> = mesh
            .resources()
            .iter()
            .filter_map(|r| match &r.resource {
                meshlens_model::mesh::Resource::Ingress(i) => Some(i),
                _ => None,
            })
            .collect();
        let table = RouteTable::for_ingresses(ingresses);
        let get = Method::GET;
        let h = HeaderMap::new();
        let host_of = |path: &str, host: &str| {
            let m = table.find(&view(&get, host, path, None, &h))?;
            let Action::Forward(t) = &m.route.action else { return None };
            Some(t[0].target.service_host().to_owned())
        };
        let svc = |s: &str| Some(format!("{s}.shop.svc.cluster.local"));
        assert_eq!(host_of("/foo", "shop.example.com"), svc("foo"));
        assert_eq!(host_of("/foo/x", "shop.example.com"), svc("foo"));
        assert_eq!(host_of("/foo/bar", "shop.example.com"), svc("bar"));
        assert_eq!(host_of("/foobar", "shop.example.com"), svc("fallback"));
        assert_eq!(host_of("/img/a.png", "shop.example.com"), svc("img"));
        assert_eq!(host_of("/foo", "other.example.com"), svc("fallback"));
    }

    #[test]
    fn re2_backreferences_are_translated() {
        assert_eq!(re2_replacement(r"/v\1/$x"), "/v${1}/$$x");
    }
}
