//! The finding codes of the traffic analyses (`ML2xxx`): what was observed to contradict, or to be missing
//! from, the configuration. `docs/findings.md` documents each with the same texts.

use crate::Level;
use crate::config::Code;

macro_rules! traffic_codes {
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
        /// Every traffic code, in code order.
        pub const CODES: &[Code] = &[$($id),*];
    };
}

traffic_codes! {
    ML2001 = "ML2001" "StrictMtlsViolated" Error,
        template: "%s accepted %d plaintext requests although PeerAuthentication requires STRICT mTLS there; they came from %s.",
        description: "The destination's sidecar logged plaintext requests (inbound, no Istio SNI) while the \
            loaded configuration makes its PeerAuthentication STRICT. A STRICT sidecar rejects plaintext, so \
            the policy is not in effect where the traffic arrived: it is not applied, is overridden at port \
            level, or the workload runs without a sidecar.",
        fix: "Apply the PeerAuthentication (check `kubectl get peerauthentication -A`), remove port-level \
            overrides, and make sure the workload has a sidecar; then move the plaintext clients into the mesh.";
    ML2002 = "ML2002" "PermissiveMtlsWithPlaintext" Warning,
        template: "%s (PeerAuthentication PERMISSIVE) accepted %d plaintext requests from %s.",
        description: "A destination whose PeerAuthentication is PERMISSIVE received plaintext. The sources \
            are named (from the pod IP of the peer when the client has no sidecar log) so that they can be \
            moved into the mesh before the policy is tightened.",
        fix: "Inject sidecars into the named clients (or route them through a gateway), then set \
            `mtls.mode: STRICT`.";
    ML2003 = "ML2003" "ReadyForStrictMtls" Info,
        template: "Namespace %s received %d requests in the window, all over mutual TLS, but its effective PeerAuthentication mode is PERMISSIVE.",
        description: "Every request observed into the namespace was mutually authenticated, over at least \
            the configured minimum number of requests (default 100), while its workloads accept plaintext. \
            Tightening to STRICT would not have broken any of the observed traffic.",
        fix: "Set a namespace-wide PeerAuthentication with `mtls.mode: STRICT` (and keep watching for ML2001).";
    ML2004 = "ML2004" "UnusedRoute" Info,
        template: "HTTP route %s received no requests in the window while its host received %d.",
        description: "A VirtualService HTTP route (or Ingress rule) matched no request in the window although \
            other requests to the same host were observed, so the logs cover the host. The route is dead \
            configuration or its match is wrong.",
        fix: "Delete the route, or fix its match (compare with the paths and methods in `routes.unmatched`).";
    ML2005 = "ML2005" "NoRouteTraffic" Warning,
        template: "%d requests to %s got no route (NR) from %s.",
        description: "Proxies answered requests with response flag NR: no route of the listener matched the \
            host, path or method, so the client got 404 without reaching a service.",
        fix: "Add a route (VirtualService `http` match or Ingress rule) for the requests, or fix the client's \
            host or path.";
    ML2006 = "ML2006" "TrafficSplitDrift" Warning,
        template: "HTTP route %s splits %s, but %d requests were split %s (chi-square p = %s).",
        description: "The observed distribution of a weighted route over its destinations differs from the \
            configured weights beyond chance (chi-square goodness-of-fit, p < 0.01 with at least 5 expected \
            requests per destination). The configuration in effect is not the one loaded, sticky sessions or \
            consistent hashing override the split, or a subset has no healthy endpoints.",
        fix: "Compare the applied VirtualService with the loaded one, check the subsets' endpoints, and \
            check for consistent-hash load balancing on the DestinationRule.";
    ML2007 = "ML2007" "TimeoutsWithoutRouteTimeout" Warning,
        template: "%s: %d requests timed out (UT or 504) in the window and no route to it sets a timeout.",
        description: "Callers saw timeouts from the service (504s, or Envoy's UT flag) while no VirtualService \
            route sets `timeout`, so each caller waits for whatever layer gives up first.",
        fix: "Set a route `timeout` from the service's latency (see the timeout recommendation for a value \
            computed from the observed p99.9).";
    ML2008 = "ML2008" "RetriesExhausted" Warning,
        template: "%s: %d requests failed after exhausting their retries (URX).",
        description: "Envoy's retry limit was reached (URX): the failures were not transient enough for the \
            configured retries, which only multiplied the load on the failing service.",
        fix: "Find the cause of the failures; retry only on conditions that are transient (`connect-failure`, \
            `refused-stream`, `reset`), and add outlier detection so that failing endpoints are ejected.";
    ML2009 = "ML2009" "CircuitBreakerOverflow" Warning,
        template: "%s: %d requests were rejected by connection-pool limits (UO).",
        description: "Envoy rejected requests because the connection pool or pending-request limit was reached \
            (UO, 503). The limits shed load as intended, but callers saw errors.",
        fix: "Check the `connectionPool` limits of the host's DestinationRule against the observed concurrency; \
            raise them if the service has capacity, otherwise scale the service.";
    ML2010 = "ML2010" "ConnectionFailuresWithoutOutlierDetection" Warning,
        template: "%s: %d requests failed to connect or lost their connection (UF/UC) and no outlier detection is configured.",
        description: "Upstream connection failures (UF) or terminations (UC) were observed for a service \
            without `outlierDetection`, so endpoints that keep failing stay in load balancing.",
        fix: "Add `trafficPolicy.outlierDetection` to the host's DestinationRule (see the outlier-detection \
            recommendation).";
    ML2011 = "ML2011" "RetryAmplification" Warning,
        template: "Retries multiply along %s: up to %d tries reach %s for one request to %s.",
        description: "Two or more services on an observed call chain each retry their callee, so tries \
            multiply: (attempts₁ + 1) × (attempts₂ + 1) × ... An overloaded service at the bottom receives a \
            multiple of the load its callers intended.",
        fix: "Retry at one layer only (usually the one nearest the caller), or give the inner routes \
            `retries.attempts: 0`.";
    ML2012 = "ML2012" "NonIdempotentRequestsRetried" Warning,
        template: "%s: %d %s requests were received more than once (same x-request-id), retried by route %s on %s.",
        description: "The destination logged the same non-idempotent request (POST/PATCH) several times: the \
            route's retry policy retries on conditions that occur after the upstream received the request, \
            so it may have been applied twice.",
        fix: "Retry POST/PATCH only on `connect-failure,refused-stream,reset-before-request`, or make the \
            handler idempotent (idempotency key).";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn findings_md_documents_every_traffic_code() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/findings.md");
        let doc = std::fs::read_to_string(path).expect("docs/findings.md");
        for code in CODES {
            let heading = format!("## {} {}\n", code.code, code.name);
            assert!(doc.contains(&heading), "docs/findings.md lacks {heading:?}");
            let message = format!("**Message:** `{}`", code.template);
            assert!(doc.contains(&message), "docs/findings.md has another message for {}", code.code);
        }
        let mut ids: Vec<&str> = CODES.iter().map(|c| c.code).collect();
        ids.dedup();
        assert_eq!(ids.len(), CODES.len(), "codes are unique");
    }
}
