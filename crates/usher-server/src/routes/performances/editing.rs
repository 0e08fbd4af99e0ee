//! Creating, reading and changing a performance (and cancelling its sale).

use super::*;

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_performance))
        .routes(routes!(get_performance, update_performance))
}

/// Adds a performance with its seating plan to an event (its organizer or an admin).
/// One unit is created per sellable place.
#[utoipa::path(post, path = "/v1/events/{id}/performances", tag = "performances",
    params(("id" = Uuid, Path, description = "Event id")),
    request_body = CreatePerformanceRequest,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Performance created", body = PerformanceView),
        (status = 403, description = "Not an organizer", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such event among the caller's", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid plan; each error names its field", body = Problem, content_type = "application/problem+json"),
    ))]
async fn create_performance(
    State(state): State<AppState>,
    caller: Caller,
    request: RequestId,
    Path(event_id): Path<String>,
    // Judged after the caller: no verdict on the body for those without the right.
    body: Result<Json<CreatePerformanceRequest>, ApiError>,
) -> Result<impl IntoResponse, ApiError> {
    let caller = caller.require_organizer()?;
    let event_id = path_id(&event_id)?;
    let view = create(
        &state,
        caller,
        &request,
        event_id,
        body.map(|Json(body)| body),
    )
    .await?;
    Ok((StatusCode::CREATED, axum::Json(view)))
}

/// Adds a performance to an event `caller` manages; the body is judged once that is
/// known.
pub async fn create(
    state: &AppState,
    caller: Organizer,
    request: &RequestId,
    event_id: Uuid,
    body: Result<CreatePerformanceRequest, ApiError>,
) -> Result<PerformanceView, ApiError> {
    let event = managed_event(state, caller, event_id).await?;
    let body = body?;
    let now = state.clock().now();
    let mut fields = Fields::new();
    let starts_at = body.starts_at.trunc_subsecs(6);
    if starts_at <= now {
        fields.reject("starts_at", "a performance must start in the future");
    }
    let hold_ttl = fields.optional("hold_ttl_seconds", body.hold_ttl_seconds, HoldTtl::parse);
    let max_per_booking = fields.optional(
        "max_per_booking",
        body.max_per_booking,
        MaxPerBooking::parse,
    );
    let on_sale_at = body.on_sale_at.map(|t| t.trunc_subsecs(6));
    if on_sale_at.is_some_and(|t| t >= starts_at) {
        fields.reject("on_sale_at", "the sale opens before the performance starts");
    }
    let seating = match SeatingPlan::parse(body.seating.into_input(), "seating") {
        Ok(plan) => Some(plan),
        Err(issues) => {
            for issue in issues {
                fields.reject(&issue.field, issue.message);
            }
            None
        }
    };
    fields.finish()?;
    let (Some(hold_ttl), Some(max_per_booking), Some(seating)) =
        (hold_ttl, max_per_booking, seating)
    else {
        return Err(ApiError::Internal("validated fields missing".into()));
    };
    if event.status == usher_core::EventStatus::Cancelled {
        return Err(ApiError::Conflict {
            kind: "event-cancelled",
            detail: "this event is cancelled; it cannot get new performances".into(),
        });
    }
    let performance = state
        .store()
        .create_performance(
            NewPerformance {
                event_id: event.id,
                starts_at,
                on_sale_at,
                waiting_room: body.waiting_room.is_some_and(|w| w.enabled),
                hold_ttl: hold_ttl.unwrap_or(state.config().default_hold_ttl),
                max_per_booking: max_per_booking.unwrap_or_default(),
                seating,
            },
            &caller.audit(request),
        )
        .await?;
    tracing::info!(performance_id = %performance.id, event_id = %event.id, "performance created");
    performance_view(state, performance, event.status).await
}

/// A performance with its counts. An expired hold counts as available.
#[utoipa::path(get, path = "/v1/performances/{id}", tag = "performances",
    params(("id" = Uuid, Path, description = "Performance id")),
    responses(
        (status = 200, description = "The performance", body = PerformanceView),
        (status = 404, description = "No such performance, or its event is not visible", body = Problem, content_type = "application/problem+json"),
    ))]
async fn get_performance(
    State(state): State<AppState>,
    caller: Option<Caller>,
    Path(id): Path<String>,
) -> Result<axum::Json<PerformanceView>, ApiError> {
    one(&state, caller, path_id(&id)?).await.map(axum::Json)
}

/// A performance with its counts, when `caller` may see its event.
pub async fn one(
    state: &AppState,
    caller: Option<Caller>,
    id: Uuid,
) -> Result<PerformanceView, ApiError> {
    let viewer = caller.map_or(Viewer::Anonymous, Caller::viewer);
    let now = state.clock().now();
    // Visitors and buyers may read it from a read replica; its organizer from the
    // primary, to see a change at once.
    let read = state.reads().as_viewer(viewer, |store| async move {
        let Some(performance) = store.performance(id.into()).await? else {
            return Ok(None);
        };
        let Some(event) = store.event(performance.event_id).await? else {
            return Ok(None);
        };
        let inventory = store.inventory(performance.id, now).await?;
        Ok(Some((performance, event, inventory)))
    });
    let (performance, event, inventory) = read
        .await?
        .filter(|(_, event, _)| viewer.sees(event))
        .ok_or(ApiError::NotFound)?;
    Ok(performance_view_of(performance, event.status, &inventory))
}

