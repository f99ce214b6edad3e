//! Istio AuthorizationPolicy for a sidecar's inbound traffic: DENY policies first, then — if any ALLOW
//! policy applies to the workload — at least one ALLOW rule must match. CUSTOM and AUDIT policies do not
//! change the decision.
//!
//! Fields the proxy cannot evaluate (JWT `requestPrincipals`, `request.auth.*` conditions) make a rule
//! deny more, as Istio does: they never match in ALLOW rules and always match in DENY rules.

use http::{HeaderMap, Method};
use meshlens_model::SpiffeId;
use meshlens_model::mesh::security::{AuthorizationAction, AuthorizationPolicy, AuthorizationRule, Condition};
use meshlens_model::mesh::{Kind, MeshConfig, Resource, meta::labels_match};
use std::collections::BTreeMap;
use std::net::IpAddr;

/// The policies that apply to one workload.
#[derive(Debug, Clone, Default)]
pub struct Authorizer {
    deny: Vec<(String, AuthorizationPolicy)>,
    allow: Vec<(String, AuthorizationPolicy)>,
}

/// The request attributes policies look at.
#[derive(Debug, Clone, Copy)]
pub struct RequestAttributes<'a> {
    pub principal: Option<&'a SpiffeId>,
    pub remote_ip: Option<IpAddr>,
    pub host: &'a str,
    pub port: u16,
    pub method: &'a Method,
    pub path: &'a str,
    pub headers: &'a HeaderMap,
}

impl Authorizer {
    /// Policies in the workload's namespace whose selector matches its labels (or that have none), and
    /// mesh-wide ones from the root namespace.
    pub fn for_workload(mesh: &MeshConfig, namespace: &str, labels: &BTreeMap<String, String>) -> Authorizer {
        let mut authorizer = Authorizer::default();
        for loaded in mesh.of_kind(Kind::AuthorizationPolicy) {
            let Resource::AuthorizationPolicy(policy) = &loaded.resource else { continue };
            let ns = policy.metadata.ns();
            if ns != namespace && ns != mesh.root_namespace() {
                continue;
            }
            if !policy.spec.selector.as_ref().is_none_or(|s| labels_match(&s.match_labels, labels)) {
                continue;
            }
            let name = format!("ns[{ns}]-policy[{}]", policy.metadata.name);
            match policy.spec.action {
                AuthorizationAction::Deny => authorizer.deny.push((name, policy.clone())),
                AuthorizationAction::Allow => authorizer.allow.push((name, policy.clone())),
                AuthorizationAction::Audit | AuthorizationAction::Custom => {}
            }
        }
        authorizer
    }

    /// `Ok` when allowed; otherwise the matched policy in Envoy's form (`ns[..]-policy[..]-rule[..]`, or
    /// `none` when no ALLOW rule matched).
    pub fn check(&self, request: &RequestAttributes<'_>) -> Result<(), String> {
        for (name, policy) in &self.deny {
            if let Some(i) = policy.spec.rules.iter().position(|r| rule_matches(r, request, true)) {
                return Err(format!("{name}-rule[{i}]"));
            }
        }
        if self.allow.is_empty()
            || self.allow.iter().any(|(_, p)| p.spec.rules.iter().any(|r| rule_matches(r, request, false)))
        {
            Ok(())
        } else {
            Err("none".into())
        }
    }
}

/// Istio's string match: exact, `*` (any non-empty), `prefix*` or `*suffix`.
fn value_matches(pattern: &str, value: &str) -> bool {
    if pattern == "*" {
        !value.is_empty()
    } else if let Some(prefix) = pattern.strip_suffix('*') {
        value.starts_with(prefix)
    } else if let Some(suffix) = pattern.strip_prefix('*') {
        value.ends_with(suffix)
    } else {
        pattern == value
    }
}

/// Positive list (empty = no constraint) and negative list.
fn field(values: &[String], not_values: &[String], actual: &str, test: fn(&str, &str) -> bool) -> bool {
    (values.is_empty() || values.iter().any(|v| test(v, actual))) && !not_values.iter().any(|v| test(v, actual))
}

fn ip_matches(block: &str, ip: &str) -> bool {
    let Ok(ip) = ip.parse::<IpAddr>() else { return false };
    let (net, bits) = block.split_once('/').unwrap_or((block, ""));
    let Ok(net) = net.parse::<IpAddr>() else { return false };
    match (net, ip) {
        (IpAddr::V4(n), IpAddr::V4(i)) => {
            let bits: u32 = bits.parse().unwrap_or(32).min(32);
            let mask = if bits == 0 { 0 } else { u32::MAX << (32 - bits) };
            u32::from(n) & mask == u32::from(i) & mask
        }
        (IpAddr::V6(n), IpAddr::V6(i)) => {
            let bits: u32 = bits.parse().unwrap_or(128).min(128);
            let mask = if bits == 0 { 0 } else { u128::MAX << (128 - bits) };
            u128::from(n) & mask == u128::from(i) & mask
        }
        _ => false,
    }
}

fn host_value_matches(pattern: &str, host: &str) -> bool {
    value_matches(&pattern.to_ascii_lowercase(), &host.to_ascii_lowercase())
}

