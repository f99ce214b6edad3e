//! The mesh configuration in force for `meshlens serve`: from files (`-f`), or live from a cluster
//! (`--kube`). Every configuration put in force is recorded in the config history first, then published
//! to the API (`AppState::set_mesh`, with its version id) and to attribution (`SharedAttributor`), so a
//! record, a finding and a report all see the same configuration and can name its version.

use super::serve::attributor_for;
use anyhow::Context;
use meshlens_api::{AppState, MeshSnapshot};
use meshlens_collector::attribution::SharedAttributor;
use meshlens_collector::kube::{self, ClusterSnapshot, ClusterWatch, KubeTarget, WatchOptions};
use meshlens_model::mesh::{LoadReport, MeshSettings};
use meshlens_store::config_history::{ConfigHistory, Digests, Recorded, resource_digests};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// `serve`'s flags for a live configuration.
#[derive(Debug, Clone, clap::Args)]
pub struct KubeArgs {
    /// Watch the cluster's Namespaces, Services, Pods, EndpointSlices, Ingresses and Istio resources and
    /// keep the mesh configuration current (docs/kubernetes.md). Uses the in-cluster service account, else
    /// the kubeconfig.
    #[arg(long, conflicts_with = "paths")]
    pub kube: bool,

    /// Kubeconfig file for --kube (default: in-cluster, then $KUBECONFIG, then ~/.kube/config).
    #[arg(long, value_name = "FILE", requires = "kube")]
    pub kubeconfig: Option<PathBuf>,

    /// Kubeconfig context for --kube (default: the current context).
    #[arg(long, value_name = "NAME", requires = "kube")]
    pub kube_context: Option<String>,

    /// Start even when the API server cannot be reached, with an empty configuration, and keep trying
    /// to connect (with backoff) instead of failing start-up.
    #[arg(long, requires = "kube")]
    pub kube_optional: bool,

    /// Quiet time after a burst of cluster events before the new configuration is put in force.
    #[arg(long, value_name = "MILLISECONDS", default_value_t = 1000, requires = "kube")]
    pub kube_debounce_ms: u64,
}

impl KubeArgs {
    fn target(&self) -> KubeTarget {
        KubeTarget { kubeconfig: self.kubeconfig.clone(), context: self.kube_context.clone() }
    }

    fn watch_options(&self) -> WatchOptions {
        let debounce = Duration::from_millis(self.kube_debounce_ms);
        WatchOptions { debounce, max_delay: (debounce * 10).max(Duration::from_secs(1)), ..WatchOptions::default() }
    }
}

/// Where a new configuration goes: the history, the API, attribution.
#[derive(Clone)]
pub struct ConfigSink {
    pub app: AppState,
    pub attributor: SharedAttributor,
    pub settings: MeshSettings,
    history: Arc<ConfigHistory>,
}

impl ConfigSink {
    pub fn new(app: AppState, attributor: SharedAttributor, settings: MeshSettings) -> Self {
        let history = Arc::new(ConfigHistory::new(app.store.catalog().clone()));
        ConfigSink { app, attributor, settings, history }
    }

    /// Records `report` (summarized by `digests`) as a config version from `source` and puts it in force.
    /// A history failure is logged and the configuration still goes into force, without a version id.
    pub async fn publish(&self, source: &str, report: LoadReport, digests: &Digests) {
        let version = match self.history.record(source, digests).await {
            Ok(Recorded::New(version)) => {
                let changes = &version.changes;
                tracing::info!(
                    version = version.id,
                    source,
                    added = changes.added.len(),
                    modified = changes.modified.len(),
                    deleted = changes.deleted.len(),
                    "mesh configuration version recorded"
                );
                Some(version.id)
            }
            Ok(Recorded::Unchanged(version)) => Some(version.id),
            Err(err) => {
                tracing::error!("recording the mesh configuration version failed: {err}");
                None
            }
        };
        self.attributor.replace(attributor_for(&report));
        let mut snapshot = MeshSnapshot::new(report, self.settings.clone());
        if let Some(id) = version {
            snapshot = snapshot.with_config_version(id);
        }
        self.app.set_mesh(snapshot);
    }

    /// Puts the configuration loaded from files in force.
    pub async fn publish_files(&self, report: LoadReport) {
        let digests = resource_digests(&report.resources);
        self.publish("files", report, &digests).await;
    }

    async fn publish_cluster(&self, snapshot: &ClusterSnapshot) {
        self.publish("kube", snapshot.report.clone(), &snapshot.digests).await;
    }
}

/// Connects to the cluster and starts watching it, publishing its configuration now and on every change.
/// Fails when the API server cannot be reached, unless `--kube-optional`: then it returns at once and
/// keeps trying in the background, doubling the wait up to a minute.
pub async fn start_kube(args: &KubeArgs, sink: ConfigSink) -> anyhow::Result<()> {
    let (target, options) = (args.target(), args.watch_options());
    if !args.kube_optional {
        let watch = watch_cluster(&target, options).await.context("watching the Kubernetes cluster (--kube)")?;
        follow(watch, sink).await;
        return Ok(());
    }
    tokio::spawn(async move {
        let mut wait = Duration::from_secs(1);
        loop {
            match watch_cluster(&target, options).await {
                Ok(watch) => return follow(watch, sink).await,
                Err(err) => {
                    tracing::warn!("cannot watch the Kubernetes cluster, retrying in {}s: {err:#}", wait.as_secs());
                    eprintln!(
                        "meshlens: cannot watch the Kubernetes cluster, retrying in {}s: {err:#}",
                        wait.as_secs()
                    );
                }
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_secs(60));
        }
    });
    Ok(())
}

async fn watch_cluster(target: &KubeTarget, options: WatchOptions) -> anyhow::Result<ClusterWatch> {
    let cluster = kube::connect(target).await?;
    Ok(ClusterWatch::start(&cluster, options).await?)
}

/// Publishes the watch's first snapshot, then follows it in the background for as long as it runs.
async fn follow(mut watch: ClusterWatch, sink: ConfigSink) {
    sink.publish_cluster(&watch.current()).await;
    eprintln!("meshlens watching the Kubernetes cluster ({} kinds skipped)", watch.skipped().len());
    tokio::spawn(async move {
        while let Some(snapshot) = watch.changed().await {
            sink.publish_cluster(&snapshot).await;
        }
        tracing::warn!("the Kubernetes watch stopped; the last configuration stays in force");
    });
}
