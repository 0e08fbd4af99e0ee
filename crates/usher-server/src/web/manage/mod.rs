//! Organizers' and admins' pages: the sales dashboard, events and their performances
//! (with a seating-plan builder), attendee lists, house seats, users and dead jobs.

use askama::Template;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::extract::{Admin, Organizer};
use crate::problem::{ApiError, FieldError};
use crate::routes;
use crate::routes::accounts::{RoleRequest, UserView};
use crate::routes::admin::{JobParams, JobView, UserParams};
use crate::routes::bookings::ListParams;
use crate::routes::box_office::{AuditEntryView, CreditRequest, MoneyRequest};
use crate::routes::events::{CreateEventRequest, EventView, UpdateEventRequest};
use crate::routes::performances::{
    AttendeeParams, CreatePerformanceRequest, PerformanceSalesView, PerformanceView, PriceRequest,
    RowRequest, SeatingRequest, SeatsRequest, SectionRequest, TicketTypeRequest, UnitStatesRequest,
};
use crate::web::api::{Refusal, Visit};
use crate::web::chart::{Bar, BarChart, SalesLine};
use crate::web::seat_map::SeatMapLayout;
use crate::web::{Chrome, CursorQuery, Form, PageError, PageResult, WebState, format, id, page};

mod admin;
mod dashboard;
mod events;
mod performances;

use admin::*;
use dashboard::*;
use events::*;
use performances::*;

pub fn router() -> Router<WebState> {
    Router::new()
        .route("/organizer", get(dashboard))
        .route("/organizer/events", post(create_event))
        .route("/organizer/events/new", get(new_event))
        .route("/organizer/events/{id}", get(edit_event).post(update_event))
        .route("/organizer/events/{id}/status", post(set_status))
        .route(
            "/organizer/events/{id}/performances",
            get(new_performance).post(create_performance),
        )
        .route("/organizer/performances/{id}", get(performance))
        .route("/organizer/performances/{id}/units", post(set_units))
        .route("/admin", get(admin))
        .route("/admin/users/{id}/role", post(set_role))
        .route("/admin/users/{id}/access", post(set_access))
        .route("/admin/jobs/{id}/retry", post(retry_job))
        .route("/admin/users/{id}/credit", post(credit))
        .route("/admin/audit", get(admin_audit))
        .route("/organizer/events/{id}/audit", get(event_audit))
}

/// Organizers and admins only; others are sent to sign in or told they may not.
fn organizer(visit: &Visit) -> Result<Organizer, PageError> {
    let caller = visit.caller.ok_or_else(|| PageError::sign_in(visit))?;
    caller.require_organizer().map_err(|_| {
        forbidden(
            visit,
            "these pages are for organizers; ask an admin to make your account one",
        )
    })
}

fn admin_only(visit: &Visit) -> Result<Admin, PageError> {
    let caller = visit.caller.ok_or_else(|| PageError::sign_in(visit))?;
    caller
        .require_admin()
        .map_err(|_| forbidden(visit, "this page is for admins"))
}

fn forbidden(visit: &Visit, detail: &str) -> PageError {
    PageError::refused(visit, Refusal::from_status(StatusCode::FORBIDDEN, detail))
}

fn refused(visit: &Visit) -> impl Fn(ApiError) -> PageError + '_ {
    move |r| PageError::refused(visit, r)
}

// ---------------------------------------------------------------- dashboard