fn rule_matches(rule: &AuthorizationRule, req: &RequestAttributes<'_>, deny: bool) -> bool {
    let principal = req.principal.map(SpiffeId::principal).unwrap_or_default();
    let namespace = req.principal.map(|p| p.namespace().to_owned()).unwrap_or_default();
    let ip = req.remote_ip.map(|ip| ip.to_string()).unwrap_or_default();
    let port = req.port.to_string();
    let from_ok = rule.from.is_empty()
        || rule.from.iter().any(|f| {
            let s = &f.source;
            let jwt_ok = s.request_principals.is_empty() && s.not_request_principals.is_empty() || deny;
            jwt_ok
                && field(&s.principals, &s.not_principals, &principal, value_matches)
                && field(&s.namespaces, &s.not_namespaces, &namespace, value_matches)
                && field(&s.ip_blocks, &s.not_ip_blocks, &ip, ip_matches)
                && field(&s.remote_ip_blocks, &s.not_remote_ip_blocks, &ip, ip_matches)
        });
    let to_ok = rule.to.is_empty()
        || rule.to.iter().any(|t| {
            let o = &t.operation;
            field(&o.hosts, &o.not_hosts, req.host, host_value_matches)
                && field(&o.ports, &o.not_ports, &port, |a, b| a == b)
                && field(&o.methods, &o.not_methods, req.method.as_str(), value_matches)
                && field(&o.paths, &o.not_paths, req.path, value_matches)
        });
    from_ok && to_ok && rule.when.iter().all(|c| condition_matches(c, req, &principal, &namespace, &ip, deny))
}

fn condition_matches(
    condition: &Condition,
    req: &RequestAttributes<'_>,
    principal: &str,
    namespace: &str,
    ip: &str,
    deny: bool,
) -> bool {
    let key = condition.key.as_str();
    let actual: Option<String> =
        if let Some(name) = key.strip_prefix("request.headers[").and_then(|k| k.strip_suffix(']')) {
            Some(req.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned())
        } else {
            match key {
                "source.ip" | "remote.ip" => Some(ip.to_owned()),
                "source.namespace" => Some(namespace.to_owned()),
                "source.principal" => Some(principal.to_owned()),
                "destination.port" => Some(req.port.to_string()),
                "request.method" => Some(req.method.to_string()),
                "request.path" | "request.url_path" => Some(req.path.to_owned()),
                "request.host" => Some(req.host.to_owned()),
                _ => None,
            }
        };
    let Some(actual) = actual else { return deny };
    let test = if key.ends_with(".ip") { ip_matches } else { value_matches };
    field(&condition.values, &condition.not_values, &actual, test)
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshlens_model::mesh::LoadReport;

    fn authorizer(yaml: &str) -> Authorizer {
        let mut report = LoadReport::default();
        report.parse_str("t.yaml", yaml);
        assert!(report.errors.is_empty(), "{:?}", report.errors);
        let labels = BTreeMap::from([("app".to_owned(), "reviews".to_owned())]);
        Authorizer::for_workload(&MeshConfig::new(report.resources), "default", &labels)
    }

    fn request<'a>(
        principal: Option<&'a SpiffeId>,
        method: &'a Method,
        path: &'a str,
        headers: &'a HeaderMap,
    ) -> RequestAttributes<'a> {
        RequestAttributes {
            principal,
            remote_ip: Some("10.1.2.3".parse().unwrap()),
            host: "reviews:9080",
            port: 9080,
            method,
            path,
            headers,
        }
    }

    #[test]
    fn deny_wins_then_allow_must_match() {
        let authz = authorizer(
            r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-admin, namespace: default}
spec:
  selector: {matchLabels: {app: reviews}}
  action: DENY
  rules: [{to: [{operation: {paths: ["/admin*"]}}]}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-frontend, namespace: default}
spec:
  rules:
  - from: [{source: {principals: ["cluster.local/ns/default/sa/frontend"]}}]
    to: [{operation: {methods: [GET]}}]
  - from: [{source: {namespaces: [ops]}}]
    when: [{key: "request.headers[x-debug]", values: ["1"]}]
"#,
        );
        let frontend: SpiffeId = "spiffe://cluster.local/ns/default/sa/frontend".parse().unwrap();
        let ops: SpiffeId = "spiffe://cluster.local/ns/ops/sa/tool".parse().unwrap();
        let h = HeaderMap::new();
        let (get, post) = (Method::GET, Method::POST);
        assert_eq!(authz.check(&request(Some(&frontend), &get, "/reviews/1", &h)), Ok(()));
        assert_eq!(authz.check(&request(Some(&frontend), &post, "/reviews/1", &h)), Err("none".into()));
        assert_eq!(
            authz.check(&request(Some(&frontend), &get, "/admin/x", &h)),
            Err("ns[default]-policy[deny-admin]-rule[0]".into())
        );
        assert!(authz.check(&request(None, &get, "/reviews/1", &h)).is_err());
        let mut debug = HeaderMap::new();
        debug.insert("x-debug", "1".parse().unwrap());
        assert_eq!(authz.check(&request(Some(&ops), &post, "/x", &debug)), Ok(()));
        assert!(authz.check(&request(Some(&ops), &post, "/x", &h)).is_err());
    }

    #[test]
    fn no_policies_allow_everything_and_empty_allow_denies() {
        let h = HeaderMap::new();
        let get = Method::GET;
        assert!(Authorizer::default().check(&request(None, &get, "/", &h)).is_ok());
        let deny_all = authorizer(
            "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: nothing, namespace: default}\nspec: {}\n",
        );
        assert!(deny_all.check(&request(None, &get, "/", &h)).is_err());
    }

    #[test]
    fn ip_blocks() {
        assert!(ip_matches("10.1.0.0/16", "10.1.2.3"));
        assert!(!ip_matches("10.2.0.0/16", "10.1.2.3"));
        assert!(ip_matches("10.1.2.3", "10.1.2.3"));
        assert!(!ip_matches("garbage", "10.1.2.3"));
    }
}
