//! TLS for the mesh: workload identities (SPIFFE certificates read from files, or issued from a local CA
//! directory, and reloaded when they change), the verifiers that check a peer's SPIFFE ID, and gateway
//! credentials.
//!
//! Every rustls config built here reads the *current* certificate and roots at handshake time through
//! [`CertSource`], so rotating files on disk takes effect for new connections without a restart.

use crate::ca;
use meshlens_model::SpiffeId;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ParsedCertificate, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, DistinguishedName, Error as RustlsError, RootCertStore, SignatureScheme};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Instant, SystemTime};

/// The ring provider, named explicitly so that nothing depends on a process-wide default.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
    #[error(transparent)]
    Rustls(#[from] RustlsError),
    #[error(transparent)]
    Ca(#[from] ca::CaError),
    #[error("{0}")]
    Invalid(String),
}

/// Where a certificate comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertFiles {
    /// PEM chain, key and (optionally) the CA bundle that verifies peers.
    Pem { cert: PathBuf, key: PathBuf, roots: Option<PathBuf> },
    /// Issued in memory for `spiffe` from the CA in `dir` (what istiod would do for a sidecar).
    Ca { dir: PathBuf, spiffe: SpiffeId },
}

impl CertFiles {
    fn watched(&self) -> Vec<PathBuf> {
        match self {
            CertFiles::Pem { cert, key, roots } => {
                [Some(cert), Some(key), roots.as_ref()].into_iter().flatten().cloned().collect()
            }
            CertFiles::Ca { dir, .. } => vec![dir.join(ca::CA_CERT), dir.join(ca::CA_KEY)],
        }
    }
}

/// Parsed certificate material.
pub struct Material {
    pub certified: Arc<CertifiedKey>,
    pub roots: Arc<RootCertStore>,
    /// Chain verifier for client certificates, when there are roots.
    client_verifier: Option<Arc<dyn ClientCertVerifier>>,
    /// The SPIFFE ID in the leaf certificate, if any.
    pub spiffe: Option<SpiffeId>,
    issued_at: Instant,
}

impl std::fmt::Debug for Material {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Material").field("spiffe", &self.spiffe).finish_non_exhaustive()
    }
}

type Fingerprint = Vec<Option<(SystemTime, u64)>>;

/// A certificate and its roots, re-read when the files change (see [`CertSource::refresh`]).
#[derive(Debug)]
pub struct CertSource {
    files: CertFiles,
    state: RwLock<(Fingerprint, Arc<Material>)>,
}

impl CertSource {
    pub fn load(files: CertFiles) -> Result<Arc<CertSource>, TlsError> {
        let fingerprint = fingerprint(&files.watched());
        let material = Arc::new(load_material(&files)?);
        Ok(Arc::new(CertSource { files, state: RwLock::new((fingerprint, material)) }))
    }

    pub fn current(&self) -> Arc<Material> {
        self.state.read().unwrap_or_else(|e| e.into_inner()).1.clone()
    }

    /// Re-reads the files if their modification time or size changed (or an in-memory certificate is past
    /// half its life). A file caught mid-rotation fails to parse; the old material stays and the next call
    /// tries again.
    pub fn refresh(&self) -> Result<bool, TlsError> {
        let now = fingerprint(&self.files.watched());
        let (old, material) = self.state.read().unwrap_or_else(|e| e.into_inner()).clone();
        let expiring =
            matches!(self.files, CertFiles::Ca { .. }) && material.issued_at.elapsed() > ca::WORKLOAD_VALIDITY / 2;
        if now == old && !expiring {
            return Ok(false);
        }
        let fresh = Arc::new(load_material(&self.files)?);
        *self.state.write().unwrap_or_else(|e| e.into_inner()) = (now, fresh);
        Ok(true)
    }
}

fn fingerprint(paths: &[PathBuf]) -> Fingerprint {
    paths.iter().map(|p| std::fs::metadata(p).ok().and_then(|m| Some((m.modified().ok()?, m.len())))).collect()
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| TlsError::File { path: path.to_owned(), message: e.to_string() })
}

/// All certificates in a PEM buffer.
pub fn pem_certs(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Invalid(format!("bad PEM certificate: {e}")))?;
    if certs.is_empty() {
        return Err(TlsError::Invalid("no certificate in PEM".into()));
    }
    Ok(certs)
}

