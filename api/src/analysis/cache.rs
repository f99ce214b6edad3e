//! Recent analysis results, shared between requests.
//!
//! One dashboard view asks `/graph`, `/mtls/coverage`, `/routes`, `/resilience/gaps`, `/recommendations`
//! and `/findings` for the same window at once, and every open dashboard refreshes them; each would run
//! every analysis over the whole window again (tens of seconds over ten million records). So a result is
//! kept per window, namespace scope and configuration snapshot:
//!
//! - concurrent requests for the same key share one run (the first runs, the others wait for it);
//! - a result is fresh, and served as is, while younger than the longer of [`ApiLimits::analysis_fresh_for`]
//!   and [`REFRESH_SPACING`] times as long as it took to compute — for "the last hour" that means up to
//!   that much older than the request, which the response's `window` states exactly. The second bound
//!   keeps background refreshes of a slow analysis from occupying the query threads most of the time;
//! - an older one, up to [`ApiLimits::analysis_stale_for`], is still served at once while one background
//!   run replaces it, so a slow analysis never makes a dashboard wait twice;
//! - anything older is recomputed before answering. Failures are never kept.
//!
//! A scoped caller's key includes its namespace, so results never cross scopes.

use super::{Analysis, run_with};
use crate::error::ApiError;
use crate::limits::ApiLimits;
use crate::state::{AppState, MeshSnapshot};
use chrono::{DateTime, TimeDelta, Utc};
use meshlens_analyzer::traffic::Window;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use tokio::sync::OnceCell;

/// Most results kept; the oldest goes first.
const MAX_ENTRIES: usize = 64;

/// A result stays fresh for at least this many times its computation took: refreshing an analysis that
/// takes `T` at most every `REFRESH_SPACING × T` keeps it to a fifth of the query threads' time.
pub const REFRESH_SPACING: u32 = 4;

/// The window a request names: "the last LEN" moves with the clock, so it is one key whatever the time; a
/// fixed range is a key of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WindowSpec {
    UntilNow(TimeDelta),
    Fixed { start: DateTime<Utc>, end: DateTime<Utc> },
}

impl WindowSpec {
    /// The window to analyze when a run starts now.
    fn resolve(self) -> Window {
        match self {
            WindowSpec::UntilNow(length) => super::window_until_now(Some(length)),
            WindowSpec::Fixed { start, end } => Window { start, end },
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    window: WindowSpec,
    namespace: Option<String>,
    /// The configuration snapshot's address; the entry holds the snapshot, so the address is not reused
    /// while the entry exists.
    mesh: usize,
}

#[derive(Debug)]
struct Entry {
    started: Instant,
    result: OnceCell<Arc<Analysis>>,
    /// How long the run took, microseconds (0 until it finished).
    took_micros: AtomicU64,
    refreshing: AtomicBool,
}

impl Entry {
    fn new(started: Instant, result: Option<Arc<Analysis>>, took: Duration) -> Arc<Entry> {
        Arc::new(Entry {
            started,
            result: OnceCell::new_with(result),
            took_micros: AtomicU64::new(took.as_micros().try_into().unwrap_or(u64::MAX)),
            refreshing: AtomicBool::new(false),
        })
    }

    /// How long the result counts as fresh: see the module docs.
    fn fresh_for(&self, limits: &ApiLimits) -> Duration {
        if limits.analysis_fresh_for.is_zero() {
            return Duration::ZERO;
        }
        let took = Duration::from_micros(self.took_micros.load(Ordering::Acquire));
        limits.analysis_fresh_for.max(took.saturating_mul(REFRESH_SPACING))
    }
}

/// The results of recent runs; see the module docs.
#[derive(Debug, Default)]
pub struct AnalysisCache {
    entries: Mutex<HashMap<Key, Arc<Entry>>>,
}

impl AnalysisCache {
    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Arc<Entry>>> {
        // Only whole `Arc`s are swapped under the lock; a panic cannot leave the map torn.
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn insert(&self, key: Key, entry: Arc<Entry>, limits: &ApiLimits) {
        let mut entries = self.entries();
        let now = Instant::now();
        entries.retain(|_, e| now.duration_since(e.started) < limits.analysis_stale_for);
        if entries.len() >= MAX_ENTRIES
            && let Some(oldest) = entries.iter().min_by_key(|(_, e)| e.started).map(|(k, _)| k.clone())
        {
            entries.remove(&oldest);
        }
        entries.insert(key, entry);
    }
}

/// The analyses over `window` for `namespace` against the configuration in force, from the cache when it
/// has a usable result.
pub async fn analysis(
    state: &AppState,
    window: WindowSpec,
    namespace: Option<&str>,
) -> Result<Arc<Analysis>, ApiError> {
    let limits = &state.limits().config;
    let mesh = state.mesh();
    let key = Key { window, namespace: namespace.map(str::to_owned), mesh: Arc::as_ptr(&mesh) as usize };
    let cache = state.analysis_cache();
    let now = Instant::now();
    let entry = {
        let entries = cache.entries();
        entries.get(&key).cloned()
    };
    let entry = match entry {
        Some(entry) if now.duration_since(entry.started) < entry.fresh_for(limits) => entry,
        Some(entry) if now.duration_since(entry.started) < limits.analysis_stale_for && entry.result.initialized() => {
            if !entry.refreshing.swap(true, Ordering::AcqRel) {
                tokio::spawn(refresh(state.clone(), key, Arc::clone(&mesh)));
            }
            if let Some(result) = entry.result.get() {
                return Ok(Arc::clone(result));
            }
            entry
        }
        _ => {
            let entry = Entry::new(now, None, Duration::ZERO);
            cache.insert(key, Arc::clone(&entry), limits);
            entry
        }
    };
    let result = entry.result.get_or_try_init(|| async {
        let started = Instant::now();
        let analysis = run_with(state, mesh, window.resolve(), namespace).await?;
        let took = started.elapsed().as_micros().try_into().unwrap_or(u64::MAX);
        entry.took_micros.store(took, Ordering::Release);
        Ok::<_, ApiError>(Arc::new(analysis))
    });
    result.await.cloned()
}

/// Replaces a stale result with a new run, in the background.
async fn refresh(state: AppState, key: Key, mesh: Arc<MeshSnapshot>) {
    let started = Instant::now();
    match run_with(&state, mesh, key.window.resolve(), key.namespace.as_deref()).await {
        Ok(analysis) => {
            let limits = &state.limits().config;
            let entry = Entry::new(started, Some(Arc::new(analysis)), started.elapsed());
            state.analysis_cache().insert(key, entry, limits);
        }
        Err(e) => {
            // The stale entry stays (and is recomputed in the foreground once too old); the next request
            // may try the background run again.
            tracing::warn!(error = ?e, "background analysis refresh failed");
            if let Some(entry) = state.analysis_cache().entries().get(&key) {
                entry.refreshing.store(false, Ordering::Release);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slow_analyses_stay_fresh_for_a_multiple_of_their_run() {
        let limits = ApiLimits { analysis_fresh_for: Duration::from_secs(10), ..ApiLimits::default() };
        let quick = Entry::new(Instant::now(), None, Duration::from_millis(300));
        assert_eq!(quick.fresh_for(&limits), Duration::from_secs(10));
        let slow = Entry::new(Instant::now(), None, Duration::from_secs(5));
        assert_eq!(slow.fresh_for(&limits), Duration::from_secs(5) * REFRESH_SPACING);
        let uncached = ApiLimits { analysis_fresh_for: Duration::ZERO, ..limits };
        assert_eq!(slow.fresh_for(&uncached), Duration::ZERO, "zero still turns the cache off");
    }
}
