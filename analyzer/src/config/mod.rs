//! Static checks of mesh configuration: istioctl's analyzers (same `IST` codes, levels and messages) and
//! meshlens' own (`ML` codes).
//!
//! [`ConfigAnalyzer`] runs the [`CHECKS`] over loaded resources. Like `istioctl analyze` on files, it
//! assumes Istio's default ingress gateway (a Pod labelled `istio: ingressgateway` and its Service in the
//! root namespace) exists unless the input defines it, ignores the Kubernetes system namespaces, and reports
//! each distinct finding once.

mod authorization;
pub mod codes;
mod context;
mod destinationrule;
mod gateway;
mod meshlens;
mod service;
mod sidecar;
mod virtualservice;

pub use codes::{CODES, Code};

use crate::Finding;
use context::Context;
use meshlens_model::mesh::{Kind, LoadReport, LoadedResource, MeshConfig, MeshSettings};
use std::cmp::Reverse;

/// One check: a reproduction of one istioctl analyzer, or one of meshlens' own.
#[derive(Debug)]
pub struct Check {
    /// istioctl's analyzer name (`gateway.IngressGatewayPortAnalyzer`), or `meshlens.<Name>`.
    pub name: &'static str,
    pub description: &'static str,
    pub codes: &'static [Code],
    run: fn(&Context<'_>, &mut Vec<Finding>),
}

/// Every check, in the order they run.
pub static CHECKS: &[Check] = &[
    Check {
        name: "gateway.IngressGatewayPortAnalyzer",
        description: "A Gateway's selector picks workloads, and its server ports are exposed by their Services",
        codes: &[codes::IST0101, codes::IST0162],
        run: gateway::ingress_gateway_ports,
    },
    Check {
        name: "gateway.SecretAnalyzer",
        description: "A Gateway's TLS credentialName names a Secret with a certificate and key in the gateway's namespace",
        codes: &[codes::IST0101, codes::IST0161],
        run: gateway::secrets,
    },
    Check {
        name: "gateway.ConflictingGatewayAnalyzer",
        description: "Gateways on the same workloads do not declare the same port and host",
        codes: &[codes::IST0145],
        run: gateway::conflicting_gateways,
    },
    Check {
        name: "gateway.CertificateAnalyzer",
        description: "Gateways on the same workloads do not share a certificate",
        codes: &[codes::IST0138],
        run: gateway::duplicate_certificates,
    },
    Check {
        name: "virtualservice.ConflictingMeshGatewayHostsAnalyzer",
        description: "VirtualServices bound to the mesh gateway do not define the same host",
        codes: &[codes::IST0109],
        run: virtualservice::conflicting_mesh_gateway_hosts,
    },
    Check {
        name: "virtualservice.DestinationHostAnalyzer",
        description: "Route and mirror destinations name visible hosts and ports; gateway routes are not split by subsets elsewhere",
        codes: &[codes::IST0101, codes::IST0112, codes::IST0140],
        run: virtualservice::destination_hosts,
    },
    Check {
        name: "virtualservice.DestinationRuleAnalyzer",
        description: "Route and mirror subsets are defined by a DestinationRule for the host",
        codes: &[codes::IST0101],
        run: virtualservice::destination_subsets,
    },
    Check {
        name: "virtualservice.GatewayAnalyzer",
        description: "A VirtualService's gateways exist, are not generated ones, and serve its hosts",
        codes: &[codes::IST0101, codes::IST0132, codes::IST0165],
        run: virtualservice::gateways,
    },
    Check {
        name: "virtualservice.UnreachableRuleAnalyzer",
        description: "Every route rule and match can be reached (istioctl reports these from schema validation)",
        codes: &[codes::IST0130, codes::IST0131],
        run: virtualservice::unreachable_rules,
    },
    Check {
        name: "destinationrule.CaCertificateAnalyzer",
        description: "TLS origination (SIMPLE/MUTUAL) verifies the server with caCertificates",
        codes: &[codes::IST0128, codes::IST0129],
        run: destinationrule::ca_certificates,
    },
    Check {
        name: "destinationrule.PodNotSelectedAnalyzer",
        description: "A DestinationRule's host exists and its subsets select workloads",
        codes: &[codes::IST0173, codes::IST0174],
        run: destinationrule::subsets_select_workloads,
    },
    Check {
        name: "service.PortNameAnalyzer",
        description: "Service port names declare a protocol",
        codes: &[codes::IST0118, codes::IST0150],
        run: service::port_names,
    },
    Check {
        name: "deployment.ServiceAssociationAnalyzer",
        description: "Services selecting an injected Deployment agree on each port's protocol and targetPort",
        codes: &[codes::IST0116, codes::IST0137],
        run: service::deployment_services,
    },
    Check {
        name: "authz.AuthorizationPoliciesAnalyzer",
        description: "AuthorizationPolicies select workloads and name existing source namespaces",
        codes: &[codes::IST0101, codes::IST0127],
        run: authorization::authorization_policies,
    },
    Check {
        name: "sidecar.SelectorAnalyzer",
        description: "Sidecars select workloads, do not overlap, and do not target ambient workloads",
        codes: &[codes::IST0101, codes::IST0110, codes::IST0111, codes::IST0167],
        run: sidecar::selectors,
    },
    Check {
        name: "meshlens.RouteTimeouts",
        description: "HTTP routes set a timeout",
        codes: &[codes::ML1001],
        run: meshlens::route_timeouts,
    },
    Check {
        name: "meshlens.RetryPolicies",
        description: "Retries are safe for the methods they retry and fit in the route timeout",
        codes: &[codes::ML1002, codes::ML1003],
        run: meshlens::retry_policies,
    },
    Check {
        name: "meshlens.CircuitBreaking",
        description: "Every service has outlier detection and connection-pool limits",
        codes: &[codes::ML1004, codes::ML1005],
        run: meshlens::circuit_breaking,
    },
    Check {
        name: "meshlens.MutualTls",
        description: "Client TLS agrees with STRICT PeerAuthentication; no PeerAuthentication accepts plaintext",
        codes: &[codes::ML1006, codes::ML1007],
        run: meshlens::mutual_tls,
    },
    Check {
        name: "meshlens.AuthorizationCoverage",
        description: "Every workload is covered by an AuthorizationPolicy",
        codes: &[codes::ML1008],
        run: meshlens::authorization_coverage,
    },
    Check {
        name: "meshlens.RouteWeights",
        description: "The weights of a route's destinations add up to 100",
        codes: &[codes::ML1009],
        run: meshlens::route_weights,
    },
];

/// The check with this name.
pub fn check(name: &str) -> Option<&'static Check> {
    CHECKS.iter().find(|c| c.name == name)
}

