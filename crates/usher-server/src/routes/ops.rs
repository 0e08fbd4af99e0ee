//! Operational endpoints: liveness and readiness.

use axum::extract::State;
use axum::http::StatusCode;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::problem::ApiError;
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    #[schema(example = "ok")]
    pub status: &'static str,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Readiness {
    #[schema(example = "ok")]
    pub status: &'static str,
    #[schema(example = "sqlite")]
    pub database: &'static str,
    pub applied_migrations: usize,
    pub known_migrations: usize,
}

/// The process is up.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "Up", body = Health)))]
async fn healthz() -> axum::Json<Health> {
    axum::Json(Health { status: "ok" })
}

/// The database answers and its migrations are current.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses(
        (status = 200, description = "Ready", body = Readiness),
        (status = 503, description = "Not ready", body = crate::problem::Problem, content_type = "application/problem+json"),
    ))]
async fn readyz(
    State(state): State<AppState>,
) -> Result<(StatusCode, axum::Json<Readiness>), ApiError> {
    let readiness = state
        .store()
        .readiness()
        .await
        .map_err(|e| ApiError::ServiceUnavailable(e.to_string()))?;
    if !readiness.is_current() {
        return Err(ApiError::ServiceUnavailable(format!(
            "{} of {} migrations applied",
            readiness.applied_migrations, readiness.known_migrations
        )));
    }
    Ok((
        StatusCode::OK,
        axum::Json(Readiness {
            status: "ok",
            database: state.store().engine(),
            applied_migrations: readiness.applied_migrations,
            known_migrations: readiness.known_migrations,
        }),
    ))
}
