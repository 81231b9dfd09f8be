//! Garbage collection in the console (system administrator): the runs with
//! what each freed, a run's report, and buttons that start a run or a dry run.

use askama::Template;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::{done, human_bytes, notice, render, utc, Chrome, ConsoleResult, Posted, SignedIn};
use crate::metadata::GcRun;
use crate::services::access::{self, Attempt};
use crate::services::gc::{self, Cause, Details};
use crate::state::AppState;

/// Runs listed.
const LISTED: i64 = 100;

#[derive(Template)]
#[template(path = "gc.html")]
struct RunsPage {
    chrome: Chrome,
    runs: Vec<GcRun>,
    grace_secs: u64,
    interval_secs: u64,
}

#[derive(Template)]
#[template(path = "gc_run.html")]
struct RunPage {
    chrome: Chrome,
    run: GcRun,
    details: serde_json::Value,
}

impl RunsPage {
    fn when(&self, at: &i64) -> String {
        utc(*at)
    }

    fn size(&self, n: &u64) -> String {
        human_bytes(*n)
    }

    fn state(&self, r: &GcRun) -> String {
        state_of(r)
    }

    fn took(&self, r: &GcRun) -> String {
        r.duration_ms.map_or_else(|| "…".to_owned(), |ms| format!("{:.1} s", ms as f64 / 1000.0))
    }
}

impl RunPage {
    fn when(&self, at: &i64) -> String {
        utc(*at)
    }

    fn size(&self, n: &u64) -> String {
        human_bytes(*n)
    }

    fn state(&self) -> String {
        state_of(&self.run)
    }

    fn took(&self) -> String {
        self.run.duration_ms.map_or_else(|| "still running".to_owned(), |ms| format!("{:.1} s", ms as f64 / 1000.0))
    }

    /// One list of the details (`errors`, `tags`, …) as lines of text.
    fn lines(&self, key: &str) -> Vec<String> {
        let Some(items) = self.details.get(key).and_then(|v| v.as_array()) else { return Vec::new() };
        items
            .iter()
            .map(|i| match key {
                "tags" => format!("{}:{} ({})", text(i, "repository"), text(i, "tag"), text(i, "digest")),
                "manifests" => {
                    format!("{}@{} ({})", text(i, "repository"), text(i, "digest"), human_bytes(number(i, "size")))
                }
                "blobs" => format!("{} ({})", text(i, "digest"), human_bytes(number(i, "size"))),
                "usage_corrections" => format!(
                    "{}: {} → {} bytes, {} → {} repositories",
                    text(i, "scope"),
                    i["bytes_before"],
                    i["bytes_after"],
                    i["repositories_before"],
                    i["repositories_after"]
                ),
                _ => i.as_str().map_or_else(|| i.to_string(), str::to_owned),
            })
            .collect()
    }

    fn pending_finished(&self) -> u64 {
        self.details.get("pending_finished").and_then(serde_json::Value::as_u64).unwrap_or(0)
    }
}

fn text(v: &serde_json::Value, key: &str) -> String {
    v.get(key).and_then(|s| s.as_str()).unwrap_or_default().to_owned()
}

fn number(v: &serde_json::Value, key: &str) -> u64 {
    v.get(key).and_then(serde_json::Value::as_u64).unwrap_or(0)
}

fn state_of(r: &GcRun) -> String {
    serde_json::to_value(r.state).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
}

/// `GET /console/gc`: the latest runs.
pub async fn list(State(state): State<AppState>, who: SignedIn) -> ConsoleResult<Response> {
    let admin = access::system_admin(&state, &who.caller(), None).await?;
    let runs = gc::runs(&state, &admin, LISTED).await?;
    let chrome = who.chrome(&state, "gc").await;
    let config = &state.config.gc;
    Ok(render(&RunsPage { chrome, runs, grace_secs: config.grace_secs, interval_secs: config.interval_secs }))
}

/// `GET /console/gc/{id}`: one run's report.
pub async fn show(State(state): State<AppState>, who: SignedIn, Path(id): Path<i64>) -> ConsoleResult<Response> {
    let admin = access::system_admin(&state, &who.caller(), None).await?;
    let run = gc::run(&state, &admin, id).await?;
    let details = run
        .report
        .as_deref()
        .and_then(|r| serde_json::from_str(r).ok())
        .unwrap_or_else(|| serde_json::to_value(Details::default()).unwrap_or_default());
    let chrome = who.chrome(&state, "gc").await;
    Ok(render(&RunPage { chrome, run, details }))
}

/// The start form.
#[derive(Deserialize)]
pub struct StartForm {
    #[serde(default)]
    dry_run: bool,
}

/// `POST /console/gc`: starts a run or a dry run, and shows it.
pub async fn start(State(state): State<AppState>, posted: Posted<StartForm>) -> Response {
    let Posted { who, form, .. } = posted;
    let started = async {
        let admin = access::system_admin(&state, &who.caller(), Some(Attempt::new("gc.start", "registry"))).await?;
        gc::start_as(&state, &admin, Cause::Console, form.dry_run).await
    };
    match started.await {
        Ok((id, _task)) => {
            let what = if form.dry_run { "Dry run" } else { "Garbage collection run" };
            done(
                &state,
                &who,
                &format!("/console/gc/{id}"),
                notice(format!("{what} {id} started; reload to follow it.")),
            )
            .await
        }
        Err(crate::services::Error::Conflict(p)) => {
            let flash = super::Flash { error: Some(format!("{}.", p.message)), ..super::Flash::default() };
            done(&state, &who, "/console/gc", flash).await
        }
        Err(e) => super::ConsoleError::from(e).into_response(),
    }
}