/// A check name that is not in [`CHECKS`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown check {0:?}")]
pub struct UnknownCheck(pub String);

/// Namespaces istioctl never analyzes (Kubernetes' own).
const IGNORED_NAMESPACES: [&str; 4] = ["kube-system", "kube-public", "kube-node-lease", "local-path-storage"];

/// The origin file of the resources meshlens assumes exist (see [`ConfigAnalyzer::new`]).
const DEFAULTS_FILE: &str = "<default ingress gateway>";

/// Runs checks over mesh configuration.
#[derive(Debug, Clone)]
pub struct ConfigAnalyzer {
    settings: MeshSettings,
    checks: Vec<&'static Check>,
    default_ingress: bool,
}

impl ConfigAnalyzer {
    /// All checks. Like `istioctl analyze` on files, the analysis assumes Istio's default ingress gateway
    /// (`istio-ingressgateway` Pod and Service in the root namespace) so that Gateways selecting
    /// `istio: ingressgateway` are not reported for a workload the files do not show; an input that defines
    /// that Service replaces the assumed one. Findings are never reported on the assumed resources.
    pub fn new(settings: MeshSettings) -> Self {
        ConfigAnalyzer { settings, checks: CHECKS.iter().collect(), default_ingress: true }
    }

    /// Runs only the named checks.
    pub fn with_checks(mut self, names: &[&str]) -> Result<Self, UnknownCheck> {
        self.checks =
            names.iter().map(|n| check(n).ok_or_else(|| UnknownCheck((*n).to_owned()))).collect::<Result<_, _>>()?;
        Ok(self)
    }

