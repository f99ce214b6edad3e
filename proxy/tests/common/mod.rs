//! Shared helpers for the proxy's integration tests: in-process hyper backends on 127.0.0.1:0, a small
//! HTTP client (plain, h2c, TLS), temp config files and access-log readers.
#![allow(dead_code)] // each test binary uses a different subset

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use meshlens_proxy::{AccessLogFormat, AccessLogTarget, CommonOptions};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};

pub const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/istio-samples");

/// What a backend saw.
#[derive(Debug, Clone)]
pub struct Seen {
    pub version: http::Version,
    pub method: String,
    pub path: String,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

pub type Handler = Arc<dyn Fn(&Seen) -> (u16, String) + Send + Sync>;

/// An in-process HTTP/1.1 + h2c backend.
pub struct Backend {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    pub count: Arc<AtomicUsize>,
    /// Connections accepted.
    pub connections: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
    _inner: Option<Box<Backend>>,
}

impl Backend {
    pub async fn start(name: &'static str) -> Backend {
        Backend::with(Arc::new(move |_| (200, name.to_owned())), Duration::ZERO).await
    }

    pub async fn with(handler: Handler, delay: Duration) -> Backend {
        Backend::on(TcpListener::bind("127.0.0.1:0").await.unwrap(), handler, delay).await
    }

