//! Events: organizers create and change their own; everyone browses published ones.
//! An event the caller may not see answers 404, never 403, so its existence does not
//! leak across tenants.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use usher_core::{
    Cursor, Event, EventAttributes, EventStatus, EventText, EventTitle, PageLimit, Viewer,
};
use usher_store::{EventPatch, EventQuery, EventScope, NewEvent};

use crate::extract::{Caller, Fields, Json, Organizer, RequestId, path_id};
use crate::problem::{ApiError, Problem};
use crate::routes::performances::PerformanceSummary;
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_event, list_events))
        .routes(routes!(get_event, update_event))
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct EventView {
    pub id: Uuid,
    pub organizer_id: Uuid,
    pub title: String,
    pub description: String,
    pub venue: String,
    /// Free-form details (genre, age limit, line-up …) as the organizer gave them.
    #[schema(value_type = Object)]
    pub attributes: serde_json::Value,
    #[schema(value_type = String, example = "published")]
    pub status: EventStatus,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<Event> for EventView {
    fn from(event: Event) -> Self {
        Self {
            id: event.id.uuid(),
            organizer_id: event.organizer_id.uuid(),
            title: event.title.as_str().into(),
            description: event.description.as_str().into(),
            venue: event.venue.as_str().into(),
            attributes: event.attributes.as_value().clone(),
            status: event.status,
            created_at: event.created_at,
            updated_at: event.updated_at,
        }
    }
}

/// An event with its performances, as `GET /v1/events/{id}` answers.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct EventDetail {
    #[serde(flatten)]
    pub event: EventView,
    /// Soonest first, with how many places are free now.
    pub performances: Vec<PerformanceSummary>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct EventPage {
    pub items: Vec<EventView>,
    /// Pass as `cursor` to get the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateEventRequest {
    #[schema(example = "Jazz on the Roof")]
    pub title: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    #[schema(example = "Skyline Hall, Berlin")]
    pub venue: String,
    #[schema(value_type = Option<Object>)]
    pub attributes: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateEventRequest {
    pub title: Option<String>,
    pub description: Option<String>,
    pub venue: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub attributes: Option<serde_json::Value>,
    /// `draft`, `published` or `cancelled`. Cancelling is final.
    pub status: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Case-insensitive text to find in titles.
    pub q: Option<String>,
    /// Page size, 1–100 (default 20).
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// `true`: only the caller's own events, drafts and cancelled ones included
    /// (organizers and admins).
    pub mine: Option<bool>,
}

const SEARCH_MAX_CHARS: usize = 200;

/// Creates a draft event owned by the caller (organizers and admins).
#[utoipa::path(post, path = "/v1/events", tag = "events",
    request_body = CreateEventRequest,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Draft event created", body = EventView),
        (status = 403, description = "Not an organizer", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields", body = Problem, content_type = "application/problem+json"),
    ))]
async fn create_event(
    State(state): State<AppState>,
    caller: Caller,
    request: RequestId,
    // Judged after the caller: no verdict on the body for those without the right.
    body: Result<Json<CreateEventRequest>, ApiError>,
) -> Result<impl IntoResponse, ApiError> {
    let caller = caller.require_organizer()?;
    let Json(body) = body?;
    let event = create(&state, caller, &request, body).await?;
    Ok((StatusCode::CREATED, axum::Json(event)))
}

/// Creates a draft event owned by `caller` (an organizer or an admin).
pub async fn create(
    state: &AppState,
    caller: Organizer,
    request: &RequestId,
    body: CreateEventRequest,
) -> Result<EventView, ApiError> {
    let mut fields = Fields::new();
    let title = fields.take("title", EventTitle::parse(&body.title));
    let description = fields.take(
        "description",
        EventText::parse(&body.description, EventText::DESCRIPTION_MAX_CHARS),
    );
    let venue = fields.take(
        "venue",
        EventText::parse(&body.venue, EventText::VENUE_MAX_CHARS),
    );
    let attributes = fields.optional("attributes", body.attributes, EventAttributes::parse);
    fields.finish()?;
    let (Some(title), Some(description), Some(venue), Some(attributes)) =
        (title, description, venue, attributes)
    else {
        return Err(ApiError::Internal("validated fields missing".into()));
    };
    let event = state
        .store()
        .create_event(
            NewEvent {
                organizer_id: caller.id.into(),
                title,
                description,
                venue,
                attributes: attributes.unwrap_or_else(EventAttributes::empty),
            },
            &caller.audit(request),
        )
        .await?;
    tracing::info!(event_id = %event.id, "event created");
    Ok(EventView::from(event))
}

