//! The [`Ticker`]: the task in `meshlens serve` that makes each schedule's report when it is due, stores
//! it, and delivers it to the schedule's webhook, retrying with exponential backoff. All of its state is in
//! SQL (`next_run`, pending deliveries), so a restart picks up where the last process stopped.

use super::db::{self, Attempt, DELIVERED, Delivery, FAILED, PENDING, ScheduleRow};
use super::webhook::WebhookClient;
use super::{Schedule, payload};
use crate::error::ApiError;
use crate::reports::history::{self, NewRow, from_micros};
use crate::reports::{self, Policy};
use crate::state::AppState;
use chrono::{DateTime, TimeDelta, Utc};
use meshlens_analyzer::traffic::Window;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How the ticker paces itself.
#[derive(Debug, Clone)]
pub struct TickerOptions {
    /// How often it looks for due schedules and deliveries.
    pub poll: Duration,
    /// Attempts of one delivery before it is marked failed.
    pub max_attempts: u32,
    /// Wait after the first failed attempt; doubled after each further one.
    pub backoff_base: Duration,
    /// Longest wait between attempts.
    pub backoff_max: Duration,
    /// Time allowed for one POST, answer included.
    pub request_timeout: Duration,
}

impl Default for TickerOptions {
    fn default() -> Self {
        TickerOptions {
            poll: Duration::from_secs(1),
            max_attempts: 8,
            backoff_base: Duration::from_secs(2),
            backoff_max: Duration::from_secs(600),
            request_timeout: Duration::from_secs(10),
        }
    }
}

impl TickerOptions {
    /// The wait after `attempts` failed attempts: base · 2^(attempts-1), at most `backoff_max`.
    pub fn backoff(&self, attempts: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempts.saturating_sub(1));
        self.backoff_base.saturating_mul(factor).min(self.backoff_max)
    }
}

/// The running ticker; [`Ticker::stop`] ends it.
#[derive(Debug)]
pub struct Ticker {
    shutdown: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Ticker {
    /// Starts ticking over `state`'s store.
    pub fn spawn(state: AppState, options: TickerOptions) -> Ticker {
        let (shutdown, mut stopped) = watch::channel(false);
        let task = tokio::spawn(async move {
            let client = WebhookClient::new(options.request_timeout);
            loop {
                // A tick dropped halfway by the shutdown is safe: a run commits in one transaction, and an
                // unrecorded delivery attempt is made again at the next start.
                tokio::select! {
                    _ = stopped.changed() => break,
                    () = tick(&state, &client, &options) => {}
                }
                tokio::select! {
                    _ = stopped.changed() => break,
                    () = tokio::time::sleep(options.poll) => {}
                }
            }
            tracing::debug!("schedule ticker stopped");
        });
        Ticker { shutdown, task }
    }

    /// Stops the ticker and waits for its task to end.
    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        if let Err(e) = self.task.await {
            tracing::error!(error = %e, "schedule ticker task failed");
        }
    }
}

/// One round: due runs, then due deliveries. Failures are logged and retried at a later tick.
pub async fn tick(state: &AppState, client: &WebhookClient, options: &TickerOptions) {
    if let Err(error) = run_due(state, Utc::now()).await {
        tracing::error!(%error, "running due schedules");
    }
    if let Err(error) = deliver_due(state, client, options, Utc::now()).await {
        tracing::error!(%error, "delivering reports");
    }
}