fn load_material(files: &CertFiles) -> Result<Material, TlsError> {
    let (chain_pem, key_pem, roots_pem) = match files {
        CertFiles::Pem { cert, key, roots } => (read(cert)?, read(key)?, roots.as_deref().map(read).transpose()?),
        CertFiles::Ca { dir, spiffe } => {
            let issued = ca::issue(dir, spiffe, ca::WORKLOAD_VALIDITY)?;
            (issued.cert_chain_pem.into_bytes(), issued.key_pem.into_bytes(), Some(issued.root_pem.into_bytes()))
        }
    };
    let with_path = |what: &str, e: TlsError| match files {
        CertFiles::Pem { cert, .. } => TlsError::Invalid(format!("{} ({what}): {e}", cert.display())),
        CertFiles::Ca { dir, .. } => TlsError::Invalid(format!("{} ({what}): {e}", dir.display())),
    };
    let chain = pem_certs(&chain_pem).map_err(|e| with_path("certificate", e))?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| with_path("key", TlsError::Invalid(format!("bad PEM key: {e}"))))?;
    let provider = provider();
    let signing = provider.key_provider.load_private_key(key)?;
    let spiffe = spiffe_id_of(&chain[0]);
    let mut roots = RootCertStore::empty();
    if let Some(pem) = roots_pem {
        for cert in pem_certs(&pem).map_err(|e| with_path("roots", e))? {
            roots.add(cert)?;
        }
    }
    let roots = Arc::new(roots);
    let client_verifier = if roots.is_empty() {
        None
    } else {
        let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider)
            .build()
            .map_err(|e| TlsError::Invalid(format!("client verifier: {e}")))?;
        Some(verifier)
    };
    Ok(Material {
        certified: Arc::new(CertifiedKey::new(chain, signing)),
        roots,
        client_verifier,
        spiffe,
        issued_at: Instant::now(),
    })
}

/// The SPIFFE ID in a certificate's URI subject alternative names.
pub fn spiffe_id_of(cert: &CertificateDer<'_>) -> Option<SpiffeId> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert).ok()?;
    let san = cert.subject_alternative_name().ok()??;
    san.value.general_names.iter().find_map(|name| match name {
        x509_parser::extensions::GeneralName::URI(uri) => uri.parse().ok(),
        _ => None,
    })
}

impl ResolvesServerCert for CertSource {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current().certified.clone())
    }
}

impl rustls::client::ResolvesClientCert for CertSource {
    fn resolve(&self, _hints: &[&[u8]], _schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.current().certified.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

fn signature_checks(provider: &CryptoProvider) -> &rustls::crypto::WebPkiSupportedAlgorithms {
    &provider.signature_verification_algorithms
}

/// Verifies client certificates against the source's current roots and, for mesh traffic, requires a
/// SPIFFE ID in the mesh trust domain (Istio matches `spiffe://<trust-domain>/` on inbound).
#[derive(Debug)]
pub struct ClientVerifier {
    source: Arc<CertSource>,
    trust_domain: Option<String>,
    provider: Arc<CryptoProvider>,
}

impl ClientVerifier {
    pub fn new(source: Arc<CertSource>, trust_domain: Option<String>) -> Arc<ClientVerifier> {
        Arc::new(ClientVerifier { source, trust_domain, provider: provider() })
    }
}

impl ClientCertVerifier for ClientVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, RustlsError> {
        let material = self.source.current();
        let verifier = material
            .client_verifier
            .as_ref()
            .ok_or_else(|| RustlsError::General("no trust roots configured for client certificates".into()))?;
        verifier.verify_client_cert(end_entity, intermediates, now)?;
        if let Some(trust_domain) = &self.trust_domain {
            match spiffe_id_of(end_entity) {
                Some(id) if id.trust_domain() == trust_domain => {}
                Some(id) => {
                    return Err(RustlsError::General(format!("peer {id} is not in trust domain {trust_domain}")));
                }
                None => return Err(RustlsError::General("peer certificate has no SPIFFE ID".into())),
            }
        }
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, RustlsError> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, signature_checks(&self.provider))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, RustlsError> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, signature_checks(&self.provider))
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        signature_checks(&self.provider).supported_schemes()
    }
}

/// Verifies an upstream's certificate chain against the mesh roots and its SPIFFE ID against the service
/// accounts expected behind the destination (Istio's `subjectAltNames` for ISTIO_MUTUAL). Server names are
/// not checked: workload certificates carry no DNS names.
#[derive(Debug)]
pub struct SpiffeServerVerifier {
    source: Arc<CertSource>,
    expected: Vec<SpiffeId>,
    provider: Arc<CryptoProvider>,
}

impl SpiffeServerVerifier {
    pub fn new(source: Arc<CertSource>, expected: Vec<SpiffeId>) -> Arc<SpiffeServerVerifier> {
        Arc::new(SpiffeServerVerifier { source, expected, provider: provider() })
    }
}

