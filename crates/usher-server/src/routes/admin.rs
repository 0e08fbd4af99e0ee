//! Admin tools: the user list, the job outbox's dead letters, and retrying one.

use axum::extract::{Path, Query, State};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use usher_core::{Cursor, PageLimit};
use usher_store::{Job, JobState, UserQuery};

use crate::extract::{Admin, Caller, Fields, RequestId, path_id, query};
use crate::problem::{ApiError, Problem};
use crate::routes::accounts::UserView;
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_users))
        .routes(routes!(list_jobs))
        .routes(routes!(retry_job))
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct UserPage {
    pub items: Vec<UserView>,
    pub next_cursor: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UserParams {
    /// Case-insensitive text to find in emails and names.
    pub q: Option<String>,
    /// Page size, 1–100 (default 20).
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

const SEARCH_MAX_CHARS: usize = 200;

/// Every account, newest first, optionally only those whose email or name contains `q`.
#[utoipa::path(get, path = "/v1/admin/users", tag = "admin",
    params(UserParams),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "A page of users", body = UserPage),
        (status = 401, description = "Not logged in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Bad search, limit or cursor", body = Problem, content_type = "application/problem+json"),
    ))]
async fn list_users(
    State(state): State<AppState>,
    caller: Caller,
    params: Result<Query<UserParams>, axum::extract::rejection::QueryRejection>,
) -> Result<axum::Json<UserPage>, ApiError> {
    let caller = caller.require_admin()?;
    users(&state, caller, query(params)?).await.map(axum::Json)
}

/// A page of accounts for an admin (see [`list_users`]).
pub async fn users(
    state: &AppState,
    _admin: Admin,
    params: UserParams,
) -> Result<UserPage, ApiError> {
    let mut fields = Fields::new();
    let limit = fields.take("limit", PageLimit::parse(params.limit));
    let after = fields.optional("cursor", params.cursor.as_deref(), Cursor::parse);
    let q = params
        .q
        .map(|q| q.trim().to_owned())
        .filter(|q| !q.is_empty());
    if q.as_ref()
        .is_some_and(|q| q.chars().count() > SEARCH_MAX_CHARS || q.chars().any(char::is_control))
    {
        fields.reject(
            "q",
            format!(
                "search text has at most {SEARCH_MAX_CHARS} characters and no control characters"
            ),
        );
    }
    fields.finish()?;
    let (Some(limit), Some(after)) = (limit, after) else {
        return Err(ApiError::Internal("validated fields missing".into()));
    };
    let page = state
        .store()
        .list_users(UserQuery { q, limit, after })
        .await?;
    Ok(UserPage {
        items: page.items.into_iter().map(UserView::from).collect(),
        next_cursor: page.next.map(Cursor::encode),
    })
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct JobView {
    pub id: Uuid,
    #[schema(example = "confirmation_email")]
    pub kind: String,
    #[schema(value_type = Object)]
    pub payload: serde_json::Value,
    #[schema(value_type = String, example = "dead")]
    pub state: usher_store::JobState,
    pub attempts: u32,
    pub max_attempts: u32,
    pub last_error: Option<String>,
    pub run_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
}

impl From<Job> for JobView {
    fn from(job: Job) -> Self {
        Self {
            id: job.id,
            kind: job.kind.to_string(),
            payload: job.payload,
            state: job.state,
            attempts: job.attempts,
            max_attempts: job.max_attempts,
            last_error: job.last_error,
            run_at: job.run_at,
            created_at: job.created_at,
        }
    }
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct JobList {
    pub items: Vec<JobView>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct JobParams {
    /// `dead` (default), `queued`, `running` or `done`.
    pub state: Option<String>,
}

/// Jobs in a state, oldest first (at most 200). Dead jobs failed every attempt.
#[utoipa::path(get, path = "/v1/admin/jobs", tag = "admin",
    params(JobParams),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Jobs", body = JobList),
        (status = 401, description = "Not logged in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Unknown state", body = Problem, content_type = "application/problem+json"),
    ))]
async fn list_jobs(
    State(state): State<AppState>,
    caller: Caller,
    Query(params): Query<JobParams>,
) -> Result<axum::Json<JobList>, ApiError> {
    jobs(&state, caller.require_admin()?, params)
        .await
        .map(axum::Json)
}

/// Jobs in a state, for an admin (see [`list_jobs`]).
pub async fn jobs(state: &AppState, _admin: Admin, params: JobParams) -> Result<JobList, ApiError> {
    let job_state = match params.state.as_deref().unwrap_or("dead") {
        "dead" => JobState::Dead,
        "queued" => JobState::Queued,
        "running" => JobState::Running,
        "done" => JobState::Done,
        _ => {
            return Err(ApiError::validation(
                "state",
                "state is one of dead, queued, running, done",
            ));
        }
    };
    let jobs = state.store().jobs(job_state, 200).await?;
    Ok(JobList {
        items: jobs.into_iter().map(JobView::from).collect(),
    })
}

/// Puts a dead job back in the queue with a fresh count of attempts.
#[utoipa::path(post, path = "/v1/admin/jobs/{id}/retry", tag = "admin",
    params(("id" = Uuid, Path, description = "Job id")),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Queued again"),
        (status = 401, description = "Not logged in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such dead job", body = Problem, content_type = "application/problem+json"),
    ))]
async fn retry_job(
    State(state): State<AppState>,
    caller: Caller,
    request: RequestId,
    Path(id): Path<String>,
) -> Result<axum::http::StatusCode, ApiError> {
    let caller = caller.require_admin()?;
    retry(&state, caller, &request, path_id(&id)?).await?;
    Ok(axum::http::StatusCode::NO_CONTENT)
}

/// An admin puts a dead job back in the queue.
pub async fn retry(
    state: &AppState,
    caller: Admin,
    request: &RequestId,
    id: Uuid,
) -> Result<(), ApiError> {
    if state
        .store()
        .requeue_job(id, state.clock().now(), &caller.audit(request))
        .await?
    {
        tracing::info!(job_id = %id, "dead job queued again");
        Ok(())
    } else {
        Err(ApiError::NotFound)
    }
}
