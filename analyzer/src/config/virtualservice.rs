//! VirtualService checks (istioctl's `virtualservice.*` analyzers and its rule-reachability validation):
//! host conflicts on the mesh gateway, destinations, subsets, gateways, and unreachable rules.

use super::codes::{IST0101, IST0109, IST0112, IST0130, IST0131, IST0132, IST0140, IST0165};
use super::context::{Context, export_scopes, full_name, go_list, hosts_overlap, service_name_of_host, to_fqdn};
use crate::Finding;
use meshlens_model::mesh::LoadedResource;
use meshlens_model::mesh::networking::{Destination, HttpMatchRequest, L4Match, StringMatch, VirtualService};
use std::collections::{BTreeMap, BTreeSet};

const MESH_GATEWAY: &str = "mesh";

/// IST0109: VirtualServices bound to the `mesh` gateway define the same host within an export scope (a
/// host exported everywhere also meets the same host exported to one namespace).
pub fn conflicting_mesh_gateway_hosts(cx: &Context<'_>, out: &mut Vec<Finding>) {
    let mut by_host: BTreeMap<(String, String), Vec<(&LoadedResource, &VirtualService)>> = BTreeMap::new();
    for (loaded, vs) in cx.virtual_services() {
        if !(vs.spec.gateways.is_empty() || vs.spec.gateways.iter().any(|g| g == MESH_GATEWAY)) {
            continue;
        }
        let namespace = vs.metadata.ns();
        for scope in export_scopes(&vs.spec.export_to, namespace) {
            for host in &vs.spec.hosts {
                by_host.entry((scope.clone(), to_fqdn(host, namespace))).or_default().push((loaded, vs));
            }
        }
    }
    let mut reported = BTreeSet::new();
    for ((scope, host), services) in &by_host {
        let mut conflicting = services.clone();
        if scope != "*" {
            for ((other_scope, other_host), others) in &by_host {
                if other_scope == "*" && hosts_overlap(host, other_host) {
                    conflicting.extend(others);
                }
            }
        }
        if conflicting.len() < 2 {
            continue;
        }
        let mut names: Vec<String> = conflicting.iter().map(|(_, vs)| full_name(&vs.metadata)).collect();
        names.sort();
        let names = names.join(",");
        for (loaded, vs) in conflicting {
            if reported.insert(full_name(&vs.metadata)) {
                let message = format!(
                    "The VirtualServices {names} associated with mesh gateway define the same host {scope}/{host} which \
                     can lead to undefined behavior. This can be fixed by merging the conflicting VirtualServices \
                     into a single resource."
                );
                cx.report(out, &IST0109, loaded, message);
            }
        }
    }
}

/// A destination and whether it is a mirror.
struct RouteDestination<'v> {
    destination: &'v Destination,
    mirror: bool,
}

/// Route destinations (TCP, TLS, then HTTP, as istioctl lists them) followed by HTTP mirrors.
fn destinations(vs: &VirtualService) -> Vec<RouteDestination<'_>> {
    let spec = &vs.spec;
    let routes = spec
        .tcp
        .iter()
        .flat_map(|r| r.route.iter().map(|d| &d.destination))
        .chain(spec.tls.iter().flat_map(|r| r.route.iter().map(|d| &d.destination)))
        .chain(spec.http.iter().flat_map(|r| r.route.iter().map(|d| &d.destination)))
        .map(|destination| RouteDestination { destination, mirror: false });
    let mirrors = spec
        .http
        .iter()
        .flat_map(|r| r.mirror.iter().chain(r.mirrors.iter().map(|m| &m.destination)))
        .map(|destination| RouteDestination { destination, mirror: true });
    routes.chain(mirrors).collect()
}

/// IST0101 (host or host:port not found), IST0112 (port required), IST0140 (gateway route to a host that
/// another VirtualService splits by subset).
pub fn destination_hosts(cx: &Context<'_>, out: &mut Vec<Finding>) {
    for (loaded, vs) in cx.virtual_services() {
        let namespace = vs.metadata.ns();
        for RouteDestination { destination, mirror } in destinations(vs) {
            let host = &destination.host;
            let Some(entry) = cx.destination_host(namespace, &vs.spec.export_to, host) else {
                let what = if mirror { "mirror host" } else { "host" };
                cx.report(out, &IST0101, loaded, format!("Referenced {what} not found: {host:?}"));
                continue;
            };
            match destination.port.as_ref().and_then(|p| p.number) {
                None if entry.ports.len() > 1 => {
                    let message = format!(
                        "This VirtualService routes to a service {host:?} that exposes multiple ports {}. Specifying a \
                         port in the destination is required to disambiguate.",
                        go_list(&entry.ports)
                    );
                    cx.report(out, &IST0112, loaded, message);
                }
                Some(port) if !entry.ports.contains(&port) => {
                    cx.report(out, &IST0101, loaded, format!("Referenced host:port not found: \"{host}:{port}\""));
                }
                _ => {}
            }
        }
        ingress_routes_without_subsets(cx, out, loaded, vs);
    }
}

