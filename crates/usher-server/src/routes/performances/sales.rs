//! What organizers read of a performance's sale: its attendees and the event's sales.

use super::*;

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_attendees))
        .routes(routes!(get_sales))
}

/// The attendee list: a performance's bookings with their buyers, newest first (the
/// organizer or an admin).
#[utoipa::path(get, path = "/v1/performances/{id}/bookings", tag = "performances",
    params(("id" = Uuid, Path, description = "Performance id"), AttendeeParams),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "A page of bookings with their buyers", body = AttendeePage),
        (status = 401, description = "Not logged in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an organizer", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such performance among the caller's", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Bad status, limit or cursor", body = Problem, content_type = "application/problem+json"),
    ))]
async fn list_attendees(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    params: Result<Query<AttendeeParams>, axum::extract::rejection::QueryRejection>,
) -> Result<axum::Json<AttendeePage>, ApiError> {
    let caller = caller.require_organizer()?;
    let id = path_id(&id)?;
    attendees(&state, caller, id, crate::extract::query(params))
        .await
        .map(axum::Json)
}

/// A page of the attendees of a performance `caller` manages; the parameters are
/// judged once that is known.
pub async fn attendees(
    state: &AppState,
    caller: Organizer,
    id: Uuid,
    params: Result<AttendeeParams, ApiError>,
) -> Result<AttendeePage, ApiError> {
    let (performance, _) = managed_performance(state, caller, id).await?;
    let params = params?;
    let mut fields = Fields::new();
    let limit = fields.take("limit", PageLimit::parse(params.limit));
    let after = fields.optional("cursor", params.cursor.as_deref(), Cursor::parse);
    let status = fields.optional("status", params.status.as_deref(), BookingStatus::parse);
    fields.finish()?;
    let (Some(limit), Some(after), Some(status)) = (limit, after, status) else {
        return Err(ApiError::Internal("validated fields missing".into()));
    };
    let now = state.clock().now();
    let page = state
        .store()
        .attendees(performance.id, status, now, limit, after)
        .await?;
    Ok(AttendeePage {
        items: page
            .items
            .into_iter()
            .map(|a| AttendeeView {
                booking: BookingView::new(state, a.booking, now),
                buyer: a.buyer.into(),
            })
            .collect(),
        next_cursor: page.next.map(Cursor::encode),
    })
}

/// Sales figures of every performance of an event (its organizer or an admin), with
/// how many of its tickets were checked in at the door.
#[utoipa::path(get, path = "/v1/events/{id}/sales", tag = "performances",
    params(("id" = Uuid, Path, description = "Event id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Sales per performance", body = EventSales),
        (status = 403, description = "Not an organizer", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such event among the caller's", body = Problem, content_type = "application/problem+json"),
    ))]
async fn get_sales(
    State(state): State<AppState>,
    caller: Caller,
    Path(event_id): Path<String>,
) -> Result<axum::Json<EventSales>, ApiError> {
    let caller = caller.require_organizer()?;
    sales(&state, caller, path_id(&event_id)?)
        .await
        .map(axum::Json)
}

/// The sales of every performance of an event `caller` manages.
pub async fn sales(
    state: &AppState,
    caller: Organizer,
    event_id: Uuid,
) -> Result<EventSales, ApiError> {
    let event = managed_event(state, caller, event_id).await?;
    let sales = state.store().sales(event.id, state.clock().now()).await?;
    let door = state.store().checkin_counts(event.id).await?;
    let performances = sales
        .into_iter()
        .map(|sales| {
            let mut view = PerformanceSalesView::from(sales);
            if let Some(count) = door
                .iter()
                .find(|c| c.performance_id == view.performance_id.into())
            {
                view.tickets = count.valid;
                view.checked_in = count.checked_in;
            }
            view
        })
        .collect();
    Ok(EventSales {
        event_id: event.id.uuid(),
        performances,
    })
}