    /// Analyzes exactly what was loaded, without assuming the default ingress gateway.
    pub fn without_default_ingress(mut self) -> Self {
        self.default_ingress = false;
        self
    }

    /// Runs the checks over the resources of `report` (its skipped documents tell which unmodelled
    /// objects exist, e.g. Gateway API Gateways). Findings come sorted by level (most severe first),
    /// resource, code and message, each distinct finding once.
    pub fn analyze(&self, report: &LoadReport) -> Vec<Finding> {
        let mut resources =
            if self.default_ingress { default_ingress(&self.settings.root_namespace) } else { Vec::new() };
        resources.extend(report.resources.iter().filter(|r| !in_ignored_namespace(r)).cloned());
        let mesh = MeshConfig::new(resources).with_root_namespace(&self.settings.root_namespace);
        let cx = Context::new(&mesh, &report.skipped, DEFAULTS_FILE);
        let mut findings = Vec::new();
        for check in &self.checks {
            (check.run)(&cx, &mut findings);
        }
        findings.sort_by(|a, b| {
            (Reverse(a.level), &a.resource, &a.code, &a.message).cmp(&(
                Reverse(b.level),
                &b.resource,
                &b.code,
                &b.message,
            ))
        });
        // Several istioctl analyzers report the same problem (e.g. a Gateway selecting no workload); like
        // istioctl, report it once.
        findings.dedup_by(|a, b| a.code == b.code && a.resource == b.resource && a.message == b.message);
        findings
    }
}

fn in_ignored_namespace(loaded: &LoadedResource) -> bool {
    let meta = loaded.resource.metadata();
    let namespace = if loaded.resource.kind() == Kind::Namespace { meta.name.as_str() } else { meta.ns() };
    IGNORED_NAMESPACES.contains(&namespace)
}

