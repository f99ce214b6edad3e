//! Query parameters shared by the analysis endpoints: the time window (`window`, or `start`/`end`), the
//! namespace filter, and pagination (`limit`, `offset`). Every endpoint names the parameters it accepts;
//! an unknown or repeated parameter, a malformed value or an impossible window is a 400 that says which
//! parameter and why, rather than being ignored.
//!
//! The `*Doc` structs exist for the OpenAPI document only (`params(...)` of `#[utoipa::path]`); parsing
//! goes through [`Params`], which keeps the error messages located.

use crate::analysis::DEFAULT_WINDOW;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::limits::ApiLimits;
use crate::tokens::validate_namespace;
use chrono::{DateTime, TimeDelta, Utc};
use http::Uri;
use meshlens_analyzer::traffic::Window;
use serde::Serialize;
use utoipa::{IntoParams, ToSchema};

/// The parameters of one request, checked against the names its endpoint accepts.
#[derive(Debug)]
pub struct Params {
    pairs: Vec<(String, String)>,
}

impl Params {
    /// Parses `uri`'s query; 400 for a parameter not in `accepted` or given twice.
    pub fn parse(uri: &Uri, accepted: &[&str]) -> Result<Params, ApiError> {
        let pairs: Vec<(String, String)> = match uri.query() {
            None => Vec::new(),
            Some(query) => {
                axum::extract::Query::<Vec<(String, String)>>::try_from_uri(uri)
                    .map_err(|_| ApiError::BadRequest(format!("malformed query string {query:?}")))?
                    .0
            }
        };
        for (index, (name, _)) in pairs.iter().enumerate() {
            if !accepted.contains(&name.as_str()) {
                return Err(ApiError::BadRequest(format!(
                    "unknown parameter {name:?} (this endpoint accepts: {})",
                    accepted.join(", ")
                )));
            }
            if pairs[..index].iter().any(|(earlier, _)| earlier == name) {
                return Err(ApiError::BadRequest(format!("parameter {name:?} given more than once")));
            }
        }
        Ok(Params { pairs })
    }

    /// The value of `name`, if given.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    /// The value of `name` split at commas (`level=error,warning`), empty items dropped.
    pub fn list(&self, name: &str) -> Vec<&str> {
        self.get(name).map(|v| v.split(',').map(str::trim).filter(|s| !s.is_empty()).collect()).unwrap_or_default()
    }

    /// A boolean parameter: `true` or `false`.
    pub fn flag(&self, name: &str) -> Result<Option<bool>, ApiError> {
        match self.get(name) {
            None => Ok(None),
            Some("true") => Ok(Some(true)),
            Some("false") => Ok(Some(false)),
            Some(other) => Err(ApiError::BadRequest(format!("{name}: expected true or false, found {other:?}"))),
        }
    }
}

/// Parses a window length: a positive integer and a unit, `s`, `m`, `h`, `d` or `w` (`15m`, `1h`, `7d`).
pub fn parse_duration(text: &str) -> Result<TimeDelta, String> {
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let expected = || format!("expected a number and a unit s, m, h, d or w (e.g. 15m, 1h, 7d), found {text:?}");
    let n: i64 = digits.parse().map_err(|_| expected())?;
    let seconds_per_unit = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 604_800,
        _ => return Err(expected()),
    };
    if n == 0 {
        return Err(format!("the window must be longer than zero, found {text:?}"));
    }
    n.checked_mul(seconds_per_unit).and_then(TimeDelta::try_seconds).ok_or_else(|| format!("{text:?} is too long"))
}

