//! A performance's units: house seats blocked and unblocked, and the seat map.

use super::*;

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_seats))
        .routes(routes!(set_unit_states))
}

/// Blocks units (house seats, broken seats) or makes blocked units available again
/// (the organizer or an admin). All or nothing: if any named unit is held or sold,
/// nothing changes and the answer is 409 with `unavailable_unit_ids`.
#[utoipa::path(patch, path = "/v1/performances/{id}/units", tag = "performances",
    params(("id" = Uuid, Path, description = "Performance id")),
    request_body = UnitStatesRequest,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Changed", body = UnitStatesChanged),
        (status = 401, description = "Not logged in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an organizer", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such performance among the caller's", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Some units are held or sold (listed in `unavailable_unit_ids`); nothing changed", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Bad ids, unknown units or state", body = Problem, content_type = "application/problem+json"),
    ))]
async fn set_unit_states(
    State(state): State<AppState>,
    caller: Caller,
    request: RequestId,
    Path(id): Path<String>,
    // Judged after the caller: no verdict on the body for those without the right.
    body: Result<Json<UnitStatesRequest>, ApiError>,
) -> Result<axum::Json<UnitStatesChanged>, ApiError> {
    let caller = caller.require_organizer()?;
    let id = path_id(&id)?;
    set_states(&state, caller, &request, id, body.map(|Json(body)| body))
        .await
        .map(axum::Json)
}

/// Blocks or frees units of a performance `caller` manages, all or nothing; the body
/// is judged once that is known.
pub async fn set_states(
    state: &AppState,
    caller: Organizer,
    request: &RequestId,
    id: Uuid,
    body: Result<UnitStatesRequest, ApiError>,
) -> Result<UnitStatesChanged, ApiError> {
    let (performance, _) = managed_performance(state, caller, id).await?;
    let body = body?;
    let mut fields = Fields::new();
    let blocked = match body.state.as_str() {
        "blocked" => Some(true),
        "available" => Some(false),
        _ => {
            fields.reject("state", "state is \"blocked\" or \"available\"");
            None
        }
    };
    if body.unit_ids.is_empty() || body.unit_ids.len() > MAX_UNITS_PER_CHANGE {
        fields.reject(
            "unit_ids",
            format!("name between 1 and {MAX_UNITS_PER_CHANGE} units"),
        );
    }
    let unit_ids = fields.ids("unit_ids", &body.unit_ids);
    fields.finish()?;
    let Some(blocked) = blocked else {
        return Err(ApiError::Internal("validated state missing".into()));
    };
    let outcome = usher_app::inventory::execute(
        state.store(),
        InventoryCommand::SetBlocked {
            performance_id: performance.id,
            unit_ids: unit_ids.into_iter().map(Into::into).collect(),
            blocked,
            now: state.clock().now(),
            audit: caller.audit(request),
        },
    )
    .await?;
    match outcome {
        CommandOutcome::BlockingChanged { changed } => {
            tracing::info!(performance_id = %performance.id, blocked, changed, "unit states changed");
            Ok(UnitStatesChanged { changed })
        }
        CommandOutcome::Unavailable { unit_ids } => Err(ApiError::UnitsTaken {
            detail: format!(
                "{} of the named units are held or sold; nothing changed",
                unit_ids.len()
            ),
            unit_ids: unit_ids.into_iter().map(Uuid::from).collect(),
        }),
        CommandOutcome::UnknownUnits { unit_ids } => Err(unknown_units(&unit_ids)),
        other => Err(ApiError::Internal(format!(
            "unexpected blocking outcome {other:?}"
        ))),
    }
}

/// Every unit of a performance with its state, in seat-map order.
#[utoipa::path(get, path = "/v1/performances/{id}/seats", tag = "performances",
    params(("id" = Uuid, Path, description = "Performance id")),
    responses(
        (status = 200, description = "The seat map (with a strong `ETag`; rebuilt at most every `USHER_SEAT_MAP_MAX_AGE_MS`)", body = SeatMap),
        (status = 304, description = "Not modified since the `ETag` in `If-None-Match`"),
        (status = 404, description = "No such performance, or its event is not visible", body = Problem, content_type = "application/problem+json"),
    ))]