fn ingress_routes_without_subsets(
    cx: &Context<'_>,
    out: &mut Vec<Finding>,
    loaded: &LoadedResource,
    vs: &VirtualService,
) {
    if vs.spec.gateways.is_empty() {
        return;
    }
    let plain_hosts = vs.spec.http.iter().flat_map(|r| &r.route).map(|d| &d.destination).filter(|d| d.subset.is_none());
    for destination in plain_hosts {
        for (_, other) in cx.virtual_services() {
            let splits = other
                .spec
                .http
                .iter()
                .flat_map(|r| &r.route)
                .map(|d| &d.destination)
                .filter(|d| d.subset.is_some() && d.host == destination.host && other.spec.hosts.contains(&d.host));
            for _ in splits {
                let message = format!(
                    "Subset in virtual service {} has no effect on ingress gateway {} requests",
                    full_name(&other.metadata),
                    full_name(&vs.metadata)
                );
                cx.report(out, &IST0140, loaded, message);
            }
        }
    }
}

/// IST0101: a route or mirror names a subset that no DestinationRule for the host defines.
pub fn destination_subsets(cx: &Context<'_>, out: &mut Vec<Finding>) {
    let defined: BTreeSet<((String, String), &str)> = cx
        .destination_rules()
        .flat_map(|(_, dr)| {
            let host = service_name_of_host(&dr.spec.host, dr.metadata.ns());
            dr.spec.subsets.iter().map(move |s| (host.clone(), s.name.as_str()))
        })
        .collect();
    for (loaded, vs) in cx.virtual_services() {
        for RouteDestination { destination, mirror } in destinations(vs) {
            let Some(subset) = destination.subset.as_deref().filter(|s| !s.is_empty()) else { continue };
            let host = service_name_of_host(&destination.host, vs.metadata.ns());
            if !defined.contains(&(host, subset)) {
                let what = if mirror { "mirror+subset in destinationrule" } else { "host+subset in destinationrule" };
                let message = format!("Referenced {what} not found: \"{}+{subset}\"", destination.host);
                cx.report(out, &IST0101, loaded, message);
            }
        }
    }
}

/// IST0101 (gateway not found), IST0132 (no host served by the gateway), IST0165 (generated gateway).
pub fn gateways(cx: &Context<'_>, out: &mut Vec<Finding>) {
    for (loaded, vs) in cx.virtual_services() {
        let namespace = vs.metadata.ns();
        for gateway_ref in &vs.spec.gateways {
            if gateway_ref == MESH_GATEWAY {
                continue;
            }
            let name_part = gateway_ref.split_once('/').map_or(gateway_ref.as_str(), |(_, n)| n);
            if name_part.contains("~istio-autogenerated-k8s-gateway~") {
                let message = format!(
                    "Gateway reference in VirtualService {} is to an implementation-generated internal Gateway: \
                     {gateway_ref}.",
                    full_name(&vs.metadata)
                );
                cx.report(out, &IST0165, loaded, message);
                continue;
            }
            let (gw_namespace, gw_name) = gateway_namespace_and_name(gateway_ref, namespace);
            let resolved = format!("{gw_namespace}/{gw_name}");
            let gateway =
                cx.gateways().map(|(_, g)| g).find(|g| g.metadata.ns() == gw_namespace && g.metadata.name == gw_name);
            let served = match gateway {
                Some(gateway) => {
                    let hosts = gateway_hosts_for(gateway_hosts(gateway), namespace);
                    hosts.iter().any(|gh| vs.spec.hosts.iter().any(|h| hosts_overlap(gh, h)))
                }
                // A Gateway API Gateway: meshlens does not model its listeners, so it cannot tell.
                None if is_kubernetes_gateway(cx, gw_name) => true,
                None => {
                    cx.report(out, &IST0101, loaded, format!("Referenced gateway not found: {gateway_ref:?}"));
                    false
                }
            };
            if !served {
                let message = format!(
                    "one or more host {} defined in VirtualService {} not found in Gateway {}.",
                    go_list(&vs.spec.hosts),
                    full_name(&vs.metadata),
                    gateway.map_or_else(|| resolved.clone(), |g| full_name(&g.metadata))
                );
                cx.report(out, &IST0132, loaded, message);
            }
        }
    }
}