impl ServerCertVerifier for SpiffeServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, RustlsError> {
        let material = self.source.current();
        let cert = ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &cert,
            &material.roots,
            intermediates,
            now,
            signature_checks(&self.provider).all,
        )?;
        let id = spiffe_id_of(end_entity)
            .ok_or_else(|| RustlsError::General("upstream certificate has no SPIFFE ID".into()))?;
        if !self.expected.is_empty() && !self.expected.contains(&id) {
            let expected: Vec<String> = self.expected.iter().map(ToString::to_string).collect();
            return Err(RustlsError::General(format!(
                "upstream SPIFFE ID {id} is not the expected {}",
                expected.join(" or ")
            )));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, RustlsError> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, signature_checks(&self.provider))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, RustlsError> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, signature_checks(&self.provider))
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        signature_checks(&self.provider).supported_schemes()
    }
}

/// ALPN ids, most preferred first.
pub fn alpn(http2: bool) -> Vec<Vec<u8>> {
    if http2 { vec![b"h2".to_vec(), b"http/1.1".to_vec()] } else { vec![b"http/1.1".to_vec()] }
}

/// A client config that presents the workload identity and accepts only `expected` upstream identities.
pub fn mesh_client_config(
    identity: &Arc<CertSource>,
    expected: Vec<SpiffeId>,
    http2: bool,
) -> Result<rustls::ClientConfig, TlsError> {
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(SpiffeServerVerifier::new(identity.clone(), expected))
        .with_client_cert_resolver(identity.clone());
    config.alpn_protocols = alpn(http2);
    Ok(config)
}

/// A client config for DestinationRule `SIMPLE`/`MUTUAL` TLS: standard WebPKI verification against
/// `ca_certificates` and, for `MUTUAL`, a client certificate.
pub fn simple_client_config(
    ca_certificates: &Path,
    client: Option<Arc<CertSource>>,
    http2: bool,
) -> Result<rustls::ClientConfig, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in pem_certs(&read(ca_certificates)?)? {
        roots.add(cert)?;
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots);
    let mut config = match client {
        Some(source) => builder.with_client_cert_resolver(source),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn(http2);
    Ok(config)
}

/// A server config presenting `cert`; with `client_verifier` it requires client certificates.
pub fn server_config(
    cert: Arc<CertSource>,
    client_verifier: Option<Arc<ClientVerifier>>,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let builder = rustls::ServerConfig::builder_with_provider(provider()).with_safe_default_protocol_versions()?;
    let mut config = match client_verifier {
        Some(verifier) => builder.with_client_cert_verifier(verifier).with_cert_resolver(cert),
        None => builder.with_no_client_auth().with_cert_resolver(cert),
    };
    config.alpn_protocols = alpn(true);
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotated_files_are_picked_up() {
        let ca_dir = tempfile::tempdir().unwrap();
        let out = tempfile::tempdir().unwrap();
        ca::init(ca_dir.path(), false).unwrap();
        let a: SpiffeId = "spiffe://cluster.local/ns/default/sa/a".parse().unwrap();
        let b: SpiffeId = "spiffe://cluster.local/ns/default/sa/b".parse().unwrap();
        ca::write_issued(out.path(), &ca::issue(ca_dir.path(), &a, ca::WORKLOAD_VALIDITY).unwrap()).unwrap();
        let files = CertFiles::Pem {
            cert: out.path().join(ca::CERT_CHAIN),
            key: out.path().join(ca::KEY),
            roots: Some(out.path().join(ca::ROOT_CERT)),
        };
        let source = CertSource::load(files).unwrap();
        assert_eq!(source.current().spiffe.as_ref(), Some(&a));
        assert!(!source.refresh().unwrap());
        // Same-second rewrites still differ in size or mtime granularity; wait to be sure the mtime moves.
        std::thread::sleep(std::time::Duration::from_millis(20));
        ca::write_issued(out.path(), &ca::issue(ca_dir.path(), &b, ca::WORKLOAD_VALIDITY).unwrap()).unwrap();
        assert!(source.refresh().unwrap());
        assert_eq!(source.current().spiffe.as_ref(), Some(&b));
    }

    #[test]
    fn istio_sni_is_a_valid_server_name() {
        assert!(ServerName::try_from("outbound_.9080_.v1_.reviews.default.svc.cluster.local").is_ok());
        assert!(ServerName::try_from("outbound_.9080_._.reviews.default.svc.cluster.local").is_ok());
    }
}