/// Edits a performance (its organizer or an admin): a new start, hold time, limit per
/// booking or on-sale time, or `status: "cancelled"`. Cancelling is final and works like
/// an event's cancellation: every hold is released and every confirmed booking refunded
/// through its provider with an email to its buyer, by a job that survives restarts;
/// `GET /v1/events/{id}/sales` shows its progress.
#[utoipa::path(patch, path = "/v1/performances/{id}", tag = "performances",
    params(("id" = Uuid, Path, description = "Performance id")),
    request_body = UpdatePerformanceRequest,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The changed performance", body = PerformanceView),
        (status = 401, description = "Not logged in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an organizer", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such performance among the caller's", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The performance or its event is cancelled", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields", body = Problem, content_type = "application/problem+json"),
    ))]
async fn update_performance(
    State(state): State<AppState>,
    caller: Caller,
    request: RequestId,
    Path(id): Path<String>,
    // Judged after the caller: no verdict on the body for those without the right.
    body: Result<Json<UpdatePerformanceRequest>, ApiError>,
) -> Result<axum::Json<PerformanceView>, ApiError> {
    let caller = caller.require_organizer()?;
    let (performance, event) = managed_performance(&state, caller, path_id(&id)?).await?;
    let Json(body) = body?;
    let now = state.clock().now();
    let patch = patch_of(body, &performance, now)?;
    if event.status == EventStatus::Cancelled {
        return Err(sale_cancelled("its event is cancelled"));
    }
    let audit = patch_audit(caller.audit(&request), &patch);
    let cancelling = patch.status.is_some();
    let updated =
        usher_app::catalog::update_performance(state.store(), performance.id, patch, now, &audit)
            .await?;
    state.performances().forget_event(event.id.uuid());
    let performance = match updated {
        PerformanceUpdate::Updated(performance) => performance,
        PerformanceUpdate::AlreadyCancelled => {
            return Err(sale_cancelled("this performance is cancelled"));
        }
        PerformanceUpdate::NoSuchPerformance => return Err(ApiError::NotFound),
    };
    if cancelling {
        tracing::info!(performance_id = %performance.id, "performance cancelled; refunds queued");
    }
    Ok(axum::Json(
        performance_view(&state, performance, event.status).await?,
    ))
}

/// The patch the body asks for, checked against the performance as it is; every
/// field's problem at once.
fn patch_of(
    body: UpdatePerformanceRequest,
    performance: &Performance,
    now: DateTime<Utc>,
) -> Result<PerformancePatch, ApiError> {
    let mut fields = Fields::new();
    let starts_at = body.starts_at.map(|t| t.trunc_subsecs(6));
    if starts_at.is_some_and(|t| t <= now) {
        fields.reject("starts_at", "a performance must start in the future");
    }
    let hold_ttl = fields.optional("hold_ttl_seconds", body.hold_ttl_seconds, HoldTtl::parse);
    let max_per_booking = fields.optional(
        "max_per_booking",
        body.max_per_booking,
        MaxPerBooking::parse,
    );
    let on_sale_at = body.on_sale_at.map(|t| t.map(|t| t.trunc_subsecs(6)));
    let starts = starts_at.unwrap_or(performance.starts_at);
    if on_sale_at.flatten().is_some_and(|t| t >= starts) {
        fields.reject("on_sale_at", "the sale opens before the performance starts");
    }
    if let (Some(Some(_)), Some(opened)) = (on_sale_at, performance.on_sale_at)
        && opened <= now
    {
        fields.reject(
            "on_sale_at",
            format!(
                "the sale opened at {}; it can no longer be moved",
                opened.to_rfc3339()
            ),
        );
    }
    let status = match body.status.as_deref() {
        None => None,
        Some("cancelled") => Some(PerformanceStatus::Cancelled),
        Some(_) => {
            fields.reject(
                "status",
                "a performance can only be cancelled (\"cancelled\"); it is final",
            );
            None
        }
    };
    fields.finish()?;
    let (Some(hold_ttl), Some(max_per_booking)) = (hold_ttl, max_per_booking) else {
        return Err(ApiError::Internal("validated fields missing".into()));
    };
    Ok(PerformancePatch {
        starts_at,
        hold_ttl,
        max_per_booking,
        on_sale_at,
        waiting_room: body.waiting_room.map(|w| w.enabled),
        status,
    })
}

/// The audit row's notes: every field the patch changes.
fn patch_audit(mut audit: usher_store::Audit, patch: &PerformancePatch) -> usher_store::Audit {
    if let Some(starts_at) = patch.starts_at {
        audit = audit.note("starts_at", starts_at.to_rfc3339());
    }
    if let Some(ttl) = patch.hold_ttl {
        audit = audit.note("hold_ttl_seconds", ttl.seconds());
    }
    if let Some(max) = patch.max_per_booking {
        audit = audit.note("max_per_booking", max.get());
    }
    if let Some(on_sale_at) = patch.on_sale_at {
        audit = audit.note("on_sale_at", on_sale_at.map(|t| t.to_rfc3339()));
    }
    if let Some(enabled) = patch.waiting_room {
        audit = audit.note("waiting_room", enabled);
    }
    if patch.status.is_some() {
        audit = audit.note("status", "cancelled");
    }
    audit
}

fn sale_cancelled(why: &str) -> ApiError {
    ApiError::Conflict {
        kind: "sale-cancelled",
        detail: format!("{why}; it cannot be changed"),
    }
}
