//! The waiting list of a sold-out performance and the waiting room of an on-sale.

use std::time::Duration;

use axum::Extension;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use usher_core::{Cursor, Performance, SeatingKind};
use usher_store::{
    InventoryCommand, QueueJoin, QueueJoined, QueueState, QueueTicket, WaitlistEntry, WaitlistJoin,
    WaitlistJoined, WaitlistStatus,
};

use crate::connections::ConnectionSlot;
use crate::extract::{Caller, Fields, Json, path_id, query};
use crate::problem::{ApiError, Problem};
use crate::routes::bookings::ListParams;
use crate::routes::performances::visible_performance;
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(join_waitlist))
        .routes(routes!(my_waitlist))
        .routes(routes!(leave_waitlist))
        .routes(routes!(join_queue))
        .routes(routes!(queue_ticket))
        .routes(routes!(queue_live))
}

// --- the waiting list -----------------------------------------------------------------

/// How many to wait for; `ticket_type_id` for general admission (reserved seating
/// waits for the best seats together).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WaitlistRequest {
    pub quantity: i64,
    pub ticket_type_id: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct WaitlistEntryView {
    pub id: Uuid,
    pub performance_id: Uuid,
    pub ticket_type_id: Option<Uuid>,
    pub quantity: u32,
    /// `waiting`, `offered` (a hold is made for you: `booking_id`, pay before
    /// `offer_expires_at`), `booked`, `lapsed` (the offer ran out) or `left`.
    #[schema(value_type = String, example = "waiting")]
    pub status: WaitlistStatus,
    /// Place in line (1: next), while waiting.
    pub position: Option<u64>,
    pub booking_id: Option<Uuid>,
    pub offer_expires_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

impl From<WaitlistEntry> for WaitlistEntryView {
    fn from(entry: WaitlistEntry) -> Self {
        Self {
            id: entry.id,
            performance_id: entry.performance_id.uuid(),
            ticket_type_id: entry.ticket_type_id.map(Uuid::from),
            quantity: entry.quantity,
            status: entry.status,
            position: entry.position,
            booking_id: entry.booking_id.map(Uuid::from),
            offer_expires_at: entry.offer_expires_at,
            created_at: entry.created_at,
        }
    }
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct WaitlistPage {
    pub items: Vec<WaitlistEntryView>,
    pub next_cursor: Option<String>,
}

/// What the body asks to wait for, checked against the performance: the ticket type
/// (general admission) or the seats (`None`); every field's problem at once.
fn waited_for(performance: &Performance, body: &WaitlistRequest) -> Result<Option<Uuid>, ApiError> {
    let mut fields = Fields::new();
    let max = performance.max_per_booking.get();
    if body.quantity < 1 || body.quantity > i64::from(max) {
        fields.reject(
            "quantity",
            format!("quantity is between 1 and {max} for this performance"),
        );
    }
    let ticket_type_id = match (performance.kind, body.ticket_type_id.as_deref()) {
        (SeatingKind::General, None) => {
            fields.reject(
                "ticket_type_id",
                "this performance is general admission: say which ticket type",
            );
            None
        }
        (SeatingKind::General, Some(raw)) => match Uuid::try_parse(raw) {
            Ok(id) if performance.ticket_types.iter().any(|t| t.id == id.into()) => Some(id),
            Ok(_) => {
                fields.reject("ticket_type_id", "this performance has no such ticket type");
                None
            }
            Err(_) => {
                fields.reject("ticket_type_id", "this is not a valid id");
                None
            }
        },
        (SeatingKind::Reserved, Some(_)) => {
            fields.reject(
                "ticket_type_id",
                "this performance has reserved seating: leave ticket_type_id out",
            );
            None
        }
        (SeatingKind::Reserved, None) => None,
    };
    fields.finish()?;
    Ok(ticket_type_id)
}

/// Joins the performance's waiting list, when what you ask cannot be had now. When
/// units come back they are offered in line order, a whole group at once, as a hold
/// made for you (`offer: true`) with an email. Joining again while waiting returns the
/// same entry (200).
#[utoipa::path(post, path = "/v1/performances/{id}/waitlist", tag = "waiting list",
    params(("id" = Uuid, Path, description = "Performance id")),
    request_body = WaitlistRequest,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "On the list", body = WaitlistEntryView),
        (status = 200, description = "Already on the list: that entry", body = WaitlistEntryView),
        (status = 404, description = "No such performance", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`/problems/not-sold-out`: enough units are free, hold them; `/problems/not-on-sale`: not on sale", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Bad quantity or ticket type", body = Problem, content_type = "application/problem+json"),
    ))]
