//! Envoy and Istio naming conventions that carry routing facts: cluster names and Istio's mTLS SNI.
//!
//! - Outbound cluster: `outbound|9080|v1|reviews.default.svc.cluster.local` (port, subset, service FQDN).
//! - Inbound cluster: `inbound|8000||` or `inbound|8000|http|httpbin.default.svc.cluster.local`
//!   (port, port name, service FQDN — the last two may be empty).
//! - SNI an Istio client sidecar sends when it originates mTLS:
//!   `outbound_.9080_._.reviews.default.svc.cluster.local` (Istio writes `outbound_.PORT_.SUBSET_.HOST`, so an
//!   empty subset shows as `_._.`).

use std::fmt;
use std::str::FromStr;

/// Which side of the proxy a cluster serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClusterDirection {
    Inbound,
    Outbound,
}

/// A parsed Istio cluster name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClusterName {
    pub direction: ClusterDirection,
    pub port: u16,
    /// Outbound: the DestinationRule subset. Inbound: the Service port name (older Istio versions).
    pub subset: Option<String>,
    /// Service FQDN; absent for `inbound|8000||`.
    pub host: Option<String>,
}

/// Why a string is not an Istio cluster name or SNI.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("{0:?} is not an Istio cluster name (expected inbound|PORT|SUBSET|HOST or outbound|PORT|SUBSET|HOST)")]
    Cluster(String),
    #[error("{0:?} is not an Istio mTLS SNI (expected outbound_.PORT_.SUBSET_.HOST)")]
    Sni(String),
}

fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_owned())
}

fn parse_port(s: &str) -> Option<u16> {
    // `u16::from_str` accepts a leading '+', which Envoy never writes.
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

impl FromStr for ClusterName {
    type Err = NameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || NameError::Cluster(s.to_owned());
        let mut parts = s.split('|');
        let (Some(dir), Some(port), Some(subset), Some(host), None) =
            (parts.next(), parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(err());
        };
        let direction = match dir {
            "inbound" => ClusterDirection::Inbound,
            "outbound" => ClusterDirection::Outbound,
            _ => return Err(err()),
        };
        let port = parse_port(port).ok_or_else(err)?;
        if direction == ClusterDirection::Outbound && host.is_empty() {
            return Err(err());
        }
        Ok(Self { direction, port, subset: non_empty(subset), host: non_empty(host) })
    }
}

impl fmt::Display for ClusterName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let dir = match self.direction {
            ClusterDirection::Inbound => "inbound",
            ClusterDirection::Outbound => "outbound",
        };
        write!(f, "{dir}|{}|{}|{}", self.port, self.subset.as_deref().unwrap_or(""), self.host.as_deref().unwrap_or(""))
    }
}

/// A parsed Istio mTLS SNI: the destination a client sidecar asked for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IstioSni {
    pub port: u16,
    pub subset: Option<String>,
    pub host: String,
}

impl FromStr for IstioSni {
    type Err = NameError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || NameError::Sni(s.to_owned());
        let rest = s.strip_prefix("outbound_.").ok_or_else(err)?;
        let (port, rest) = rest.split_once("_.").ok_or_else(err)?;
        let port = parse_port(port).ok_or_else(err)?;
        let (subset, host) = rest.split_once("_.").ok_or_else(err)?;
        if host.is_empty() {
            return Err(err());
        }
        Ok(Self { port, subset: non_empty(subset), host: host.to_owned() })
    }
}

impl fmt::Display for IstioSni {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "outbound_.{}_.{}_.{}", self.port, self.subset.as_deref().unwrap_or(""), self.host)
    }
}

/// Splits a Kubernetes service FQDN `name.namespace.svc.<domain>` into name and namespace.
pub fn service_fqdn_parts(fqdn: &str) -> Option<(&str, &str)> {
    // Byte splits rather than `splitn`: the proxy calls this for every request it counts.
    let (name, rest) = split_ascii(fqdn, b'.')?;
    let (namespace, rest) = split_ascii(rest, b'.')?;
    let svc = split_ascii(rest, b'.').map_or(rest, |(svc, _)| svc);
    (!name.is_empty() && !namespace.is_empty() && svc == "svc").then_some((name, namespace))
}

/// `s.split_once(byte)` around the first `byte` (ASCII), without the generic char searcher, which costs
/// more than the scan on the short strings of the proxy's request path (`memchr` compares 16 or 32 bytes
/// at a time where a plain loop takes one).
pub fn split_ascii(s: &str, byte: u8) -> Option<(&str, &str)> {
    debug_assert!(byte.is_ascii());
    // An ASCII byte never occurs inside a multi-byte character, so both sides are whole characters.
    let at = memchr::memchr(byte, s.as_bytes())?;
    Some((&s[..at], &s[at + 1..]))
}