/// Lists events, newest first: published ones for everyone, plus the caller's own
/// drafts and cancelled events for organizers (admins see all). With `mine=true`, only
/// the caller's own events (an organizer's dashboard).
#[utoipa::path(get, path = "/v1/events", tag = "events",
    params(ListParams),
    responses(
        (status = 200, description = "A page of events", body = EventPage),
        (status = 401, description = "`mine=true` without a token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "`mine=true` from a customer", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Bad limit or cursor", body = Problem, content_type = "application/problem+json"),
    ))]
async fn list_events(
    State(state): State<AppState>,
    caller: Option<Caller>,
    params: Result<Query<ListParams>, axum::extract::rejection::QueryRejection>,
) -> Result<axum::Json<EventPage>, ApiError> {
    let Query(params) = params.map_err(|e| ApiError::validation("query", e.body_text()))?;
    list(&state, caller, params).await.map(axum::Json)
}

/// A page of the events `caller` may see (see [`list_events`]).
pub async fn list(
    state: &AppState,
    caller: Option<Caller>,
    params: ListParams,
) -> Result<EventPage, ApiError> {
    let mut fields = Fields::new();
    let limit = fields.take("limit", PageLimit::parse(params.limit));
    let after = fields.optional("cursor", params.cursor.as_deref(), Cursor::parse);
    let q = params
        .q
        .map(|q| q.trim().to_owned())
        .filter(|q| !q.is_empty());
    if q.as_ref()
        .is_some_and(|q| q.chars().count() > SEARCH_MAX_CHARS)
    {
        fields.reject(
            "q",
            format!("search text has at most {SEARCH_MAX_CHARS} characters"),
        );
    }
    // PostgreSQL text cannot hold NUL; no search needs control characters.
    if q.as_ref().is_some_and(|q| q.chars().any(char::is_control)) {
        fields.reject("q", "search text may not contain control characters");
    }
    fields.finish()?;
    let (Some(limit), Some(after)) = (limit, after) else {
        return Err(ApiError::Internal("validated fields missing".into()));
    };
    let scope = match caller.map(Caller::viewer) {
        _ if params.mine == Some(true) => {
            let caller = caller
                .ok_or(ApiError::Unauthorized(
                    "`mine=true` needs `Authorization: Bearer <access_token>`",
                ))?
                .require_organizer()?;
            EventScope::OwnedBy(caller.id)
        }
        Some(Viewer::Admin(_)) => EventScope::All,
        Some(Viewer::Organizer(id)) => EventScope::PublicAndOwnedBy(id.uuid()),
        _ => EventScope::Public,
    };
    let query = EventQuery {
        scope,
        title_contains: q,
        limit,
        after,
    };
    // The public list may come from a read replica; a list with the caller's own
    // events (drafts included) comes from the primary, so a change shows at once.
    let read = |store: std::sync::Arc<dyn usher_store::Store>| {
        let query = query.clone();
        async move { store.list_events(query).await }
    };
    let page = match query.scope {
        EventScope::Public => state.reads().public(read).await?,
        _ => read(state.store_arc()).await?,
    };
    Ok(EventPage {
        items: page.items.into_iter().map(EventView::from).collect(),
        next_cursor: page.next.map(Cursor::encode),
    })
}

/// One event with its performances. Drafts are visible only to their organizer and
/// admins.
#[utoipa::path(get, path = "/v1/events/{id}", tag = "events",
    params(("id" = Uuid, Path, description = "Event id")),
    responses(
        (status = 200, description = "The event", body = EventDetail),
        (status = 404, description = "No such event, or not visible to the caller", body = Problem, content_type = "application/problem+json"),
    ))]
async fn get_event(
    State(state): State<AppState>,
    caller: Option<Caller>,
    Path(id): Path<String>,
) -> Result<axum::Json<EventDetail>, ApiError> {
    detail(&state, caller, path_id(&id)?).await.map(axum::Json)
}

