//! [`AppState`]: what every handler shares — the store, and the mesh configuration in force.

use crate::analysis::cache::AnalysisCache;
use crate::auth::AuthMode;
use crate::executor::Executor;
use crate::limits::{ApiLimits, RateLimiter};
use crate::tokens::Tokens;
use meshlens_analyzer::Finding;
use meshlens_analyzer::config::ConfigAnalyzer;
use meshlens_model::mesh::{LoadReport, MeshConfig, MeshSettings};
use meshlens_store::Store;
use serde_json::json;
use std::sync::{Arc, RwLock};

/// The mesh configuration the analyses read, as one immutable snapshot. It is replaced whole when the
/// configuration changes (files reloaded, or a watch event from the cluster), so a request sees one
/// consistent version from start to end.
#[derive(Debug, Default)]
pub struct MeshSnapshot {
    /// Everything that loaded, with what was skipped and what failed.
    pub report: LoadReport,
    /// Mesh-wide settings (root namespace, default mTLS expectations).
    pub settings: MeshSettings,
    /// `report.resources`, indexed.
    pub mesh: MeshConfig,
    /// The static checks' findings over `report`, computed once per snapshot.
    pub config_findings: Vec<Finding>,
    /// The config history version this snapshot is (`GET /api/v1/config/history`), once recorded.
    pub config_version: Option<i64>,
}

impl MeshSnapshot {
    pub fn new(report: LoadReport, settings: MeshSettings) -> Self {
        let mesh = MeshConfig::new(report.resources.clone()).with_root_namespace(&settings.root_namespace);
        let config_findings = ConfigAnalyzer::new(settings.clone()).analyze(&report);
        MeshSnapshot { report, settings, mesh, config_findings, config_version: None }
    }

    /// The same snapshot, as config history version `id`.
    pub fn with_config_version(mut self, id: i64) -> Self {
        self.config_version = Some(id);
        self
    }

    /// Counts by kind and the load errors, as `GET /api/v1/config` shows them.
    pub fn summary(&self) -> serde_json::Value {
        let counts: serde_json::Map<String, serde_json::Value> =
            self.report.counts_by_kind().into_iter().map(|(kind, n)| (kind.to_string(), json!(n))).collect();
        let errors: Vec<String> = self.report.errors.iter().map(ToString::to_string).collect();
        json!({ "resources": counts, "errors": errors, "config_version": self.config_version })
    }
}

/// Shared state of the API handlers; cheap to clone.
#[derive(Debug, Clone)]
pub struct AppState {
    pub store: Arc<Store>,
    mesh: Arc<RwLock<Arc<MeshSnapshot>>>,
    auth: AuthMode,
    limits: Arc<Limits>,
    analysis_cache: Arc<AnalysisCache>,
    executor: Arc<Executor>,
}

/// The limits in force and the rate limiter's buckets.
#[derive(Debug)]
pub struct Limits {
    pub config: ApiLimits,
    pub rate_limiter: RateLimiter,
}

impl Limits {
    fn new(config: ApiLimits) -> Self {
        Limits { rate_limiter: RateLimiter::new(config.requests_per_second, config.burst), config }
    }
}

impl AppState {
    /// The API over `store` and `mesh`, authenticating bearer tokens from the store's catalog database, with
    /// the default [`ApiLimits`].
    ///
    /// Fails only when the query executor's threads cannot be started.
    pub fn new(store: Arc<Store>, mesh: MeshSnapshot) -> std::io::Result<Self> {
        let auth = AuthMode::Tokens(Tokens::new(store.catalog().clone()));
        Ok(AppState {
            store,
            mesh: Arc::new(RwLock::new(Arc::new(mesh))),
            auth,
            limits: Arc::new(Limits::new(ApiLimits::default())),
            analysis_cache: Arc::default(),
            executor: Arc::new(Executor::for_queries()?),
        })
    }

    /// The same API without authentication: every request is an unscoped admin. `meshlens serve` allows
    /// it only on a loopback address (`--insecure-no-auth`).
    pub fn without_auth(mut self) -> Self {
        self.auth = AuthMode::Disabled;
        self
    }

    /// The same API with other limits.
    pub fn with_limits(mut self, limits: ApiLimits) -> Self {
        self.limits = Arc::new(Limits::new(limits));
        self
    }

    pub fn auth_mode(&self) -> &AuthMode {
        &self.auth
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Recent analysis results ([`crate::analysis::cache`]).
    pub fn analysis_cache(&self) -> &AnalysisCache {
        &self.analysis_cache
    }

    /// Where DataFusion work runs ([`crate::executor`]).
    pub fn executor(&self) -> &Executor {
        &self.executor
    }

    /// The configuration in force now.
    pub fn mesh(&self) -> Arc<MeshSnapshot> {
        // A poisoned lock only means a writer panicked mid-swap of an `Arc`, which cannot leave it torn.
        Arc::clone(&self.mesh.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Puts a new configuration in force.
    pub fn set_mesh(&self, mesh: MeshSnapshot) {
        *self.mesh.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(mesh);
    }
}