/// `s.rsplit_once(byte)` around the last `byte` (ASCII); see [`split_ascii`].
pub fn rsplit_ascii(s: &str, byte: u8) -> Option<(&str, &str)> {
    debug_assert!(byte.is_ascii());
    let at = memchr::memrchr(byte, s.as_bytes())?;
    Some((&s[..at], &s[at + 1..]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_outbound_cluster() {
        let c: ClusterName = "outbound|9080|v1|reviews.default.svc.cluster.local".parse().unwrap();
        assert_eq!(c.direction, ClusterDirection::Outbound);
        assert_eq!(c.port, 9080);
        assert_eq!(c.subset.as_deref(), Some("v1"));
        assert_eq!(c.host.as_deref(), Some("reviews.default.svc.cluster.local"));
    }

    #[test]
    fn parses_inbound_clusters_with_and_without_host() {
        let c: ClusterName = "inbound|8000||".parse().unwrap();
        assert_eq!((c.direction, c.port, c.subset, c.host), (ClusterDirection::Inbound, 8000, None, None));
        let c: ClusterName = "inbound|8000|http|httpbin.default.svc.cluster.local".parse().unwrap();
        assert_eq!(c.subset.as_deref(), Some("http"));
        assert_eq!(c.host.as_deref(), Some("httpbin.default.svc.cluster.local"));
    }

    #[test]
    fn rejects_malformed_cluster_names() {
        for bad in [
            "",
            "-",
            "PassthroughCluster",
            "BlackHoleCluster",
            "outbound|9080|v1",
            "outbound|9080|v1|host|extra",
            "outbound|99999||reviews",
            "outbound|+80||reviews",
            "outbound|80||",
            "sideways|80||reviews",
        ] {
            assert!(bad.parse::<ClusterName>().is_err(), "{bad:?} should not parse");
        }
    }

    #[test]
    fn parses_istio_sni() {
        let sni: IstioSni = "outbound_.8000_._.httpbin.default.svc.cluster.local".parse().unwrap();
        assert_eq!(sni, IstioSni { port: 8000, subset: None, host: "httpbin.default.svc.cluster.local".into() });
        let sni: IstioSni = "outbound_.9080_.v2_.reviews.default.svc.cluster.local".parse().unwrap();
        assert_eq!(sni.subset.as_deref(), Some("v2"));
    }

    #[test]
    fn rejects_malformed_sni() {
        for bad in ["", "httpbin.default.svc.cluster.local", "outbound_.x_._.h", "outbound_.80_._.", "outbound_.80"] {
            assert!(bad.parse::<IstioSni>().is_err(), "{bad:?} should not parse");
        }
    }

    #[test]
    fn splits_service_fqdn() {
        assert_eq!(service_fqdn_parts("reviews.default.svc.cluster.local"), Some(("reviews", "default")));
        assert_eq!(service_fqdn_parts("www.google.com"), None);
        assert_eq!(service_fqdn_parts("reviews"), None);
        assert_eq!(service_fqdn_parts("reviews.default.svc"), Some(("reviews", "default")));
        for not_a_service in ["reviews.default", "reviews.default.svcx", ".default.svc", "reviews..svc.cluster.local"] {
            assert_eq!(service_fqdn_parts(not_a_service), None, "{not_a_service}");
        }
    }

    proptest! {
        #[test]
        fn cluster_names_round_trip(
            outbound in any::<bool>(), port in any::<u16>(),
            subset in proptest::option::of("[a-z0-9-]{1,10}"), host in "[a-z0-9-]{1,10}(\\.[a-z0-9-]{1,10}){0,4}",
        ) {
            let direction = if outbound { ClusterDirection::Outbound } else { ClusterDirection::Inbound };
            let name = ClusterName { direction, port, subset, host: Some(host) };
            prop_assert_eq!(name.to_string().parse::<ClusterName>().unwrap(), name);
        }

        #[test]
        fn sni_round_trips(port in any::<u16>(), subset in proptest::option::of("[a-z0-9-]{1,10}"),
                           host in "[a-z0-9-]{1,10}(\\.[a-z0-9-]{1,10}){0,4}") {
            let sni = IstioSni { port, subset, host };
            prop_assert_eq!(sni.to_string().parse::<IstioSni>().unwrap(), sni);
        }

        #[test]
        fn parsers_never_panic(s in "\\PC*") {
            let _ = s.parse::<ClusterName>();
            let _ = s.parse::<IstioSni>();
            let _ = service_fqdn_parts(&s);
        }

        #[test]
        fn ascii_splits_agree_with_str_splits(s in "[a-z.:@é€]{0,12}", byte in proptest::sample::select(vec![b'.', b':', b'@'])) {
            prop_assert_eq!(split_ascii(&s, byte), s.split_once(char::from(byte)));
            prop_assert_eq!(rsplit_ascii(&s, byte), s.rsplit_once(char::from(byte)));
        }
    }
}
