//! When a schedule runs: a cron expression (5 fields, or 6 with seconds first; UTC; `@daily` and the other
//! nicknames) or a fixed interval.

use chrono::{DateTime, TimeDelta, Utc};
use croner::Cron;

/// A schedule's timing.
#[derive(Debug, Clone)]
pub enum Timing {
    Cron(Box<Cron>),
    Interval(TimeDelta),
}

impl Timing {
    /// Parses a cron expression; the error says what is wrong with it.
    pub fn cron(expression: &str) -> Result<Timing, String> {
        // Seconds are optional: 5 fields (minute first) or 6 (second first).
        let cron: Cron = expression.parse().map_err(|e| format!("cron expression {expression:?}: {e}"))?;
        Ok(Timing::Cron(Box::new(cron)))
    }

    /// The first due time strictly after `after`.
    pub fn next_after(&self, after: DateTime<Utc>) -> Result<DateTime<Utc>, String> {
        match self {
            Timing::Cron(cron) => cron.find_next_occurrence(&after, false).map_err(|e| e.to_string()),
            Timing::Interval(interval) => {
                after.checked_add_signed(*interval).ok_or_else(|| "the next run is out of range".to_owned())
            }
        }
    }

    /// The run after the one due at `due`, skipping those missed while nothing ran (a server down for a
    /// day makes one catch-up run at start-up, not one per missed period).
    pub fn following(&self, due: DateTime<Utc>, now: DateTime<Utc>) -> Result<DateTime<Utc>, String> {
        match self {
            Timing::Interval(interval) => {
                let mut next = due.checked_add_signed(*interval).ok_or("the next run is out of range")?;
                if next <= now {
                    // Whole intervals past `now`, keeping the schedule's phase.
                    let behind = (now - next).num_microseconds().unwrap_or(i64::MAX);
                    let step = interval.num_microseconds().unwrap_or(i64::MAX).max(1);
                    let skip = TimeDelta::microseconds((behind / step + 1).saturating_mul(step));
                    next = next.checked_add_signed(skip).ok_or("the next run is out of range")?;
                }
                Ok(next)
            }
            Timing::Cron(_) => self.next_after(due.max(now)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().expect("test timestamp")
    }

    #[test]
    fn cron_with_and_without_seconds() {
        let every_5_min = Timing::cron("*/5 * * * *").expect("5 fields");
        assert_eq!(every_5_min.next_after(at("2026-11-27T10:03:00Z")).unwrap(), at("2026-11-27T10:05:00Z"));
        let every_10_s = Timing::cron("*/10 * * * * *").expect("6 fields");
        assert_eq!(every_10_s.next_after(at("2026-11-27T10:03:01Z")).unwrap(), at("2026-11-27T10:03:10Z"));
        let daily = Timing::cron("@daily").expect("nickname");
        assert_eq!(daily.next_after(at("2026-11-27T10:03:01Z")).unwrap(), at("2026-11-28T00:00:00Z"));
        assert!(Timing::cron("61 * * * *").unwrap_err().contains("61 * * * *"));
        assert!(Timing::cron("not cron").is_err());
    }

    #[test]
    fn missed_runs_are_skipped_not_repeated() {
        let hourly = Timing::Interval(TimeDelta::hours(1));
        // On time: the next period.
        assert_eq!(
            hourly.following(at("2026-11-27T10:00:00Z"), at("2026-11-27T10:00:01Z")).unwrap(),
            at("2026-11-27T11:00:00Z")
        );
        // Down from 10:00 to 13:30: one catch-up run, then 14:00 (same phase).
        assert_eq!(
            hourly.following(at("2026-11-27T10:00:00Z"), at("2026-11-27T13:30:00Z")).unwrap(),
            at("2026-11-27T14:00:00Z")
        );
        let cron = Timing::cron("0 * * * *").unwrap();
        assert_eq!(
            cron.following(at("2026-11-27T10:00:00Z"), at("2026-11-27T13:30:00Z")).unwrap(),
            at("2026-11-27T14:00:00Z")
        );
    }
}