/// `namespace/name`, the deprecated `name.namespace[.svc...]`, or a bare name in the VirtualService's
/// namespace.
fn gateway_namespace_and_name<'r>(gateway: &'r str, vs_namespace: &'r str) -> (&'r str, &'r str) {
    if let Some((namespace, name)) = gateway.split_once('/') {
        (namespace, name)
    } else if let Some((name, rest)) = gateway.split_once('.') {
        (rest.split('.').next().unwrap_or(rest), name)
    } else {
        (vs_namespace, gateway)
    }
}

fn is_kubernetes_gateway(cx: &Context<'_>, name: &str) -> bool {
    cx.skipped.iter().any(|d| {
        d.kind == "Gateway"
            && d.api_version.starts_with("gateway.networking.k8s.io/")
            && d.name.as_deref() == Some(name)
    })
}

/// A Gateway's server hosts with `./host` made `namespace/host` and `*/host` made `host`; a server with
/// `*/*` serves everything.
fn gateway_hosts(gateway: &meshlens_model::mesh::networking::Gateway) -> Vec<String> {
    let namespace = gateway.metadata.ns();
    let mut hosts = Vec::new();
    for server in &gateway.spec.servers {
        for host in &server.hosts {
            match host.split_once('/') {
                Some((".", name)) => hosts.push(format!("{namespace}/{name}")),
                Some(("*", "*")) => return vec!["*".to_owned()],
                Some(("*", name)) => hosts.push(name.to_owned()),
                _ => hosts.push(host.clone()),
            }
        }
    }
    hosts
}

/// The gateway hosts a VirtualService in `namespace` may bind: unscoped ones, and `ns/host` ones for its
/// own namespace or `*`.
fn gateway_hosts_for(hosts: Vec<String>, namespace: &str) -> Vec<String> {
    hosts
        .into_iter()
        .filter_map(|host| match host.split_once('/') {
            Some((ns, name)) if ns == namespace || ns == "*" => Some(name.to_owned()),
            Some(_) => None,
            None => Some(host),
        })
        .collect()
}

/// IST0130 (a rule can never match), IST0131 (a match duplicates or is covered by an earlier one).
pub fn unreachable_rules(cx: &Context<'_>, out: &mut Vec<Finding>) {
    for (loaded, vs) in cx.virtual_services() {
        let mut unreachable = |rule: String, reason: &str| {
            cx.report(out, &IST0130, loaded, format!("VirtualService rule {rule} not used ({reason})."));
        };
        let mut messages = Vec::new();
        let http: Vec<(String, Vec<(String, &HttpMatchRequest)>)> = vs
            .spec
            .http
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let rule = r.name.as_ref().map_or_else(|| format!("#{i}"), |n| format!("{n:?}"));
                let matches = r
                    .matches
                    .iter()
                    .enumerate()
                    .map(|(j, m)| (m.name.as_ref().map_or_else(|| format!("#{j}"), |n| format!("{n:?}")), m))
                    .collect();
                (rule, matches)
            })
            .collect();
        analyze_rules(&http, same_http_match, &mut unreachable, &mut messages);
        for (later, earlier) in covered_prefix_matches(&http) {
            messages.push(later_covered(later, earlier));
        }
        let tcp = numbered_l4_rules(vs.spec.tcp.iter().map(|r| &r.matches));
        analyze_rules(&tcp, |a, b| a == b, &mut unreachable, &mut messages);
        let tls = numbered_l4_rules(vs.spec.tls.iter().map(|r| &r.matches));
        analyze_rules(&tls, |a, b| a == b, &mut unreachable, &mut messages);
        for message in messages {
            cx.report(out, &IST0131, loaded, message);
        }
    }
}