async fn get_seats(
    State(state): State<AppState>,
    caller: Option<Caller>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let built = built_seat_map(&state, caller, path_id(&id)?).await?;
    let if_none_match = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok());
    let status = if seat_maps::matches(if_none_match, &built.etag) {
        StatusCode::NOT_MODIFIED
    } else {
        StatusCode::OK
    };
    let etag = HeaderValue::from_str(&built.etag)
        .map_err(|_| ApiError::Internal("seat map etag".into()))?;
    let mut response = if status == StatusCode::NOT_MODIFIED {
        status.into_response()
    } else {
        (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            built.body,
        )
            .into_response()
    };
    let headers = response.headers_mut();
    headers.insert(header::ETAG, etag);
    // Always ask again; the ETag makes asking again cheap.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Ok(response)
}

/// The seat map as a page draws it: the shared, already built document (the same
/// bytes `GET /v1/performances/{id}/seats` sends), read back into units.
pub async fn seat_map(
    state: &AppState,
    caller: Option<Caller>,
    id: Uuid,
) -> Result<SeatMap, ApiError> {
    let built = built_seat_map(state, caller, id).await?;
    serde_json::from_slice(&built.body).map_err(|e| ApiError::Internal(format!("seat map: {e}")))
}

/// The performance's seat map from the instance's cache (rebuilt at most every
/// `USHER_SEAT_MAP_MAX_AGE_MS`), when `caller` may see it.
async fn built_seat_map(
    state: &AppState,
    caller: Option<Caller>,
    id: Uuid,
) -> Result<seat_maps::Built, ApiError> {
    let (performance, _) = hot_performance(state, caller, id).await?;
    let viewer = caller.map_or(Viewer::Anonymous, Caller::viewer);
    state
        .seat_maps()
        .get_or_build(
            performance.id.uuid(),
            state.config().seat_map_max_age,
            || async {
                // Built for a visitor or a buyer, it may be read from a read replica
                // (it is kept up to the max age anyway); for its organizer, from the
                // primary.
                let now = state.clock().now();
                let units = state
                    .reads()
                    .as_viewer(viewer, |store| async move {
                        store.units(performance.id, now).await
                    })
                    .await?;
                seat_map_document(performance.id.uuid(), units)
                    .map(Bytes::from)
                    .map_err(|e| ApiError::Internal(format!("seat map: {e}")))
            },
        )
        .await
}

/// The JSON of [`SeatMap`], written as the units are turned into views one at a time
/// into a buffer sized for it up front (from the first unit's size, an eighth over): a
/// stadium's map is tens of megabytes, and neither a second copy of its units nor a
/// buffer that doubles as it grows is kept while it is written.
fn seat_map_document(performance_id: Uuid, units: Vec<Unit>) -> serde_json::Result<Vec<u8>> {
    use serde::ser::{SerializeStruct, Serializer};
    use std::cell::RefCell;

    /// The units, turned into views as the serializer reaches them.
    struct Views(RefCell<Option<std::vec::IntoIter<Unit>>>);

    impl Serialize for Views {
        fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
            let units = self.0.borrow_mut().take().unwrap_or_default();
            serializer.collect_seq(units.map(UnitView::from))
        }
    }

    let per_unit = match units.first() {
        Some(unit) => serde_json::to_vec(&UnitView::from(unit.clone()))?.len() + 1,
        None => 0,
    };
    let mut out = Vec::with_capacity(64 + per_unit * units.len() / 8 * 9);
    let mut serializer = serde_json::Serializer::new(&mut out);
    let mut map = serializer.serialize_struct("SeatMap", 2)?;
    map.serialize_field("performance_id", &performance_id)?;
    map.serialize_field("units", &Views(RefCell::new(Some(units.into_iter()))))?;
    map.end()?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seat_map_document_is_the_seat_map_serialized() {
        let performance_id = Uuid::now_v7();
        let unit = |state, label: &str| Unit {
            id: usher_core::UnitId::generate(),
            section: Some("Stalls \"A\"".into()),
            row: Some("B".into()),
            label: Some(label.into()),
            ticket_type_id: None,
            price: usher_core::Money::new(2500, usher_core::Currency::parse("EUR").unwrap()),
            state,
        };
        let units = vec![
            unit(usher_core::UnitState::Available, "1"),
            unit(usher_core::UnitState::Held, "2"),
        ];
        let expected = serde_json::to_vec(&SeatMap {
            performance_id,
            units: units.clone().into_iter().map(UnitView::from).collect(),
        })
        .unwrap();
        assert_eq!(seat_map_document(performance_id, units).unwrap(), expected);
        let empty = serde_json::to_vec(&SeatMap {
            performance_id,
            units: Vec::new(),
        })
        .unwrap();
        assert_eq!(
            seat_map_document(performance_id, Vec::new()).unwrap(),
            empty
        );
    }
}