async fn join_waitlist(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    body: Result<Json<WaitlistRequest>, ApiError>,
) -> Result<Response, ApiError> {
    let id = path_id(&id)?;
    let (status, entry) = join_list(&state, caller, id, body.map(|Json(body)| body)).await?;
    Ok((status, axum::Json(entry)).into_response())
}

/// Puts `caller` on the performance's waiting list (201), or finds them there (200);
/// the body is judged once the performance is known to be visible to them.
pub async fn join_list(
    state: &AppState,
    caller: Caller,
    id: Uuid,
    body: Result<WaitlistRequest, ApiError>,
) -> Result<(StatusCode, WaitlistEntryView), ApiError> {
    let (performance, _) = visible_performance(state, Some(caller), id).await?;
    let body = body?;
    let ticket_type_id = waited_for(&performance, &body)?;
    let join = WaitlistJoin {
        id: Uuid::now_v7(),
        user_id: caller.id.into(),
        performance_id: performance.id,
        ticket_type_id: ticket_type_id.map(Into::into),
        quantity: body.quantity as u32,
        now: state.clock().now(),
    };
    let joined = usher_app::waiting_list::join(state.store(), join).await?;
    match joined {
        WaitlistJoined::Joined(entry) => {
            metrics::counter!("usher_waitlist_joins_total").increment(1);
            tracing::info!(entry_id = %entry.id, performance_id = %performance.id, "joined the waiting list");
            Ok((StatusCode::CREATED, entry.into()))
        }
        WaitlistJoined::AlreadyWaiting(entry) => Ok((StatusCode::OK, entry.into())),
        WaitlistJoined::NotSoldOut { free } => Err(ApiError::Conflict {
            kind: "not-sold-out",
            detail: format!("{free} places are free for this request: hold them instead"),
        }),
        WaitlistJoined::NotOnSale => Err(ApiError::Conflict {
            kind: "not-on-sale",
            detail: "this performance is not on sale right now".into(),
        }),
        WaitlistJoined::NoSuchPerformance => Err(ApiError::NotFound),
        WaitlistJoined::WrongTicketType => Err(ApiError::validation(
            "ticket_type_id",
            "this performance has no such ticket type",
        )),
    }
}

/// Your waiting-list entries, newest first.
#[utoipa::path(get, path = "/v1/waitlist", tag = "waiting list",
    params(ListParams),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "A page of entries", body = WaitlistPage),
        (status = 422, description = "Bad limit or cursor", body = Problem, content_type = "application/problem+json"),
    ))]
async fn my_waitlist(
    State(state): State<AppState>,
    caller: Caller,
    params: Result<Query<ListParams>, axum::extract::rejection::QueryRejection>,
) -> Result<axum::Json<WaitlistPage>, ApiError> {
    entries(&state, caller, query(params)?)
        .await
        .map(axum::Json)
}

/// A page of `caller`'s waiting-list entries, newest first.
pub async fn entries(
    state: &AppState,
    caller: Caller,
    params: ListParams,
) -> Result<WaitlistPage, ApiError> {
    let (limit, after) = params.page()?;
    let page = state
        .store()
        .waitlist_of_user(caller.id.into(), state.clock().now(), limit, after)
        .await?;
    Ok(WaitlistPage {
        items: page.items.into_iter().map(Into::into).collect(),
        next_cursor: page.next.map(Cursor::encode),
    })
}

/// Leaves the waiting list. An open offer is turned down: its hold is released and
/// goes to the next in line.
#[utoipa::path(delete, path = "/v1/waitlist/{id}", tag = "waiting list",
    params(("id" = Uuid, Path, description = "Entry id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Left (or had already left)", body = WaitlistEntryView),
        (status = 404, description = "No such entry of yours", body = Problem, content_type = "application/problem+json"),
    ))]
async fn leave_waitlist(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<axum::Json<WaitlistEntryView>, ApiError> {
    leave_list(&state, caller, path_id(&id)?)
        .await
        .map(axum::Json)
}

/// Takes `caller` off the waiting list; an open offer goes to the next in line.
pub async fn leave_list(
    state: &AppState,
    caller: Caller,
    id: Uuid,
) -> Result<WaitlistEntryView, ApiError> {
    let now = state.clock().now();
    let store = state.store();
    let entry = store
        .waitlist_entry(id, now)
        .await?
        .filter(|e| e.user_id == caller.id.into())
        .ok_or(ApiError::NotFound)?;
    if matches!(
        entry.status,
        WaitlistStatus::Waiting | WaitlistStatus::Offered
    ) {
        store.waitlist_leave(entry.id, now).await?;
    }
    if entry.status == WaitlistStatus::Offered
        && let Some(booking_id) = entry.booking_id
    {
        // Turned down: the units go back, and the next in line is served.
        usher_app::inventory::execute(store, InventoryCommand::Cancel { booking_id, now }).await?;
    }
    let entry = store
        .waitlist_entry(entry.id, now)
        .await?
        .ok_or(ApiError::NotFound)?;
    tracing::info!(entry_id = %entry.id, "left the waiting list");
    Ok(entry.into())
}

// --- the waiting room -------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct QueueTicketView {
    pub ticket_id: Uuid,
    pub performance_id: Uuid,
    /// `waiting`, `admitted` (hold with `admission_token` in the `Usher-Admission`
    /// header) or `closed` (everything is sold).
    #[schema(value_type = String, example = "waiting")]
    pub state: QueueState,
    /// Places from the front (1: next); 0 once admitted or closed. Before the opening,
    /// the place in the draw among those here so far (the draw is final at the opening).
    pub position: u64,
    /// Seconds until admission at the pace so far (before the opening: until it);
    /// `null` while there is no pace to go by.
    pub eta_seconds: Option<u64>,
    /// Once admitted (on `GET`): the admission, valid until `admission_expires_at`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admission_token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admission_expires_at: Option<DateTime<Utc>>,
}