/// TCP and TLS rules and matches have no names: `#index`.
fn numbered_l4_rules<'v>(rules: impl Iterator<Item = &'v Vec<L4Match>>) -> Vec<(String, Vec<(String, &'v L4Match)>)> {
    rules
        .enumerate()
        .map(|(i, matches)| (format!("#{i}"), matches.iter().enumerate().map(|(j, m)| (format!("#{j}"), m)).collect()))
        .collect()
}

/// Rules after one without matches never run; a rule whose every match repeats an earlier one is dead.
fn analyze_rules<M>(
    rules: &[(String, Vec<(String, &M)>)],
    same: impl Fn(&M, &M) -> bool,
    unreachable: &mut impl FnMut(String, &str),
    ineffective: &mut Vec<String>,
) {
    let mut catch_all_seen = false;
    let mut seen: Vec<(&M, &str)> = Vec::new();
    for (rule, matches) in rules {
        if matches.is_empty() {
            if catch_all_seen {
                unreachable(rule.clone(), "only the last rule can have no matches");
            }
            catch_all_seen = true;
            continue;
        }
        if catch_all_seen {
            unreachable(rule.clone(), "route without matches defined before");
            continue;
        }
        let mut duplicates = 0;
        for (name, m) in matches {
            match seen.iter().find(|(earlier, _)| same(earlier, m)) {
                Some((_, earlier_rule)) => {
                    ineffective.push(format!(
                        "VirtualService rule {rule} match {name} is not used (duplicate/overlapping match in rule \
                         {earlier_rule})."
                    ));
                    duplicates += 1;
                }
                None => seen.push((m, rule)),
            }
        }
        if duplicates == matches.len() {
            unreachable(rule.clone(), "all matches used by prior rules");
        }
    }
}

fn same_http_match(a: &HttpMatchRequest, b: &HttpMatchRequest) -> bool {
    // Names do not take part in routing.
    HttpMatchRequest { name: None, ..a.clone() } == HttpMatchRequest { name: None, ..b.clone() }
}

/// A URI prefix (or exact) match and where it sits.
#[derive(Clone, Copy)]
struct UriMatch<'v> {
    rule_index: usize,
    rule: &'v str,
    name: &'v str,
    uri: &'v str,
    is_prefix: bool,
    request: &'v HttpMatchRequest,
}

/// Pairs (later, earlier) of matches in different rules where the earlier prefix match catches every
/// request the later one would: its prefix starts the later URI, and each of its other conditions is
/// implied by the later match's. (istioctl compares prefix matches only and needs equal header sets; this
/// is the same idea, stated as implication.)
fn covered_prefix_matches<'v>(
    rules: &'v [(String, Vec<(String, &'v HttpMatchRequest)>)],
) -> Vec<(UriMatch<'v>, UriMatch<'v>)> {
    let uri_matches: Vec<UriMatch<'v>> = rules
        .iter()
        .enumerate()
        .flat_map(|(rule_index, (rule, matches))| {
            matches.iter().filter_map(move |(name, request)| {
                let uri = request.uri.as_ref()?;
                let (uri, is_prefix) = match (&uri.prefix, &uri.exact) {
                    (Some(prefix), _) if !prefix.is_empty() => (prefix.as_str(), true),
                    (_, Some(exact)) => (exact.as_str(), false),
                    _ => return None,
                };
                Some(UriMatch { rule_index, rule, name, uri, is_prefix, request })
            })
        })
        .collect();
    let mut pairs = Vec::new();
    for (i, later) in uri_matches.iter().enumerate() {
        let covering = uri_matches[..i].iter().find(|earlier| {
            earlier.is_prefix
                && earlier.rule_index < later.rule_index
                && earlier.uri != later.uri
                && later.uri.starts_with(earlier.uri)
                && (earlier.request.ignore_uri_case || !later.request.ignore_uri_case)
                && rest_implied(earlier.request, later.request)
        });
        if let Some(earlier) = covering {
            pairs.push((*later, *earlier));
        }
    }
    pairs
}

fn later_covered(later: UriMatch<'_>, earlier: UriMatch<'_>) -> String {
    let kind = if later.is_prefix { "prefix" } else { "exact" };
    format!(
        "VirtualService rule {} match {} of {kind} {} is not used (duplicate/overlapping match in rule {} of prefix \
         {} on {}).",
        later.rule, later.name, later.uri, earlier.name, earlier.uri, earlier.rule
    )
}

/// Whether every non-URI condition of `general` holds for all requests `specific` matches.
fn rest_implied(general: &HttpMatchRequest, specific: &HttpMatchRequest) -> bool {
    let maps_implied = |g: &BTreeMap<String, StringMatch>, s: &BTreeMap<String, StringMatch>| {
        g.iter().all(|(key, gm)| s.get(key).is_some_and(|sm| string_match_implied(gm, sm)))
    };
    let optional_implied = |g: &Option<StringMatch>, s: &Option<StringMatch>| match (g, s) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(g), Some(s)) => string_match_implied(g, s),
    };
    general.port.is_none_or(|p| specific.port == Some(p))
        && optional_implied(&general.method, &specific.method)
        && optional_implied(&general.authority, &specific.authority)
        && optional_implied(&general.scheme, &specific.scheme)
        && maps_implied(&general.headers, &specific.headers)
        && maps_implied(&general.query_params, &specific.query_params)
        && general.without_headers.iter().all(|(k, gm)| specific.without_headers.get(k) == Some(gm))
        && general.source_labels.iter().all(|(k, v)| specific.source_labels.get(k) == Some(v))
        && (general.gateways.is_empty()
            || !specific.gateways.is_empty() && specific.gateways.iter().all(|g| general.gateways.contains(g)))
        && general.source_namespace.as_ref().is_none_or(|ns| specific.source_namespace.as_ref() == Some(ns))
}