/// Makes and stores the report of every schedule due at `now`.
pub async fn run_due(state: &AppState, now: DateTime<Utc>) -> Result<(), ApiError> {
    let catalog = state.store.catalog();
    for row in db::due(catalog, now).await? {
        let schedule = match Schedule::from_row(&row) {
            Ok(schedule) => schedule,
            Err(error) => {
                // Only a database edited by hand gets here; skipping it keeps the others running.
                tracing::error!(schedule = row.name, %error, "unreadable schedule");
                continue;
            }
        };
        let due = row.next_run;
        let due_at = from_micros(due);
        let next = match schedule.timing.following(due_at, now) {
            Ok(next) => next,
            Err(error) => {
                tracing::error!(schedule = row.name, %error, "schedule has no next run");
                db::fail_run(catalog, &row, due, DateTime::<Utc>::MAX_UTC, &error).await?;
                continue;
            }
        };
        match make_report(state, &row, &schedule, due_at).await {
            Ok(report) => {
                let new_row = NewRow::of(&report, Some(row.id))?;
                match db::commit_run(catalog, &row, due, next, &new_row, Utc::now()).await? {
                    Some(id) => {
                        tracing::info!(schedule = row.name, report = id, %due_at, %next, "scheduled report stored")
                    }
                    None => tracing::debug!(schedule = row.name, %due_at, "run already committed elsewhere"),
                }
            }
            Err(error) => {
                tracing::error!(schedule = row.name, %error, "scheduled report failed");
                db::fail_run(catalog, &row, due, next, &error.to_string()).await?;
            }
        }
    }
    Ok(())
}

/// The report of a run due at `due`: the window ending then.
async fn make_report(
    state: &AppState,
    row: &ScheduleRow,
    schedule: &Schedule,
    due: DateTime<Utc>,
) -> Result<reports::Report, ApiError> {
    let start = due.checked_sub_signed(schedule.window).unwrap_or(DateTime::UNIX_EPOCH);
    let policy: Option<&Policy> = schedule.policy.as_ref();
    reports::generate(state, Some(state.store.catalog()), Window { start, end: due }, policy, Some(row.id)).await
}

/// Attempts every delivery due at `now`.
pub async fn deliver_due(
    state: &AppState,
    client: &WebhookClient,
    options: &TickerOptions,
    now: DateTime<Utc>,
) -> Result<(), ApiError> {
    let catalog = state.store.catalog();
    for delivery in db::due_deliveries(catalog, now, 16).await? {
        let attempt = attempt(state, client, options, &delivery).await?;
        if attempt.status == DELIVERED {
            tracing::info!(delivery = delivery.id, report = delivery.report_id, "report delivered");
        } else {
            tracing::warn!(
                delivery = delivery.id,
                attempts = delivery.attempts + 1,
                status = attempt.status,
                error = attempt.error.as_deref().unwrap_or(""),
                "report delivery failed"
            );
        }
        db::record_attempt(catalog, delivery.id, delivery.attempts, &attempt).await?;
    }
    Ok(())
}

async fn attempt(
    state: &AppState,
    client: &WebhookClient,
    options: &TickerOptions,
    delivery: &Delivery,
) -> Result<Attempt, ApiError> {
    let catalog = state.store.catalog();
    let attempts = delivery.attempts + 1;
    let give_up = |error: String| Attempt {
        status: FAILED,
        http_status: None,
        error: Some(error),
        next_attempt_at: Utc::now(),
        at: Utc::now(),
    };
    let Some(row) = db::get(catalog, delivery.schedule_id).await? else {
        return Ok(give_up("the schedule was deleted".into()));
    };
    let Some(stored) = history::get(catalog, delivery.report_id).await? else {
        return Ok(give_up(format!("report {} no longer exists", delivery.report_id)));
    };
    let formats = match Schedule::from_row(&row) {
        Ok(schedule) => schedule.formats,
        Err(error) => return Ok(give_up(error)),
    };
    let body = payload(delivery.id, &row, &stored, &formats);
    let outcome = client.post(&delivery.url, delivery.id, attempts, body.into()).await;
    let at = Utc::now();
    let status = if outcome.delivered {
        DELIVERED
    } else if attempts >= i64::from(options.max_attempts) {
        FAILED
    } else {
        PENDING
    };
    let wait = TimeDelta::from_std(options.backoff(attempts as u32)).unwrap_or(TimeDelta::MAX);
    Ok(Attempt {
        status,
        http_status: outcome.http_status,
        error: outcome.error,
        next_attempt_at: at.checked_add_signed(wait).unwrap_or(DateTime::<Utc>::MAX_UTC),
        at,
    })
}
