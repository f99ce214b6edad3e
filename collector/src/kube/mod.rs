//! Live mesh configuration from a Kubernetes cluster: the collector collects config as well as
//! telemetry.
//!
//! [`connect`] builds a kube client from the in-cluster service account or a kubeconfig and checks that
//! the API server answers; [`ClusterWatch::start`] lists and watches every kind of [`WATCHED_KINDS`]
//! cluster-wide with kube-runtime reflectors, as `DynamicObject`s, and publishes a [`ClusterSnapshot`]
//! whenever the configuration changed: each object goes through the same loader as files
//! ([`LoadReport::parse_str`](meshlens_model::mesh::LoadReport::parse_str), origin `kube:Kind/ns/name`), so
//! live and file configuration mean the same. Bursts of events (a rollout, a relist after `410 Gone`) are
//! debounced into one snapshot. Kinds whose API group the server does not serve (Istio not installed) are
//! reported once and skipped. What the snapshot feeds — the API's config in force, attribution, config
//! history — is wired by `meshlens serve` (src/cli/live_config.rs).

mod kinds;
mod watch;

pub use kinds::{WATCHED_KINDS, WatchedKind};
pub use watch::{ClusterSnapshot, ClusterWatch, SkippedKind, WatchOptions};

use ::kube::config::{KubeConfigOptions, Kubeconfig};
use ::kube::{Client, Config};
use std::path::PathBuf;
use std::time::Duration;

/// How to reach the API server.
#[derive(Debug, Clone, Default)]
pub struct KubeTarget {
    /// A kubeconfig file; without it, the in-cluster service account, then `$KUBECONFIG` or
    /// `~/.kube/config`.
    pub kubeconfig: Option<PathBuf>,
    /// A context of the kubeconfig other than its current one.
    pub context: Option<String>,
}

/// Why the cluster cannot be watched. Messages name the server or file and the underlying cause.
#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    #[error("cannot load the kubeconfig {}: {}", .path.display(), chain(.source))]
    Kubeconfig { path: PathBuf, source: ::kube::config::KubeconfigError },
    #[error(
        "no Kubernetes configuration: not running in a cluster, and no usable kubeconfig \
         (set --kubeconfig or $KUBECONFIG): {}", chain(.0)
    )]
    NoConfig(::kube::config::KubeconfigError),
    #[error("cannot build a Kubernetes client for {url}: {}", chain(.source))]
    Client { url: String, source: ::kube::Error },
    #[error("cannot reach the Kubernetes API server at {url}: {}", chain(.source))]
    Unreachable { url: String, source: ::kube::Error },
    #[error("listing {what} on {url} failed: {}", chain(.source))]
    List { what: String, url: String, source: ::kube::Error },
    #[error("the initial list of {what} did not complete within {}s", .timeout.as_secs())]
    InitialSync { what: String, timeout: Duration },
}

/// An error with its causes, `outer: inner: innermost`, skipping causes whose text the outer one
/// already includes (kube and hyper repeat them).
pub(crate) fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// How long to wait for the API server to accept a connection before calling it unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A client and the API server it talks to.
#[derive(Clone)]
pub struct Cluster {
    pub client: Client,
    /// The API server's URL, for messages.
    pub url: String,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster").field("url", &self.url).finish_non_exhaustive()
    }
}

/// Builds a client for `target` and checks that the API server answers (`GET /version`).
pub async fn connect(target: &KubeTarget) -> Result<Cluster, KubeError> {
    let options = KubeConfigOptions { context: target.context.clone(), ..Default::default() };
    let mut config = match &target.kubeconfig {
        Some(path) => {
            let kubeconfig =
                Kubeconfig::read_from(path).map_err(|source| KubeError::Kubeconfig { path: path.clone(), source })?;
            Config::from_custom_kubeconfig(kubeconfig, &options)
                .await
                .map_err(|source| KubeError::Kubeconfig { path: path.clone(), source })?
        }
        // A context names a kubeconfig entry, so it rules out the in-cluster configuration.
        None if target.context.is_some() => Config::from_kubeconfig(&options).await.map_err(KubeError::NoConfig)?,
        None => match Config::incluster() {
            Ok(config) => config,
            Err(_) => Config::from_kubeconfig(&options).await.map_err(KubeError::NoConfig)?,
        },
    };
    config.connect_timeout = Some(CONNECT_TIMEOUT);
    let url = config.cluster_url.to_string();
    let client = Client::try_from(config).map_err(|source| KubeError::Client { url: url.clone(), source })?;
    let version = tokio::time::timeout(CONNECT_TIMEOUT * 2, client.apiserver_version())
        .await
        .map_err(|_| KubeError::Unreachable { url: url.clone(), source: ::kube::Error::Service("timed out".into()) })?
        .map_err(|source| KubeError::Unreachable { url: url.clone(), source })?;
    tracing::info!(server = %url, version = %version.git_version, "connected to the Kubernetes API server");
    Ok(Cluster { client, url })
}
