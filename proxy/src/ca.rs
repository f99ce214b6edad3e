//! The mesh certificate authority behind `meshlens ca`: a self-signed root, and workload certificates whose
//! only subject alternative name is the workload's SPIFFE ID, as Istio's CA issues them.
//!
//! A CA directory holds `ca.crt` and `ca.key` (PEM). Issued certificates are written the way Istio mounts
//! them into a proxy: `cert-chain.pem`, `key.pem` and `root-cert.pem`.

use meshlens_model::SpiffeId;
use rcgen::string::Ia5String;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub const CA_CERT: &str = "ca.crt";
pub const CA_KEY: &str = "ca.key";
pub const CERT_CHAIN: &str = "cert-chain.pem";
pub const KEY: &str = "key.pem";
pub const ROOT_CERT: &str = "root-cert.pem";

/// How long a root lives: ten years, like Istio's self-signed root.
const ROOT_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// Istio's default workload certificate lifetime.
pub const WORKLOAD_VALIDITY: Duration = Duration::from_secs(24 * 3600);

#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("{0} already exists (pass --force to replace the mesh root)")]
    Exists(PathBuf),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("validity {0:?} is longer than the root's ten years")]
    Validity(Duration),
    #[error("{context}: {source}")]
    Cert { context: String, source: rcgen::Error },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CaError + '_ {
    move |source| CaError::Io { path: path.to_owned(), source }
}

fn cert_err(context: &str) -> impl FnOnce(rcgen::Error) -> CaError + '_ {
    move |source| CaError::Cert { context: context.to_owned(), source }
}

/// A workload certificate and key, with the root that verifies it.
#[derive(Debug, Clone)]
pub struct Issued {
    pub cert_chain_pem: String,
    pub key_pem: String,
    pub root_pem: String,
}

fn validity(params: &mut CertificateParams, lifetime: Duration) {
    let now = time::OffsetDateTime::now_utc();
    // Back-date a little so that peers with slightly slow clocks accept a fresh certificate.
    params.not_before = now.saturating_sub(time::Duration::minutes(5));
    params.not_after = now.saturating_add(time::Duration::try_from(lifetime).unwrap_or(time::Duration::MAX));
}

/// Creates a mesh root CA in `dir` (`ca.crt`, `ca.key` readable by the owner only).
pub fn init(dir: &Path, force: bool) -> Result<PathBuf, CaError> {
    let cert_path = dir.join(CA_CERT);
    if cert_path.exists() && !force {
        return Err(CaError::Exists(cert_path));
    }
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let key = KeyPair::generate().map_err(cert_err("generating the CA key"))?;
    let mut params = CertificateParams::default();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::OrganizationName, "meshlens");
    params.distinguished_name.push(DnType::CommonName, "meshlens mesh root CA");
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    validity(&mut params, ROOT_VALIDITY);
    let cert = params.self_signed(&key).map_err(cert_err("signing the CA certificate"))?;
    let key_path = dir.join(CA_KEY);
    write_private(&key_path, &key.serialize_pem())?;
    std::fs::write(&cert_path, cert.pem()).map_err(io(&cert_path))?;
    Ok(cert_path)
}

/// Issues a workload certificate for `spiffe` from the CA in `dir`.
pub fn issue(dir: &Path, spiffe: &SpiffeId, lifetime: Duration) -> Result<Issued, CaError> {
    if lifetime > ROOT_VALIDITY {
        return Err(CaError::Validity(lifetime));
    }
    let cert_path = dir.join(CA_CERT);
    let key_path = dir.join(CA_KEY);
    let root_pem = std::fs::read_to_string(&cert_path).map_err(io(&cert_path))?;
    let ca_key_pem = std::fs::read_to_string(&key_path).map_err(io(&key_path))?;
    let ca_key = KeyPair::from_pem(&ca_key_pem).map_err(cert_err("reading ca.key"))?;
    let issuer = Issuer::from_ca_cert_pem(&root_pem, ca_key).map_err(cert_err("reading ca.crt"))?;

    let key = KeyPair::generate().map_err(cert_err("generating the workload key"))?;
    let mut params = CertificateParams::default();
    // Istio workload certificates have an empty subject: the identity is the URI SAN alone.
    params.distinguished_name = DistinguishedName::new();
    let uri = Ia5String::try_from(spiffe.to_string()).map_err(cert_err("encoding the SPIFFE ID"))?;
    params.subject_alt_names = vec![SanType::URI(uri)];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    params.use_authority_key_identifier_extension = true;
    validity(&mut params, lifetime);
    let cert = params.signed_by(&key, &issuer).map_err(cert_err("signing the workload certificate"))?;
    Ok(Issued { cert_chain_pem: cert.pem(), key_pem: key.serialize_pem(), root_pem })
}

/// Writes an issued certificate as `cert-chain.pem`, `key.pem` and `root-cert.pem` in `out`. Each file is
/// written to a temporary name and renamed, so a proxy watching the directory never reads half a file.
pub fn write_issued(out: &Path, issued: &Issued) -> Result<(), CaError> {
    std::fs::create_dir_all(out).map_err(io(out))?;
    write_private(&out.join(KEY), &issued.key_pem)?;
    for (name, pem) in [(CERT_CHAIN, &issued.cert_chain_pem), (ROOT_CERT, &issued.root_pem)] {
        let tmp = out.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, pem).map_err(io(&tmp))?;
        let path = out.join(name);
        std::fs::rename(&tmp, &path).map_err(io(&path))?;
    }
    Ok(())
}

fn write_private(path: &Path, pem: &str) -> Result<(), CaError> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    options.mode(0o600);
    let mut file = options.open(&tmp).map_err(io(&tmp))?;
    file.write_all(pem.as_bytes()).map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_certificates_carry_only_the_spiffe_uri() {
        let dir = tempfile::tempdir().unwrap();
        init(dir.path(), false).unwrap();
        assert!(matches!(init(dir.path(), false), Err(CaError::Exists(_))));
        let id: SpiffeId = "spiffe://cluster.local/ns/default/sa/reviews".parse().unwrap();
        let issued = issue(dir.path(), &id, WORKLOAD_VALIDITY).unwrap();
        let der = crate::tls::pem_certs(issued.cert_chain_pem.as_bytes()).unwrap();
        assert_eq!(crate::tls::spiffe_id_of(&der[0]), Some(id));
        let (_, cert) = x509_parser::parse_x509_certificate(&der[0]).unwrap();
        let san = cert.subject_alternative_name().unwrap().unwrap();
        assert_eq!(san.value.general_names.len(), 1);
    }
}