impl QueueTicketView {
    fn new(state: &AppState, ticket: &QueueTicket, with_token: bool) -> Result<Self, ApiError> {
        let now = state.clock().now();
        let admission = match (ticket.state, ticket.admitted_at, with_token) {
            (QueueState::Admitted, Some(at), true) => {
                let until = at + state.config().admission_ttl;
                let token = state.tokens().issue_admission(
                    ticket.user_id.uuid(),
                    ticket.performance_id.uuid(),
                    ticket.id,
                    until,
                )?;
                Some((token, until))
            }
            _ => None,
        };
        Ok(Self {
            ticket_id: ticket.id,
            performance_id: ticket.performance_id.uuid(),
            state: ticket.state,
            position: ticket.position,
            eta_seconds: match ticket.state {
                QueueState::Waiting => ticket.room.eta_seconds(ticket.position, now),
                _ => Some(0),
            },
            admission_expires_at: admission.as_ref().map(|(_, until)| *until),
            admission_token: admission.map(|(token, _)| token),
        })
    }
}

/// Joins the performance's waiting room. Everyone who joins before the sale opens
/// (`on_sale_at`) is put in random order at the opening, so arriving early gives no
/// edge; later arrivals queue in arrival order. Joining again returns the same ticket.
#[utoipa::path(post, path = "/v1/performances/{id}/queue", tag = "waiting room",
    params(("id" = Uuid, Path, description = "Performance id")),
    security(("bearer" = [])),
    responses(
        (status = 201, description = "In the queue", body = QueueTicketView),
        (status = 200, description = "Already in the queue: that ticket", body = QueueTicketView),
        (status = 404, description = "No such performance", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "`/problems/no-waiting-room`: this performance has no waiting room (or is not on sale)", body = Problem, content_type = "application/problem+json"),
    ))]
async fn join_queue(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let (status, ticket) = join_room(&state, caller, path_id(&id)?).await?;
    Ok((status, axum::Json(ticket)).into_response())
}

/// Puts `caller` in the performance's waiting room (201), or finds them there (200).
pub async fn join_room(
    state: &AppState,
    caller: Caller,
    id: Uuid,
) -> Result<(StatusCode, QueueTicketView), ApiError> {
    let (performance, _) = visible_performance(state, Some(caller), id).await?;
    let joined = state
        .waiting_room()
        .join(QueueJoin {
            ticket_id: Uuid::now_v7(),
            user_id: caller.id.into(),
            performance_id: performance.id,
            draw: random_draw()?,
            now: state.clock().now(),
        })
        .await?;
    match joined {
        QueueJoined::Joined(ticket) => Ok((
            StatusCode::CREATED,
            QueueTicketView::new(state, &ticket, false)?,
        )),
        QueueJoined::Again(ticket) => {
            Ok((StatusCode::OK, QueueTicketView::new(state, &ticket, false)?))
        }
        QueueJoined::NoSuchPerformance => Err(ApiError::NotFound),
        QueueJoined::NoWaitingRoom => Err(ApiError::Conflict {
            kind: "no-waiting-room",
            detail: "this performance has no waiting room (or is not on sale): hold directly"
                .into(),
        }),
    }
}

fn random_draw() -> Result<i64, ApiError> {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes)
        .map_err(|e| ApiError::Internal(format!("random source failed: {e}")))?;
    Ok(i64::from_le_bytes(bytes))
}

async fn own_ticket(state: &AppState, caller: Caller, id: Uuid) -> Result<QueueTicket, ApiError> {
    state
        .store()
        .queue_ticket(id)
        .await?
        .filter(|t| t.user_id == caller.id.into())
        .ok_or(ApiError::NotFound)
}

