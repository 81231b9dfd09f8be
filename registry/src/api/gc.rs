//! `/api/v1/gc`: garbage collection runs, started and read by the system
//! administrator. What a run does and why it is safe beside pushes is in
//! `services::gc`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::error::{ApiError, ApiResult, ErrorBody};
use super::{Params, PathParams};
use crate::metadata;
use crate::services::access::{self, Attempt, Caller};
use crate::services::gc::{self, Cause};
use crate::state::AppState;

/// The body of `POST /api/v1/gc`; both fields may be left out.
#[derive(Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartRun {
    /// Only work out and list what a run would delete; delete nothing.
    #[serde(default)]
    pub dry_run: bool,
    /// Answer when the run has finished (200), rather than at once (202).
    #[serde(default)]
    pub wait: bool,
}

/// A garbage collection run and what it did (or, dry, would do).
#[derive(Serialize, ToSchema)]
pub struct Run {
    /// Its number.
    pub id: i64,
    /// What started it: `schedule`, `api` or `console`.
    pub cause: String,
    /// Who started it; `system` for the schedule.
    pub actor: String,
    /// Only listed what it would delete.
    pub dry_run: bool,
    /// `running`, `done`, `failed`, or `interrupted` (its process stopped; the next run finished its work).
    pub state: String,
    /// Unix seconds.
    pub started_at: i64,
    /// Unix seconds, once finished.
    pub finished_at: Option<i64>,
    /// How long it took, once finished.
    pub duration_ms: Option<i64>,
    /// Blobs whose bytes were deleted.
    pub blobs_deleted: u64,
    /// Their bytes.
    pub bytes_freed: u64,
    /// Links of blobs to repositories that reference them in no manifest, removed.
    pub links_removed: u64,
    /// Manifests the namespaces' policies deleted.
    pub manifests_deleted: u64,
    /// Tags retention rules deleted.
    pub tags_deleted: u64,
    /// Steps that failed; each is retried by the next run.
    pub errors: u64,
    /// Details: `errors` (messages), `pending_finished`, `usage_corrections`, and the `tags`,
    /// `manifests` and `blobs` deleted or, dry, that would be (at most 1000 of each).
    #[schema(value_type = Object)]
    pub details: serde_json::Value,
}

impl From<metadata::GcRun> for Run {
    fn from(r: metadata::GcRun) -> Self {
        let state = serde_json::to_value(r.state).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default();
        let details = r
            .report
            .as_deref()
            .and_then(|t| serde_json::from_str(t).ok())
            .unwrap_or_else(|| serde_json::Value::Object(Default::default()));
        Run {
            id: r.id,
            cause: r.cause,
            actor: r.actor,
            dry_run: r.dry_run,
            state,
            started_at: r.started_at,
            finished_at: r.finished_at,
            duration_ms: r.duration_ms,
            blobs_deleted: r.counts.blobs_deleted,
            bytes_freed: r.counts.bytes_freed,
            links_removed: r.counts.links_removed,
            manifests_deleted: r.counts.manifests_deleted,
            tags_deleted: r.counts.tags_deleted,
            errors: r.counts.errors,
            details,
        }
    }
}

/// Starts a garbage collection run, or a dry run (system administrator).
#[utoipa::path(
    post,
    path = "/api/v1/gc",
    operation_id = "startGc",
    tag = "gc",
    request_body(content = Option<StartRun>, description = "May be empty"),
    responses(
        (status = 200, description = "The run, finished (`wait`)", body = Run),
        (status = 202, description = "The run, started", body = Run),
        (status = 400, description = "Invalid body", body = ErrorBody),
        (status = 401, description = "No or bad credentials", body = ErrorBody),
        (status = 403, description = "Not the system administrator", body = ErrorBody),
        (status = 409, description = "A run is going on (here or on another replica)", body = ErrorBody),
    )
)]
pub async fn start(
    State(state): State<AppState>,
    caller: Caller,
    body: axum::body::Bytes,
) -> ApiResult<(StatusCode, Json<Run>)> {
    let StartRun { dry_run, wait } = if body.iter().all(u8::is_ascii_whitespace) {
        StartRun::default()
    } else {
        // `null` is an empty request too.
        serde_json::from_slice::<Option<StartRun>>(&body).map(Option::unwrap_or_default).map_err(|e| {
            ApiError::InvalidRequest(format!(
                "the body is not a run request ({e}); send {{\"dry_run\": true}}, {{\"wait\": true}}, both, or nothing"
            ))
        })?
    };
    let admin = access::system_admin(&state, &caller, Some(Attempt::new("gc.start", "registry"))).await?;
    let (id, task) = gc::start_as(&state, &admin, Cause::Api, dry_run).await?;
    if wait {
        let finished = task.await.map_err(|e| ApiError::Internal(format!("the run's task failed: {e}")))?;
        let run = finished.ok_or_else(|| ApiError::Internal(format!("run {id} finished but its record is gone")))?;
        return Ok((StatusCode::OK, Json(run.into())));
    }
    let run = gc::run(&state, &admin, id).await?;
    Ok((StatusCode::ACCEPTED, Json(run.into())))
}

/// How many runs to list.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RunsQuery {
    /// At most this many, newest first: 1 to 500, 50 if absent.
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<i64>,
}

/// The latest garbage collection runs, newest first (system administrator).
#[utoipa::path(
    get,
    path = "/api/v1/gc/runs",
    operation_id = "listGcRuns",
    tag = "gc",
    params(RunsQuery),
    responses(
        (status = 200, description = "Runs, newest first", body = Vec<Run>),
        (status = 400, description = "Invalid parameters", body = ErrorBody),
        (status = 401, description = "No or bad credentials", body = ErrorBody),
        (status = 403, description = "Not the system administrator", body = ErrorBody),
    )
)]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Params(q): Params<RunsQuery>,
) -> ApiResult<Json<Vec<Run>>> {
    let admin = access::system_admin(&state, &caller, None).await?;
    let limit = q.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::InvalidRequest(format!("limit must be 1 to 500, not {limit}")));
    }
    let runs = gc::runs(&state, &admin, limit).await?;
    Ok(Json(runs.into_iter().map(Run::from).collect()))
}

/// One garbage collection run with its report (system administrator).
#[utoipa::path(
    get,
    path = "/api/v1/gc/runs/{id}",
    operation_id = "getGcRun",
    tag = "gc",
    params(("id" = i64, Path, description = "The run's number")),
    responses(
        (status = 200, description = "The run", body = Run),
        (status = 400, description = "A run number that is not a 64-bit integer", body = ErrorBody),
        (status = 401, description = "No or bad credentials", body = ErrorBody),
        (status = 403, description = "Not the system administrator", body = ErrorBody),
        (status = 404, description = "No such run", body = ErrorBody),
    )
)]
pub async fn show(
    State(state): State<AppState>,
    caller: Caller,
    PathParams(id): PathParams<i64>,
) -> ApiResult<Json<Run>> {
    let admin = access::system_admin(&state, &caller, None).await?;
    let run = gc::run(&state, &admin, id).await?;
    Ok(Json(run.into()))
}
