//! Compliance reports and schedules: the report document built from real analyses over a store, its
//! renderings, policies (data cases under `policies/`), the SQL history and trend on SQLite and
//! PostgreSQL, the `/api/v1/reports` and `/api/v1/schedules` endpoints with `oneshot`, and the ticker
//! delivering to a real local webhook receiver.

mod common;
mod history;
mod policy;
mod render;
mod router;
mod schedules;