/// Whether every value `specific` accepts is accepted by `general`. An empty match means "present".
fn string_match_implied(general: &StringMatch, specific: &StringMatch) -> bool {
    if general == specific {
        return true;
    }
    match (&general.exact, &general.prefix, &general.regex) {
        (None, None, None) => true,
        (None, Some(prefix), None) => {
            specific.regex.is_none()
                && (specific.exact.as_ref().is_some_and(|e| e.starts_with(prefix.as_str()))
                    || specific.prefix.as_ref().is_some_and(|p| p.starts_with(prefix.as_str())))
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use crate::config::ConfigAnalyzer;
    use meshlens_model::mesh::{LoadReport, MeshSettings};

    fn rule_findings(http: &str) -> Vec<(String, String)> {
        let yaml = format!(
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: r, namespace: a}}\n\
             spec:\n  hosts: [r]\n  http:\n{http}"
        );
        let mut report = LoadReport::default();
        report.parse_str("t.yaml", &yaml);
        assert!(report.errors.is_empty(), "{:?}", report.errors);
        let analyzer =
            ConfigAnalyzer::new(MeshSettings::default()).with_checks(&["virtualservice.UnreachableRuleAnalyzer"]);
        analyzer.unwrap().analyze(&report).into_iter().map(|f| (f.code, f.message)).collect()
    }

    #[test]
    fn rules_after_a_catch_all_and_repeated_matches_are_unreachable() {
        let findings = rule_findings(
            "  - name: api\n    match: [{uri: {prefix: /api}}]\n    route: [{destination: {host: r}}]\n\
             \x20 - name: again\n    match: [{name: dup, uri: {prefix: /api}}]\n    route: [{destination: {host: r}}]\n\
             \x20 - route: [{destination: {host: r}}]\n\
             \x20 - match: [{uri: {prefix: /late}}]\n    route: [{destination: {host: r}}]\n",
        );
        let expected = [
            ("IST0130", "VirtualService rule \"again\" not used (all matches used by prior rules)."),
            ("IST0130", "VirtualService rule #3 not used (route without matches defined before)."),
            (
                "IST0131",
                "VirtualService rule \"again\" match \"dup\" is not used (duplicate/overlapping match in rule \"api\").",
            ),
        ];
        let expected: Vec<(String, String)> =
            expected.iter().map(|(c, m)| ((*c).to_owned(), (*m).to_owned())).collect();
        assert_eq!(findings, expected);
    }

    #[test]
    fn a_match_covered_by_an_earlier_prefix_is_ineffective_unless_it_is_narrower_elsewhere() {
        let findings = rule_findings(
            "  - match: [{uri: {prefix: /api}}]\n    route: [{destination: {host: r}}]\n\
             \x20 - match: [{uri: {prefix: /api/v2}, method: {exact: POST}}, {uri: {exact: /api/x}}]\n    route: [{destination: {host: r}}]\n\
             \x20 - match: [{uri: {prefix: /apix}}]\n    route: [{destination: {host: r}}]\n\
             \x20 - match: [{uri: {prefix: /b}, headers: {x: {prefix: v}}}]\n    route: [{destination: {host: r}}]\n\
             \x20 - match: [{uri: {prefix: /b/c}}, {uri: {prefix: /b/d}, headers: {x: {exact: v1}}}]\n    route: [{destination: {host: r}}]\n",
        );
        let messages: Vec<&str> = findings.iter().map(|(_, m)| m.as_str()).collect();
        assert_eq!(
            messages,
            [
                "VirtualService rule #1 match #0 of prefix /api/v2 is not used (duplicate/overlapping match in rule #0 of prefix /api on #0).",
                "VirtualService rule #1 match #1 of exact /api/x is not used (duplicate/overlapping match in rule #0 of prefix /api on #0).",
                "VirtualService rule #2 match #0 of prefix /apix is not used (duplicate/overlapping match in rule #0 of prefix /api on #0).",
                "VirtualService rule #4 match #1 of prefix /b/d is not used (duplicate/overlapping match in rule #0 of prefix /b on #3).",
            ]
        );
    }
}