/// The ingress gateway `istioctl analyze` assumes when analyzing files.
fn default_ingress(namespace: &str) -> Vec<LoadedResource> {
    let yaml = format!(
        "apiVersion: v1
kind: Pod
metadata:
  name: istio-ingressgateway-dummypod
  namespace: {namespace}
  labels: {{istio: ingressgateway}}
spec:
  containers: [{{name: istio-proxy}}]
---
apiVersion: v1
kind: Service
metadata:
  name: istio-ingressgateway
  namespace: {namespace}
spec:
  selector: {{istio: ingressgateway}}
  ports:
  - {{name: http2, port: 80, targetPort: 80, protocol: TCP}}
  - {{name: https, port: 443, targetPort: 443, protocol: TCP}}
  - {{name: tcp, port: 31400, targetPort: 31400, protocol: TCP}}
  - {{name: tls, port: 15443, targetPort: 15443, protocol: TCP}}
"
    );
    let mut report = LoadReport::default();
    report.parse_str(DEFAULTS_FILE, &yaml);
    report.resources
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn analyze(yaml: &str) -> Vec<Finding> {
        let mut report = LoadReport::default();
        report.parse_str("t.yaml", yaml);
        assert!(report.errors.is_empty(), "{:?}", report.errors);
        ConfigAnalyzer::new(MeshSettings::default()).analyze(&report)
    }

    #[test]
    fn every_code_is_emitted_by_a_check_and_every_check_code_is_cataloged() {
        let emitted: BTreeSet<&str> = CHECKS.iter().flat_map(|c| c.codes.iter().map(|code| code.code)).collect();
        let cataloged: BTreeSet<&str> = CODES.iter().map(|c| c.code).collect();
        assert_eq!(emitted, cataloged);
        let names: BTreeSet<&str> = CHECKS.iter().map(|c| c.name).collect();
        assert_eq!(names.len(), CHECKS.len(), "check names are unique");
    }

    #[test]
    fn findings_md_documents_every_code() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/findings.md");
        let doc = std::fs::read_to_string(path).expect("docs/findings.md");
        for code in CODES {
            let heading = format!("## {} {}\n", code.code, code.name);
            assert!(doc.contains(&heading), "docs/findings.md lacks {heading:?}");
            assert!(doc.contains(&format!("**Level:** {}.", code.level)), "{}", code.code);
        }
    }

    #[test]
    fn unknown_check_names_are_rejected() {
        let err = ConfigAnalyzer::new(MeshSettings::default()).with_checks(&["gateway.Nope"]).unwrap_err();
        assert_eq!(err, UnknownCheck("gateway.Nope".to_owned()));
    }

    #[test]
    fn the_assumed_ingress_gateway_is_never_reported_and_yields_to_the_input() {
        // The assumed istio-ingressgateway Service has no DestinationRule, yet gets no ML1004.
        assert!(analyze("apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n").is_empty());
        // An input Service of the same name replaces it (and is judged like any other).
        let findings = analyze(
            "apiVersion: v1\nkind: Service\nmetadata: {name: istio-ingressgateway, namespace: istio-system}\n\
             spec: {selector: {istio: ingressgateway}, ports: [{name: http2, port: 80, targetPort: 8080}]}\n---\n\
             apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: gw, namespace: istio-system}\n\
             spec: {selector: {istio: ingressgateway}, servers: [{port: {number: 443, name: https, protocol: HTTPS}, hosts: ['*']}]}\n",
        );
        let codes: Vec<&str> = findings.iter().map(|f| f.code.as_str()).collect();
        assert!(codes.contains(&"IST0162"), "443 is not on the input Service: {findings:#?}");
    }

    #[test]
    fn kubernetes_system_namespaces_are_ignored() {
        let findings = analyze(
            "apiVersion: v1\nkind: Service\nmetadata: {name: dns, namespace: kube-system}\nspec: {ports: [{port: 9153}]}\n",
        );
        assert!(findings.is_empty(), "{findings:#?}");
    }

    #[test]
    fn findings_are_sorted_most_severe_first_and_deduplicated() {
        // Two analyzers report the same missing gateway workload; it is reported once.
        let findings = analyze(
            "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: gw, namespace: a}\n\
             spec: {selector: {app: none}}\n---\n\
             apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: vs, namespace: a}\n\
             spec: {hosts: [x], http: [{route: [{destination: {host: x}}]}]}\n",
        );
        let summary: Vec<(&str, &str)> = findings.iter().map(|f| (f.code.as_str(), f.resource.as_str())).collect();
        assert_eq!(
            summary,
            [("IST0101", "Gateway a/gw"), ("IST0101", "VirtualService a/vs"), ("ML1001", "VirtualService a/vs")]
        );
    }

    #[test]
    fn odd_but_loadable_input_never_panics() {
        for yaml in [
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: v}\nspec: {http: [{route: [{}, {}]}], tcp: [{}], tls: [{match: [{}, {}]}]}\n",
            "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: d}\nspec: {host: '*', subsets: [{name: ''}], trafficPolicy: {portLevelSettings: [{}]}}\n",
            "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: g}\nspec: {servers: [{hosts: ['/', '*/', './']}, {tls: {credentialName: '/'}}]}\n",
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: v}\nspec: {gateways: ['/', '.', 'a.'], hosts: ['*'], http: [{retries: {attempts: 2147483647, perTryTimeout: 2562047h}, timeout: 1ns, route: [{destination: {host: ''}}]}]}\n",
            "apiVersion: v1\nkind: Service\nmetadata: {name: s, annotations: {networking.istio.io/exportTo: ','}}\nspec: {ports: [{port: 0, targetPort: -1}]}\n",
            "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: p}\nspec: {rules: [{from: [{source: {namespaces: ['', '**']}}]}]}\n",
        ] {
            let _ = analyze(yaml);
        }
    }
}
