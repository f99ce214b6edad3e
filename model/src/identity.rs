//! SPIFFE workload identities as Istio issues them: `spiffe://<trust-domain>/ns/<namespace>/sa/<sa>`.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// A validated Istio-style SPIFFE ID.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpiffeId {
    trust_domain: String,
    namespace: String,
    service_account: String,
}

/// Why a string is not an Istio SPIFFE ID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpiffeIdError {
    #[error("SPIFFE ID {0:?} does not start with \"spiffe://\"")]
    Scheme(String),
    #[error("SPIFFE ID {0:?} has an invalid trust domain (lowercase letters, digits, '.', '-', '_' only)")]
    TrustDomain(String),
    #[error("SPIFFE ID {0:?} does not have the path /ns/<namespace>/sa/<service-account>")]
    Path(String),
    #[error("SPIFFE ID {id:?} has an invalid {segment} {value:?}")]
    Segment { id: String, segment: &'static str, value: String },
}

impl SpiffeId {
    /// Builds an ID from its parts, validating each.
    pub fn new(trust_domain: &str, namespace: &str, service_account: &str) -> Result<Self, SpiffeIdError> {
        format!("spiffe://{trust_domain}/ns/{namespace}/sa/{service_account}").parse()
    }

    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    pub fn service_account(&self) -> &str {
        &self.service_account
    }

    /// Istio's principal form, without the scheme: `cluster.local/ns/default/sa/bookinfo`, as used in
    /// `AuthorizationPolicy` `principals`.
    pub fn principal(&self) -> String {
        format!("{}/ns/{}/sa/{}", self.trust_domain, self.namespace, self.service_account)
    }
}

fn is_trust_domain_char(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '-' | '_')
}

/// SPIFFE path segments: letters, digits, `.`, `-`, `_`; not `.` or `..`.
fn is_valid_segment(s: &str) -> bool {
    !s.is_empty()
        && s != "."
        && s != ".."
        && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
}

impl FromStr for SpiffeId {
    type Err = SpiffeIdError;

    fn from_str(id: &str) -> Result<Self, Self::Err> {
        let rest = id.strip_prefix("spiffe://").ok_or_else(|| SpiffeIdError::Scheme(id.to_owned()))?;
        let (trust_domain, path) = rest.split_once('/').unwrap_or((rest, ""));
        if trust_domain.is_empty() || !trust_domain.chars().all(is_trust_domain_char) {
            return Err(SpiffeIdError::TrustDomain(id.to_owned()));
        }
        let parts: Vec<&str> = path.split('/').collect();
        let [ns_key, namespace, sa_key, service_account] = parts.as_slice() else {
            return Err(SpiffeIdError::Path(id.to_owned()));
        };
        if *ns_key != "ns" || *sa_key != "sa" {
            return Err(SpiffeIdError::Path(id.to_owned()));
        }
        for (segment, value) in [("namespace", namespace), ("service account", service_account)] {
            if !is_valid_segment(value) {
                return Err(SpiffeIdError::Segment { id: id.to_owned(), segment, value: (*value).to_owned() });
            }
        }
        Ok(Self {
            trust_domain: trust_domain.to_owned(),
            namespace: (*namespace).to_owned(),
            service_account: (*service_account).to_owned(),
        })
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "spiffe://{}/ns/{}/sa/{}", self.trust_domain, self.namespace, self.service_account)
    }
}

impl Serialize for SpiffeId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for SpiffeId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_istio_ids() {
        let id: SpiffeId = "spiffe://cluster.local/ns/default/sa/bookinfo-productpage".parse().unwrap();
        assert_eq!(id.trust_domain(), "cluster.local");
        assert_eq!(id.namespace(), "default");
        assert_eq!(id.service_account(), "bookinfo-productpage");
        assert_eq!(id.principal(), "cluster.local/ns/default/sa/bookinfo-productpage");
    }

    #[test]
    fn rejects_malformed_ids_with_the_reason() {
        let cases = [
            ("http://cluster.local/ns/a/sa/b", "does not start"),
            ("spiffe://Cluster.Local/ns/a/sa/b", "trust domain"),
            ("spiffe:///ns/a/sa/b", "trust domain"),
            ("spiffe://cluster.local", "path"),
            ("spiffe://cluster.local/ns/a", "path"),
            ("spiffe://cluster.local/ns/a/sa/b/extra", "path"),
            ("spiffe://cluster.local/namespace/a/sa/b", "path"),
            ("spiffe://cluster.local/ns//sa/b", "invalid namespace"),
            ("spiffe://cluster.local/ns/a/sa/..", "invalid service account"),
            ("spiffe://cluster.local/ns/a/sa/b c", "invalid service account"),
            ("", "does not start"),
        ];
        for (input, reason) in cases {
            let err = input.parse::<SpiffeId>().unwrap_err().to_string();
            assert!(err.contains(reason), "{input:?}: {err}");
        }
    }

    proptest! {
        #[test]
        fn display_round_trips(td in "[a-z0-9][a-z0-9.-]{0,20}", ns in "[a-z0-9][a-z0-9-]{0,20}", sa in "[a-zA-Z0-9_.-]{1,20}") {
            prop_assume!(sa != "." && sa != "..");
            let id = SpiffeId::new(&td, &ns, &sa).unwrap();
            prop_assert_eq!(id.to_string().parse::<SpiffeId>().unwrap(), id);
        }

        #[test]
        fn never_panics_on_arbitrary_input(s in "\\PC*") {
            let _ = s.parse::<SpiffeId>();
        }
    }
}
