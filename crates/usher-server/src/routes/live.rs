//! `GET /v1/performances/{id}/live`: a performance's seat map over a WebSocket, a
//! snapshot first and then every change, numbered without gaps (see [`crate::live`]).

use std::time::Duration;

use axum::Extension;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::response::Response;
use serde::Deserialize;
use tokio::sync::broadcast::error::RecvError;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::connections::ConnectionSlot;
use crate::extract::{Caller, path_id};
use crate::live::{Frame, Watch};
use crate::problem::{ApiError, Problem};
use crate::routes::performances::visible_performance;
use crate::state::AppState;

/// A send that takes longer than this means the client is not reading.
const SEND_DEADLINE: Duration = Duration::from_secs(10);
/// A ping this often keeps proxies from closing an idle socket and finds dead peers.
const PING_EVERY: Duration = Duration::from_secs(30);
/// Close code for a watcher that fell behind (IANA: 1013, try again later).
const TOO_SLOW: u16 = 1013;
/// Close code when the feed restarts under a watcher (IANA: 1012, service restart).
const RESTART: u16 = 1012;
/// Close code: a message or frame over the size limit (RFC 6455).
const TOO_BIG: u16 = 1009;
/// Close code: the client broke the protocol.
const PROTOCOL_ERROR: u16 = 1002;
/// The largest message (and frame) a client may send on Usher's sockets.
pub const MAX_INCOMING: usize = 64 * 1024;

/// How to close a socket whose read failed: 1009 with a reason for a message or frame
/// over [`MAX_INCOMING`] (announced or sent), 1002 for a protocol error; nothing when the
/// connection itself is gone.
pub fn close_after(error: axum::Error) -> Option<(u16, &'static str)> {
    let inner = error.into_inner();
    match inner.downcast_ref::<tungstenite::Error>()? {
        tungstenite::Error::Capacity(_) => {
            Some((TOO_BIG, "message too big: at most 64 KiB per message"))
        }
        tungstenite::Error::Protocol(_) | tungstenite::Error::Utf8(_) => {
            Some((PROTOCOL_ERROR, "protocol error"))
        }
        _ => None,
    }
}

/// Sends a close frame (briefly: a client that does not read gets none).
pub async fn close(socket: &mut WebSocket, code: u16, reason: &'static str) {
    let _ = tokio::time::timeout(
        Duration::from_secs(1),
        socket.send(Message::Close(Some(CloseFrame {
            code,
            reason: reason.into(),
        }))),
    )
    .await;
}

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(live))
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct LiveParams {
    /// An access token, for clients that cannot set `Authorization` on a WebSocket
    /// (browsers); only needed for events that are not public.
    access_token: Option<String>,
}

/// Live availability: a WebSocket. The first message is
/// `{type:"snapshot", performance_id, seq, available, held, sold, units:[{unit_id, state}]}`
/// (general admission: `ticket_types:[{id, available}]` instead of units); after every
/// change `{type:"units", performance_id, seq, changes:[{unit_id, state}], available,
/// held, sold}` (general admission adds `ticket_types`). `seq` rises by one per change:
/// a client that sees a gap reconnects for a new snapshot. A client too slow to read is
/// closed with code 1013.
#[utoipa::path(get, path = "/v1/performances/{id}/live", tag = "performances",
    params(("id" = uuid::Uuid, Path, description = "Performance id"), LiveParams),
    responses(
        (status = 101, description = "Switching to the WebSocket protocol"),
        (status = 400, description = "Not a WebSocket upgrade request", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such performance, or its event is not visible", body = Problem, content_type = "application/problem+json"),
    ))]
async fn live(
    State(state): State<AppState>,
    caller: Option<Caller>,
    Path(id): Path<String>,
    Query(params): Query<LiveParams>,
    slot: Option<Extension<ConnectionSlot>>,
    upgrade: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    let caller = match (caller, params.access_token) {
        (Some(caller), _) => Some(caller),
        (None, Some(token)) => Some(state.authorize(&token).await?),
        (None, None) => None,
    };
    let (performance, _) = visible_performance(&state, caller, path_id(&id)?).await?;
    let watch = state
        .live()
        .watch(performance.id.uuid())
        .await?
        .ok_or(ApiError::NotFound)?;
    Ok(upgrade
        // Watchers only ever send control frames: small buffers keep thousands cheap.
        .read_buffer_size(4 * 1024)
        .write_buffer_size(0)
        .max_write_buffer_size(4 * 1024 * 1024)
        .max_message_size(MAX_INCOMING)
        .max_frame_size(MAX_INCOMING)
        // The socket keeps its connection's slot while it is open.
        .on_upgrade(move |socket| async move {
            serve(socket, watch).await;
            drop(slot);
        }))
}

async fn serve(mut socket: WebSocket, watch: Watch) {
    metrics::gauge!("usher_live_connections").increment(1.0);
    let ended = relay(&mut socket, watch).await;
    if let Some((code, reason)) = ended {
        close(&mut socket, code, reason).await;
    }
    metrics::gauge!("usher_live_connections").decrement(1.0);
}

/// Sends the snapshot and then each change; returns how to close, if at all.
async fn relay(socket: &mut WebSocket, watch: Watch) -> Option<(u16, &'static str)> {
    let Watch {
        snapshot,
        mut frames,
    } = watch;
    let mut last = snapshot.seq;
    if !send(socket, &snapshot).await {
        return None;
    }
    let mut pings = tokio::time::interval(PING_EVERY);
    pings.tick().await;
    loop {
        tokio::select! {
            frame = frames.recv() => match frame {
                Ok(frame) if frame.seq <= last => {}
                Ok(frame) => {
                    if frame.seq != last + 1 {
                        // Cannot happen while the hub delivers in order; if it does,
                        // the client must start over rather than miss a change.
                        return Some((RESTART, "gap in the feed; reconnect"));
                    }
                    last = frame.seq;
                    if !send(socket, &frame).await {
                        metrics::counter!("usher_live_slow_disconnects_total").increment(1);
                        return Some((TOO_SLOW, "too slow to read; reconnect"));
                    }
                }
                Err(RecvError::Lagged(_)) => {
                    metrics::counter!("usher_live_slow_disconnects_total").increment(1);
                    return Some((TOO_SLOW, "too slow to read; reconnect"));
                }
                Err(RecvError::Closed) => return Some((RESTART, "feed restarted; reconnect")),
            },
            incoming = socket.recv() => match incoming {
                // Pings are answered by the protocol layer; text from a watcher means
                // nothing and is ignored.
                Some(Ok(Message::Close(_))) | None => return None,
                Some(Err(error)) => return close_after(error),
                Some(Ok(_)) => {}
            },
            _ = pings.tick() => {
                if tokio::time::timeout(SEND_DEADLINE, socket.send(Message::Ping(Default::default())))
                    .await
                    .map_or(true, |r| r.is_err())
                {
                    return None;
                }
            }
        }
    }
}

async fn send(socket: &mut WebSocket, frame: &Frame) -> bool {
    matches!(
        tokio::time::timeout(
            SEND_DEADLINE,
            socket.send(Message::Text(frame.text.clone()))
        )
        .await,
        Ok(Ok(()))
    )
}
