//! The catalog of finding codes: istioctl's `IST` codes that meshlens reproduces and meshlens' own `ML`
//! codes, each with its level, what it means and how to fix it. `docs/findings.md` is written from the
//! same texts.

use crate::Level;

/// One finding code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Code {
    pub code: &'static str,
    /// istioctl's message name (`ReferencedResourceNotFound`), or meshlens' own for `ML` codes.
    pub name: &'static str,
    pub level: Level,
    /// The message template, with istioctl's `%s`/`%v` placeholders for `IST` codes.
    pub template: &'static str,
    pub description: &'static str,
    pub fix: &'static str,
}

macro_rules! codes {
    ($($id:ident = $code:literal $name:literal $level:ident,
        template: $template:literal,
        description: $description:literal,
        fix: $fix:literal;)*) => {
        $(pub const $id: Code = Code {
            code: $code,
            name: $name,
            level: Level::$level,
            template: $template,
            description: $description,
            fix: $fix,
        };)*
        /// Every code, in code order.
        pub const CODES: &[Code] = &[$($id),*];
    };
}

codes! {
    IST0101 = "IST0101" "ReferencedResourceNotFound" Error,
        template: "Referenced %s not found: %q",
        description: "A resource refers to something that does not exist: a destination host, host:port, \
            DestinationRule subset, Gateway, gateway workload (selector), TLS credential Secret, Sidecar \
            workload, or an AuthorizationPolicy source namespace.",
        fix: "Create the referenced object or correct the reference (names are namespace-relative; use \
            the FQDN or `namespace/name` for other namespaces).";
    IST0109 = "IST0109" "ConflictingMeshGatewayVirtualServiceHosts" Error,
        template: "The VirtualServices %s associated with mesh gateway define the same host %s which can lead to undefined behavior. This can be fixed by merging the conflicting VirtualServices into a single resource.",
        description: "Several VirtualServices bound to the `mesh` gateway (sidecars) define the same host \
            and are visible in the same namespace; which one wins is undefined.",
        fix: "Merge the VirtualServices into one, or restrict their `exportTo` so that they never meet.";
    IST0110 = "IST0110" "ConflictingSidecarWorkloadSelectors" Error,
        template: "The Sidecars %v in namespace %q select the same workload pod %q, which can lead to undefined behavior.",
        description: "More than one Sidecar resource selects the same workload.",
        fix: "Make the `workloadSelector`s disjoint, or merge the Sidecars.";
    IST0111 = "IST0111" "MultipleSidecarsWithoutWorkloadSelectors" Error,
        template: "The Sidecars %v in namespace %q have no workload selector, which can lead to undefined behavior.",
        description: "More than one Sidecar resource in a namespace has no workload selector.",
        fix: "Keep one namespace-wide Sidecar and give the others a `workloadSelector`.";
    IST0112 = "IST0112" "VirtualServiceDestinationPortSelectorRequired" Error,
        template: "This VirtualService routes to a service %q that exposes multiple ports %v. Specifying a port in the destination is required to disambiguate.",
        description: "A route destination names a service with several ports but no `port`.",
        fix: "Add `destination.port.number`.";
    IST0116 = "IST0116" "DeploymentAssociatedToMultipleServices" Warning,
        template: "This deployment %s is associated with multiple services using port %d but different protocols: %v",
        description: "The pods of an injected Deployment are selected by several Services that use the same \
            port with different protocols; the sidecar can only serve one.",
        fix: "Use one protocol per port across the Services that select the Deployment.";
    IST0118 = "IST0118" "PortNameIsNotUnderNamingConvention" Info,
        template: "Port name %s (port: %d, targetPort: %s) doesn't follow the naming convention of Istio port.",
        description: "A Service port's name (or appProtocol) does not declare a protocol, so Istio falls back \
            to protocol sniffing.",
        fix: "Name the port `<protocol>[-<suffix>]` (e.g. `http-api`, `grpc`, `tcp-db`) or set `appProtocol`.";
    IST0127 = "IST0127" "NoMatchingWorkloadsFound" Warning,
        template: "No matching workloads for this resource with the following labels: %s",
        description: "An AuthorizationPolicy selects no workload (or a namespace-wide one sits in a \
            namespace without workloads).",
        fix: "Fix the selector labels or the namespace, or delete the policy.";
    IST0128 = "IST0128" "NoServerCertificateVerificationDestinationLevel" Warning,
        template: "DestinationRule %s in namespace %s has TLS mode set to %s but no caCertificates are set to validate server identity for host: %s",
        description: "A DestinationRule originates TLS (SIMPLE/MUTUAL) without `caCertificates`, so the \
            server certificate is not verified.",
        fix: "Set `trafficPolicy.tls.caCertificates` (or a `credentialName` with a CA, with a workloadSelector).";
    IST0129 = "IST0129" "NoServerCertificateVerificationPortLevel" Warning,
        template: "DestinationRule %s in namespace %s has TLS mode set to %s but no caCertificates are set to validate server identity for host: %s at port %s",
        description: "As IST0128, for a port-level TLS setting.",
        fix: "Set `caCertificates` in the port-level `tls` block.";
    IST0130 = "IST0130" "VirtualServiceUnreachableRule" Warning,
        template: "VirtualService rule %v not used (%s).",
        description: "An HTTP/TCP/TLS rule can never match: an earlier rule matches everything, or every \
            one of its matches is used by earlier rules.",
        fix: "Reorder the rules (specific before general) or delete the unreachable one.";
    IST0131 = "IST0131" "VirtualServiceIneffectiveMatch" Info,
        template: "VirtualService rule %v match %v is not used (duplicate/overlapping match in rule %v).",
        description: "A match duplicates, or is covered by, a match of an earlier rule.",
        fix: "Delete the match or move its rule before the one that covers it.";
    IST0132 = "IST0132" "VirtualServiceHostNotFoundInGateway" Warning,
        template: "one or more host %v defined in VirtualService %s not found in Gateway %s.",
        description: "None of a VirtualService's hosts is served by a Gateway it binds to.",
        fix: "Add the host to a server of the Gateway (mind `namespace/host` scoping) or fix the VirtualService hosts.";
    IST0137 = "IST0137" "DeploymentConflictingPorts" Warning,
        template: "This deployment %s is associated with multiple services %v using targetPort %q but different ports: %v.",
        description: "Services selecting the same injected Deployment map different ports to one targetPort.",
        fix: "Use the same service port for a given targetPort in every Service selecting the Deployment.";
    IST0138 = "IST0138" "GatewayDuplicateCertificate" Warning,
        template: "Duplicate certificate in multiple gateways %v may cause 404s if clients re-use HTTP2 connections.",
        description: "Gateways on the same workloads use the same certificate; HTTP/2 connection reuse across \
            their hosts makes the gateway answer 404.",
        fix: "Give each Gateway its own certificate, or merge the servers into one Gateway.";
    IST0140 = "IST0140" "IngressRouteRulesNotAffected" Warning,
        template: "Subset in virtual service %s has no effect on ingress gateway %s requests",
        description: "A gateway-bound VirtualService routes a host without a subset while a VirtualService \
            splits that host by subset; the split does not apply to traffic entering through the gateway.",
        fix: "Route to the subsets in the gateway-bound VirtualService too.";
    IST0145 = "IST0145" "ConflictingGateways" Error,
        template: "Conflict with gateways %s (workload selector %s, port %s, hosts %v).",
        description: "Gateways on the same workloads declare the same port and host.",
        fix: "Merge the servers into one Gateway or make their hosts distinct.";
    IST0150 = "IST0150" "ExternalNameServiceTypeInvalidPortName" Warning,
        template: "Port name for ExternalName service is invalid. Proxy may prevent tcp named ports and unmatched traffic for ports serving TCP protocol from being forwarded correctly",
        description: "An ExternalName Service port has no protocol in its name, or is named `tcp`.",
        fix: "Name the port with its real protocol (e.g. `https`, `tls`, `http`).";
    IST0161 = "IST0161" "InvalidGatewayCredential" Error,
        template: "The credential referenced by the Gateway %s in namespace %s is invalid, which can cause the traffic not to work as expected.",
        description: "The Secret a Gateway server's `credentialName` refers to has no certificate and key \
            (`tls.crt`/`tls.key` or `cert`/`key`). meshlens sees key names only, never key material, so it \
            cannot tell a malformed certificate.",
        fix: "Store the certificate and key under `tls.crt`/`tls.key` (kubernetes.io/tls) or `cert`/`key`.";
    IST0162 = "IST0162" "GatewayPortNotDefinedOnService" Warning,
        template: "The gateway is listening on a target port (port %d) that is not defined in the Service associated with its workload instances (Pod selector %s). If you need to access the gateway port through the gateway Service, it will not be available.",
        description: "A Gateway server port is not exposed by any Service of the gateway workloads.",
        fix: "Add the port to the gateway Service, or use a port the Service exposes.";
    IST0165 = "IST0165" "ReferencedInternalGateway" Warning,
        template: "Gateway reference in VirtualService %s is to an implementation-generated internal Gateway: %s.",
        description: "A VirtualService names a Gateway that Istio generates from a Gateway API resource.",
        fix: "Reference the Gateway API resource through an HTTPRoute, or bind to a real Istio Gateway.";
    IST0167 = "IST0167" "IneffectivePolicy" Warning,
        template: "The policy has no impact: %s.",
        description: "A Sidecar applies to a namespace or workloads in ambient mode, which run no sidecar.",
        fix: "Delete the Sidecar, or move the workloads out of ambient mode.";
    IST0173 = "IST0173" "DestinationRuleSubsetNotSelectPods" Error,
        template: "The Subset %s defined in the DestinationRule does not select any pods. Which may lead to 503 UH (NoHealthyUpstream).",
        description: "A DestinationRule subset's labels match none of the workloads behind its host. meshlens \
            only decides this when the configuration contains workloads for the host.",
        fix: "Fix the subset labels or deploy the workloads they name.";
    IST0174 = "IST0174" "UnknownDestinationRuleHost" Warning,
        template: "The host %s defined in the DestinationRule does not match any services in the mesh.",
        description: "A DestinationRule's host is neither a Service nor a ServiceEntry host visible to it.",
        fix: "Correct the host (short names are relative to the DestinationRule's namespace) or create the service.";
    ML1001 = "ML1001" "RouteWithoutTimeout" Warning,
        template: "HTTP route %s to %s has no timeout: Istio sets none, so callers wait as long as the upstream takes.",
        description: "An HTTP route forwards traffic without `timeout`. Istio's default is no timeout, so a \
            hung upstream holds every caller (and its threads and connections) until the caller gives up.",
        fix: "Set `timeout` on the route (e.g. `timeout: 10s`), a little above the upstream's slowest normal \
            response. `timeout: 0s` states on purpose that there is none and silences this finding.";
    ML1002 = "ML1002" "RetryOnNonIdempotentMethod" Warning,
        template: "HTTP route %s matches %s requests and retries them on %s: a request that reached the upstream may be applied twice.",
        description: "A route whose match selects POST or PATCH retries on conditions that can happen after \
            the upstream received the request (`5xx`, `gateway-error`, `reset`, `retriable-4xx`, \
            `retriable-status-codes` or a status code, gRPC `deadline-exceeded`/`internal`). Without a \
            `retries` block Istio retries twice on `retriable-status-codes` (503), so that counts too.",
        fix: "Retry only failures where the request never reached the upstream \
            (`retryOn: connect-failure,refused-stream,reset-before-request`), set `retries.attempts: 0`, or \
            make the handler idempotent (e.g. an idempotency key).";
    ML1003 = "ML1003" "RetriesExceedRouteTimeout" Warning,
        template: "HTTP route %s allows %d retries of %s each, %s with the first try, more than its timeout %s: the last retries never run.",
        description: "The first try plus `retries.attempts` retries, each up to `perTryTimeout`, need more \
            time than the route `timeout`, which bounds all tries together. The retry budget is an illusion: \
            Envoy stops at the route timeout.",
        fix: "Raise the route `timeout` to at least (attempts + 1) × perTryTimeout, or lower `attempts` or \
            `perTryTimeout`.";
    ML1004 = "ML1004" "NoOutlierDetection" Info,
        template: "Service %s has no outlier detection: %s.",
        description: "No DestinationRule applying to the service sets `outlierDetection`, so endpoints that \
            keep failing are never ejected from load balancing.",
        fix: "Add `trafficPolicy.outlierDetection` to the host's DestinationRule, e.g. \
            `{consecutive5xxErrors: 5, interval: 10s, baseEjectionTime: 30s, maxEjectionPercent: 50}`.";
    ML1005 = "ML1005" "NoConnectionPoolLimits" Info,
        template: "Service %s has no connection-pool limits: %s.",
        description: "No DestinationRule applying to the service limits connections or pending/concurrent \
            requests (`connectionPool.tcp.maxConnections`, `http.http1MaxPendingRequests`, \
            `http.http2MaxRequests`), so a slow service can absorb unbounded load instead of shedding it.",
        fix: "Add `trafficPolicy.connectionPool` limits to the host's DestinationRule, sized from the \
            service's capacity, e.g. `{tcp: {maxConnections: 100}, http: {http1MaxPendingRequests: 100, http2MaxRequests: 1000}}`.";
    ML1006 = "ML1006" "ClientTlsConflictsWithStrictMtls" Error,
        template: "DestinationRule sets tls.mode %s for %s, but PeerAuthentication requires STRICT mTLS there: connections will be rejected.",
        description: "A DestinationRule makes clients send plaintext (DISABLE) or non-Istio TLS (SIMPLE) to \
            workloads whose PeerAuthentication is STRICT; their sidecars only accept Istio mTLS.",
        fix: "Use `tls.mode: ISTIO_MUTUAL` for in-mesh destinations, or drop the `tls` block and let auto \
            mTLS choose; DISABLE and SIMPLE are for destinations outside the mesh.";
    ML1007 = "ML1007" "PeerAuthenticationAcceptsPlaintext" Warning,
        template: "PeerAuthentication accepts plaintext: %s.",
        description: "A PeerAuthentication sets mTLS mode PERMISSIVE or DISABLE (for all or some ports), so \
            the workloads it covers accept unauthenticated, unencrypted connections.",
        fix: "Move clients to mTLS, then set `mtls.mode: STRICT`; keep PERMISSIVE only while migrating and \
            scope it to the workloads and ports that still need it.";
    ML1008 = "ML1008" "WorkloadWithoutAuthorizationPolicy" Warning,
        template: "%s is covered by no AuthorizationPolicy: every caller that can reach it is allowed.",
        description: "No ALLOW, DENY or CUSTOM AuthorizationPolicy applies to the workload (none in the root \
            namespace, none namespace-wide, none selecting its labels).",
        fix: "Add an AuthorizationPolicy that allows the workload's legitimate callers, ideally on top of a \
            namespace- or mesh-wide `allow-nothing` policy (`spec: {}`).";
    ML1009 = "ML1009" "RouteWeightsNotHundred" Warning,
        template: "%s route %s splits traffic between %d destinations with weights summing to %d, not 100%s.",
        description: "The weights of a route's destinations do not add up to 100. Istio treats them as \
            relative shares (and rejects a total of 0), so the split differs from the percentages the \
            numbers suggest.",
        fix: "Make the weights of each route add up to 100.";
}

/// The code with this identifier.
pub fn lookup(code: &str) -> Option<&'static Code> {
    CODES.iter().find(|c| c.code == code)
}