/// Your place in the queue; once admitted, with the admission to hold with.
#[utoipa::path(get, path = "/v1/queue/{ticket_id}", tag = "waiting room",
    params(("ticket_id" = Uuid, Path, description = "Queue ticket id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The ticket", body = QueueTicketView),
        (status = 404, description = "No such ticket of yours", body = Problem, content_type = "application/problem+json"),
    ))]
async fn queue_ticket(
    State(state): State<AppState>,
    caller: Caller,
    Path(ticket_id): Path<String>,
) -> Result<axum::Json<QueueTicketView>, ApiError> {
    place(&state, caller, path_id(&ticket_id)?)
        .await
        .map(axum::Json)
}

/// `caller`'s place in a waiting room; once admitted, with the admission.
pub async fn place(
    state: &AppState,
    caller: Caller,
    id: Uuid,
) -> Result<QueueTicketView, ApiError> {
    let ticket = own_ticket(state, caller, id).await?;
    QueueTicketView::new(state, &ticket, true)
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct QueueLiveParams {
    /// An access token, for clients that cannot set `Authorization` on a WebSocket.
    access_token: Option<String>,
}

/// Your place in the queue over a WebSocket: the ticket as `GET /v1/queue/{ticket_id}`
/// gives it (admission included) at once and whenever its state or position changes.
#[utoipa::path(get, path = "/v1/queue/{ticket_id}/live", tag = "waiting room",
    params(("ticket_id" = Uuid, Path, description = "Queue ticket id"), QueueLiveParams),
    responses(
        (status = 101, description = "Switching to the WebSocket protocol"),
        (status = 400, description = "Not a WebSocket upgrade request", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Not logged in", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such ticket of yours", body = Problem, content_type = "application/problem+json"),
    ))]
async fn queue_live(
    State(state): State<AppState>,
    caller: Option<Caller>,
    Path(ticket_id): Path<String>,
    Query(params): Query<QueueLiveParams>,
    slot: Option<Extension<ConnectionSlot>>,
    upgrade: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    let caller = match (caller, params.access_token) {
        (Some(caller), _) => caller,
        (None, Some(token)) => state.authorize(&token).await?,
        (None, None) => {
            return Err(ApiError::Unauthorized(
                "log in to follow your place in the queue",
            ));
        }
    };
    let ticket = own_ticket(&state, caller, path_id(&ticket_id)?).await?;
    Ok(upgrade
        .read_buffer_size(4 * 1024)
        .write_buffer_size(0)
        .max_message_size(crate::routes::live::MAX_INCOMING)
        .max_frame_size(crate::routes::live::MAX_INCOMING)
        .on_upgrade(move |socket| async move {
            follow(socket, state, ticket).await;
            drop(slot);
        }))
}

/// A send that takes longer than this means the client is not reading.
const SEND_DEADLINE: Duration = Duration::from_secs(10);
const PING_EVERY: Duration = Duration::from_secs(30);

async fn follow(mut socket: WebSocket, state: AppState, mut ticket: QueueTicket) {
    metrics::gauge!("usher_queue_connections").increment(1.0);
    let mut board = state.waiting_room().watch(ticket.performance_id.uuid());
    // What the client was last told: only a change of place or state is news.
    let mut told: Option<(QueueState, u64)> = None;
    let mut pings = tokio::time::interval(PING_EVERY);
    pings.tick().await;
    loop {
        if told != Some((ticket.state, ticket.position)) {
            let Ok(view) = QueueTicketView::new(&state, &ticket, true) else {
                break;
            };
            let Ok(text) = serde_json::to_string(&view) else {
                break;
            };
            let sent =
                tokio::time::timeout(SEND_DEADLINE, socket.send(Message::Text(text.into()))).await;
            if !matches!(sent, Ok(Ok(()))) {
                break;
            }
            told = Some((ticket.state, ticket.position));
        }
        tokio::select! {
            changed = board.changed() => {
                if changed.is_err() {
                    break;
                }
                let room = board.borrow_and_update().clone();
                let Some(room) = room else { continue };
                ticket = match ticket.in_room(&room) {
                    Some(ticket) => ticket,
                    None => match state.store().queue_ticket(ticket.id).await {
                        Ok(Some(fresh)) => fresh,
                        _ => break,
                    },
                };
            }
            message = socket.recv() => match message {
                Some(Ok(Message::Close(_))) | None => break,
                Some(Err(error)) => {
                    if let Some((code, reason)) = crate::routes::live::close_after(error) {
                        crate::routes::live::close(&mut socket, code, reason).await;
                    }
                    break;
                }
                Some(Ok(_)) => {}
            },
            _ = pings.tick() => {
                if socket.send(Message::Ping(Default::default())).await.is_err() {
                    break;
                }
            }
        }
    }
    metrics::gauge!("usher_queue_connections").decrement(1.0);
}