/// `1h`, `31d`: a length as `window` would take it, for messages.
fn show_duration(length: TimeDelta) -> String {
    let seconds = length.num_seconds();
    match seconds {
        s if s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

fn parse_time(params: &Params, name: &str) -> Result<Option<DateTime<Utc>>, ApiError> {
    params
        .get(name)
        .map(|text| {
            DateTime::parse_from_rfc3339(text).map(|t| t.with_timezone(&Utc)).map_err(|e| {
                ApiError::BadRequest(format!(
                    "{name}: expected an RFC 3339 time such as 2026-11-27T10:00:00Z, found {text:?} ({e})"
                ))
            })
        })
        .transpose()
}

/// The window a request asks for, ending at `now` unless it says otherwise:
/// - `window=LEN`: the last LEN (default [`DEFAULT_WINDOW`]);
/// - `start`, `end` (RFC 3339): that range; either may be combined with `window` instead of the other;
/// - all three at once is ambiguous, `start` not before `end` is empty, and a range longer than
///   `limits.max_window` is refused.
pub fn window(params: &Params, limits: &ApiLimits, now: DateTime<Utc>) -> Result<Window, ApiError> {
    let length = params
        .get("window")
        .map(|text| parse_duration(text).map_err(|e| ApiError::BadRequest(format!("window: {e}"))))
        .transpose()?;
    let start = parse_time(params, "start")?;
    let end = parse_time(params, "end")?;
    let overflow = || ApiError::BadRequest("the window reaches outside the representable time range".into());
    let (start, end) = match (start, end, length) {
        (Some(_), Some(_), Some(_)) => {
            return Err(ApiError::BadRequest("give at most two of window, start and end".into()));
        }
        (Some(start), Some(end), None) => (start, end),
        (Some(start), None, Some(length)) => (start, start.checked_add_signed(length).ok_or_else(overflow)?),
        (Some(start), None, None) => (start, now),
        (None, end, length) => {
            let end = end.unwrap_or(now);
            (end.checked_sub_signed(length.unwrap_or(DEFAULT_WINDOW)).ok_or_else(overflow)?, end)
        }
    };
    // Telemetry timestamps are nanoseconds in the query engine, which cannot represent times before 1970
    // here (or far in the future); such windows are the caller's mistake, not the server's failure.
    let earliest = DateTime::UNIX_EPOCH;
    let latest =
        DateTime::parse_from_rfc3339("2200-01-01T00:00:00Z").map(|t| t.with_timezone(&Utc)).unwrap_or(earliest);
    if start < earliest || end > latest {
        return Err(ApiError::BadRequest(format!(
            "the window {} to {} reaches outside the supported time range, 1970 to 2200",
            start.to_rfc3339(),
            end.to_rfc3339()
        )));
    }
    if start >= end {
        return Err(ApiError::BadRequest(format!(
            "start ({}) must be before end ({})",
            start.to_rfc3339(),
            end.to_rfc3339()
        )));
    }
    if end - start > limits.max_window {
        return Err(ApiError::BadRequest(format!(
            "the window is {} long; the longest allowed is {}",
            show_duration(end - start),
            show_duration(limits.max_window)
        )));
    }
    Ok(Window { start, end })
}

/// The namespace a request may see: its `namespace` parameter checked for form, then against the caller's
/// scope ([`Caller::scope`]).
pub fn namespace(params: &Params, caller: &Caller) -> Result<Option<String>, ApiError> {
    let requested = params.get("namespace");
    if let Some(namespace) = requested {
        validate_namespace(namespace).map_err(|e| ApiError::BadRequest(format!("namespace: {e}")))?;
    }
    caller.scope(requested)
}

/// Which part of a list a request wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    pub limit: u32,
    pub offset: u64,
}

impl Page {
    /// `limit` (1 to `limits.max_limit`, default `limits.default_limit`) and `offset` (default 0).
    pub fn from_params(params: &Params, limits: &ApiLimits) -> Result<Page, ApiError> {
        let limit = match params.get("limit") {
            None => limits.default_limit,
            Some(text) => match text.parse::<u32>() {
                Ok(n) if (1..=limits.max_limit).contains(&n) => n,
                _ => {
                    return Err(ApiError::BadRequest(format!(
                        "limit: expected an integer from 1 to {}, found {text:?}",
                        limits.max_limit
                    )));
                }
            },
        };
        let offset = match params.get("offset") {
            None => 0,
            Some(text) => text.parse::<u64>().map_err(|_| {
                ApiError::BadRequest(format!("offset: expected a non-negative integer, found {text:?}"))
            })?,
        };
        Ok(Page { limit, offset })
    }

    /// This page of `items`, and how many there are in all.
    pub fn slice<T>(&self, items: Vec<T>) -> (Vec<T>, u64) {
        let total = items.len() as u64;
        let skip = usize::try_from(self.offset).unwrap_or(usize::MAX);
        (items.into_iter().skip(skip).take(self.limit as usize).collect(), total)
    }
}

/// The time range an answer covers: `start` inclusive, `end` exclusive.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
pub struct WindowInfo {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

impl From<Window> for WindowInfo {
    fn from(window: Window) -> Self {
        WindowInfo { start: window.start, end: window.end }
    }
}

/// Time window parameters (OpenAPI only; see [`window`]).
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct WindowDoc {
    /// Length of the window ending now (or at `end`, or starting at `start`): a number and a unit `s`, `m`,
    /// `h`, `d` or `w`. Default `1h`; at most 31 days.
    #[param(pattern = r"^[0-9]+[smhdw]$", example = "1h")]
    pub window: Option<String>,
    /// Start of the window (inclusive), RFC 3339.
    pub start: Option<DateTime<Utc>>,
    /// End of the window (exclusive), RFC 3339. Default: now.
    pub end: Option<DateTime<Utc>>,
}

/// Namespace filter (OpenAPI only; see [`namespace`]).
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct NamespaceDoc {
    /// Only data of this namespace: edges and records whose source or destination is in it, resources in
    /// it. A namespace-scoped token always gets its own namespace, and 403 for any other.
    #[param(pattern = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$", example = "bookinfo")]
    pub namespace: Option<String>,
}

/// Pagination (OpenAPI only; see [`Page::from_params`]).
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct PageDoc {
    /// Items per page, 1 to 1000; default 100.
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
    /// Items to skip; default 0.
    #[param(minimum = 0)]
    pub offset: Option<u64>,
}