/// One event with its performances, when `caller` may see it.
pub async fn detail(
    state: &AppState,
    caller: Option<Caller>,
    id: Uuid,
) -> Result<EventDetail, ApiError> {
    let viewer = caller.map_or(Viewer::Anonymous, Caller::viewer);
    let now = state.clock().now();
    // Visitors and buyers may read it from a read replica; its organizer from the
    // primary, to see a change at once.
    let read = state.reads().as_viewer(viewer, |store| async move {
        let Some(event) = store.event(id.into()).await? else {
            return Ok(None);
        };
        let performances = store.performances_of_event(id.into()).await?;
        // One query counts every performance of the event.
        let sales = store.sales(id.into(), now).await?;
        Ok(Some((event, performances, sales)))
    });
    let (event, performances, sales) = read.await?.ok_or(ApiError::NotFound)?;
    if !viewer.sees(&event) {
        return Err(ApiError::NotFound);
    }
    let performances = performances
        .into_iter()
        .map(|p| {
            let counts = sales
                .iter()
                .find(|s| s.performance_id == p.id)
                .map(|s| s.counts)
                .unwrap_or_default();
            PerformanceSummary {
                id: p.id.uuid(),
                starts_at: p.starts_at,
                kind: p.kind,
                capacity: counts.capacity,
                available: counts.available,
            }
        })
        .collect();
    Ok(EventDetail {
        event: event.into(),
        performances,
    })
}

/// The event, when `caller` may see it (without its performances).
pub async fn visible(
    state: &AppState,
    caller: Option<Caller>,
    id: Uuid,
) -> Result<EventView, ApiError> {
    let viewer = caller.map_or(Viewer::Anonymous, Caller::viewer);
    let event = state
        .store()
        .event(id.into())
        .await?
        .filter(|event| viewer.sees(event))
        .ok_or(ApiError::NotFound)?;
    Ok(event.into())
}

/// Changes an event (its organizer or an admin). Fields left out stay as they are.
#[utoipa::path(patch, path = "/v1/events/{id}", tag = "events",
    params(("id" = Uuid, Path, description = "Event id")),
    request_body = UpdateEventRequest,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The changed event", body = EventView),
        (status = 403, description = "Not an organizer", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such event among the caller's", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid fields or status change", body = Problem, content_type = "application/problem+json"),
    ))]
async fn update_event(
    State(state): State<AppState>,
    caller: Caller,
    request: RequestId,
    Path(id): Path<String>,
    // Judged after the caller and the event: no verdict on the body for those without
    // the right.
    body: Result<Json<UpdateEventRequest>, ApiError>,
) -> Result<axum::Json<EventView>, ApiError> {
    let caller = caller.require_organizer()?;
    let id = path_id(&id)?;
    update(&state, caller, &request, id, body.map(|Json(body)| body))
        .await
        .map(axum::Json)
}

/// Changes an event `caller` manages; the body is judged only once that is known.
pub async fn update(
    state: &AppState,
    caller: Organizer,
    request: &RequestId,
    id: Uuid,
    body: Result<UpdateEventRequest, ApiError>,
) -> Result<EventView, ApiError> {
    let event = state
        .store()
        .event(id.into())
        .await?
        .ok_or(ApiError::NotFound)?;
    if !caller.viewer().manages(&event) {
        return Err(ApiError::NotFound);
    }
    let body = body?;
    let mut fields = Fields::new();
    let title = fields.optional("title", body.title.as_deref(), EventTitle::parse);
    let description = fields.optional("description", body.description.as_deref(), |d| {
        EventText::parse(d, EventText::DESCRIPTION_MAX_CHARS)
    });
    let venue = fields.optional("venue", body.venue.as_deref(), |v| {
        EventText::parse(v, EventText::VENUE_MAX_CHARS)
    });
    let attributes = fields.optional("attributes", body.attributes, EventAttributes::parse);
    let status = fields.optional("status", body.status.as_deref(), EventStatus::parse);
    fields.finish()?;
    let (Some(title), Some(description), Some(venue), Some(attributes), Some(status)) =
        (title, description, venue, attributes, status)
    else {
        return Err(ApiError::Internal("validated fields missing".into()));
    };
    let patch = EventPatch {
        title,
        description,
        venue,
        attributes,
        status,
    };
    let changed: Vec<&str> = [
        ("title", patch.title.is_some()),
        ("description", patch.description.is_some()),
        ("venue", patch.venue.is_some()),
        ("attributes", patch.attributes.is_some()),
        ("status", patch.status.is_some()),
    ]
    .into_iter()
    .filter_map(|(name, set)| set.then_some(name))
    .collect();
    let audit = caller.audit(request).note("changed", changed);
    let updated = usher_app::catalog::update_event(
        state.store(),
        id.into(),
        patch,
        state.clock().now(),
        &audit,
    )
    .await?
    .ok_or(ApiError::NotFound)?;
    state.performances().forget_event(id);
    if updated.status != event.status {
        tracing::info!(event_id = %id, from = %event.status, to = %updated.status, "event status changed");
    }
    Ok(updated.into())
}