    /// A backend that terminates TLS with `cert`/`key` (PEM) before speaking HTTP.
    pub async fn tls(name: &'static str, cert_pem: &str, key_pem: &str) -> Backend {
        use rustls::pki_types::pem::PemObject;
        let chain = meshlens_proxy::tls::pem_certs(cert_pem.as_bytes()).unwrap();
        let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).unwrap();
        let mut config = rustls::ServerConfig::builder_with_provider(meshlens_proxy::tls::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        // Terminate TLS on a public port and relay to a plain backend on a private one.
        let plain = Backend::start(name).await;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let inner = plain.addr;
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(mut tls) = acceptor.accept(stream).await else { return };
                    let Ok(mut upstream) = TcpStream::connect(inner).await else { return };
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut upstream).await;
                });
            }
        });
        Backend {
            addr,
            seen: plain.seen.clone(),
            count: plain.count.clone(),
            connections: plain.connections.clone(),
            task,
            _inner: Some(Box::new(plain)),
        }
    }

    pub async fn on(listener: TcpListener, handler: Handler, delay: Duration) -> Backend {
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let count = Arc::new(AtomicUsize::new(0));
        let connections = Arc::new(AtomicUsize::new(0));
        let (seen2, count2, connections2) = (seen.clone(), count.clone(), connections.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                connections2.fetch_add(1, Ordering::SeqCst);
                let (handler, seen, count) = (handler.clone(), seen2.clone(), count2.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let (handler, seen, count) = (handler.clone(), seen.clone(), count.clone());
                        async move {
                            let (parts, body) = req.into_parts();
                            let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                            let request = Seen {
                                version: parts.version,
                                method: parts.method.to_string(),
                                path: parts.uri.path_and_query().map(|p| p.to_string()).unwrap_or_default(),
                                headers: parts.headers,
                                body,
                            };
                            count.fetch_add(1, Ordering::SeqCst);
                            let (status, text) = handler(&request);
                            seen.lock().unwrap().push(request);
                            if !delay.is_zero() {
                                tokio::time::sleep(delay).await;
                            }
                            let mut response = Response::new(Full::new(Bytes::from(text)));
                            *response.status_mut() = StatusCode::from_u16(status).unwrap();
                            Ok::<_, std::convert::Infallible>(response)
                        }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Backend { addr, seen, count, connections, task, _inner: None }
    }

    pub fn requests(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    pub fn hits(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A response as the test sees it.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: String,
}

/// One HTTP/1.1 request on a fresh connection to `addr`; `target` is origin-form or absolute-form.
pub async fn request(addr: SocketAddr, method: &str, host: &str, target: &str, headers: &[(&str, &str)]) -> Answer {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn);
    let mut builder = Request::builder().method(method).uri(target).header("host", host);
    for (k, v) in headers {
        builder = builder.header(*k, *v);
    }
    let response = sender.send_request(builder.body(Full::new(Bytes::new())).unwrap()).await.unwrap();
    answer(response).await
}

pub async fn get(addr: SocketAddr, host: &str, path: &str) -> Answer {
    request(addr, "GET", host, path, &[]).await
}

async fn answer<B: hyper::body::Body>(response: Response<B>) -> Answer
where
    B::Error: std::fmt::Debug,
{
    let (parts, body) = response.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    Answer { status: parts.status.as_u16(), headers: parts.headers, body: String::from_utf8_lossy(&body).into_owned() }
}

/// A pooled HTTP/1.1 client for many requests.
pub fn client() -> hyper_util::client::legacy::Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>> {
    hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build_http()
}

pub async fn send(
    client: &hyper_util::client::legacy::Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
    addr: SocketAddr,
    host: &str,
    path: &str,
) -> Answer {
    let request = Request::builder()
        .uri(format!("http://{addr}{path}"))
        .header("host", host)
        .body(Full::new(Bytes::new()))
        .unwrap();
    answer(client.request(request).await.unwrap()).await
}

/// One request over TLS with `sni`, optionally presenting a client certificate; `Err` if the handshake or
/// the request fails.
pub async fn tls_get(
    addr: SocketAddr,
    config: rustls::ClientConfig,
    sni: &str,
    host: &str,
    path: &str,
) -> Result<Answer, String> {
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let stream = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let name = rustls::pki_types::ServerName::try_from(sni.to_owned()).map_err(|e| e.to_string())?;
    let tls = connector.connect(name, stream).await.map_err(|e| e.to_string())?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let request = Request::builder().uri(path).header("host", host).body(Full::new(Bytes::new())).unwrap();
    let response = sender.send_request(request).await.map_err(|e| e.to_string())?;
    Ok(answer(response).await)
}

/// A TCP port that was free a moment ago, for configs that must name the workload's port up front. It is
/// taken from 20000-29999, below Linux's ephemeral range: a port the kernel picked for `bind(0)` could be
/// handed to a parallel test's outgoing connection before the proxy binds it. No port is given out twice
/// in one test process.
pub fn free_port() -> u16 {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    // Test processes that run at the same time start in different places.
    let base = std::process::id().wrapping_mul(7919) % 10_000;
    loop {
        let offset = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = u16::try_from(20_000 + (base + offset) % 10_000).expect("below 30000");
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// Writes `yaml` as `name` in `dir` and returns the path.
pub fn write(dir: &Path, name: &str, yaml: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, yaml).unwrap();
    path
}

pub fn common(config: Vec<PathBuf>, log: &Path, format: AccessLogFormat) -> CommonOptions {
    CommonOptions {
        config,
        access_log: AccessLogTarget::File(log.to_owned()),
        access_log_format: format,
        reload_interval: Duration::from_millis(100),
        ..Default::default()
    }
}

/// Waits until the access log has at least `n` lines and returns them.
pub async fn log_lines(path: &Path, n: usize) -> Vec<String> {
    for _ in 0..200 {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<String> = text.lines().map(str::to_owned).collect();
        if lines.len() >= n {
            return lines;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("access log {} has fewer than {n} lines: {:?}", path.display(), std::fs::read_to_string(path));
}

pub fn json_records(lines: &[String]) -> Vec<meshlens_model::RequestRecord> {
    lines.iter().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect()
}

/// Like [`request`], but a refused connection or a connection closed without a response is an `Err`.
pub async fn try_get(addr: SocketAddr, host: &str, path: &str) -> Result<Answer, String> {
    let stream = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let request = Request::builder().uri(path).header("host", host).body(Full::new(Bytes::new())).unwrap();
    let response = sender.send_request(request).await.map_err(|e| e.to_string())?;
    Ok(answer(response).await)
}

/// A rustls client config presenting `chain`/`key` that accepts any server: these tests are about what the
/// proxy accepts from clients.
pub fn mesh_client(chain_pem: &str, key_pem: &str) -> rustls::ClientConfig {
    use rustls::pki_types::pem::PemObject;
    #[derive(Debug)]
    struct AnyServer(Arc<rustls::crypto::CryptoProvider>);
    impl rustls::client::danger::ServerCertVerifier for AnyServer {
        fn verify_server_cert(
            &self,
            _: &rustls::pki_types::CertificateDer<'_>,
            _: &[rustls::pki_types::CertificateDer<'_>],
            _: &rustls::pki_types::ServerName<'_>,
            _: &[u8],
            _: rustls::pki_types::UnixTime,
        ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            m: &[u8],
            c: &rustls::pki_types::CertificateDer<'_>,
            d: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(m, c, d, &self.0.signature_verification_algorithms)
        }
        fn verify_tls13_signature(
            &self,
            m: &[u8],
            c: &rustls::pki_types::CertificateDer<'_>,
            d: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(m, c, d, &self.0.signature_verification_algorithms)
        }
        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }
    let provider = meshlens_proxy::tls::provider();
    let chain = meshlens_proxy::tls::pem_certs(chain_pem.as_bytes()).unwrap();
    let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyServer(provider)))
        .with_client_auth_cert(chain, key)
        .unwrap();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config
}

/// Writes `DIR/<name>/{tls.crt,tls.key[,ca.crt]}` for `host`, signed by a fresh CA; returns the CA PEM.
pub fn credential(dir: &std::path::Path, name: &str, host: &str, client_ca: Option<&str>) -> String {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(rcgen::DnType::CommonName, format!("{name} CA"));
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec![host.to_owned()]).unwrap().signed_by(&key, &issuer).unwrap();
    let base = dir.join(name);
    std::fs::create_dir_all(&base).unwrap();
    std::fs::write(base.join("tls.crt"), cert.pem()).unwrap();
    std::fs::write(base.join("tls.key"), key.serialize_pem()).unwrap();
    if let Some(ca) = client_ca {
        std::fs::write(base.join("ca.crt"), ca).unwrap();
    }
    ca_cert.pem()
}

pub fn client_config(ca_pem: &str, client: Option<(&str, &str)>) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    for cert in meshlens_proxy::tls::pem_certs(ca_pem.as_bytes()).unwrap() {
        roots.add(cert).unwrap();
    }
    let builder = rustls::ClientConfig::builder_with_provider(meshlens_proxy::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    match client {
        Some((cert, key)) => {
            use rustls::pki_types::pem::PemObject;
            let chain = meshlens_proxy::tls::pem_certs(cert.as_bytes()).unwrap();
            let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
            builder.with_client_auth_cert(chain, key).unwrap()
        }
        None => builder.with_no_client_auth(),
    }
}

/// A Gateway on port 80 for any host, routing everything to Service `shop/web` (one endpoint on
/// 127.0.0.1:`backend_port`) without retries, so that every request reaches the backend exactly once.
pub fn web_gateway(backend_port: u16) -> String {
    format!(
        r#"
apiVersion: v1
kind: Service
metadata: {{name: web, namespace: shop}}
spec: {{selector: {{app: web}}, ports: [{{name: http, port: 80}}]}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: web-1, namespace: shop}}
spec: {{address: 127.0.0.1, ports: {{http: {backend_port}}}, labels: {{app: web}}}}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: gw, namespace: shop}}
spec: {{servers: [{{port: {{number: 80, name: http, protocol: HTTP}}, hosts: ["*"]}}]}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: web, namespace: shop}}
spec:
  hosts: ["*"]
  gateways: [gw]
  http: [{{route: [{{destination: {{host: web}}}}], retries: {{attempts: 0}}}}]
"#
    )
}
