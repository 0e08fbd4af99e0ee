//! Creating and editing events, and moving them through their statuses.

use super::*;

#[derive(Template)]
#[template(path = "manage/event.html")]
pub(super) struct EventForm {
    pub(super) chrome: Chrome,
    /// None while creating.
    pub(super) event: Option<EventView>,
    pub(super) title: String,
    pub(super) venue: String,
    pub(super) description: String,
    pub(super) details: String,
    pub(super) performances: Vec<SalesRow>,
    /// The latest changes to the event (none while creating).
    pub(super) audit: Vec<AuditLine>,
    pub(super) problem: Option<String>,
    pub(super) errors: Vec<FieldError>,
    pub(super) notice: Option<String>,
}

impl EventForm {
    fn error_for(&self, field: &str) -> Option<String> {
        self.errors
            .iter()
            .find(|e| e.field == field)
            .map(|e| format::sentence(&e.message))
    }
}

pub(super) async fn new_event(State(web): State<WebState>, visit: Visit) -> PageResult {
    organizer(&visit)?;
    let view = EventForm {
        chrome: Chrome::of(&visit),
        event: None,
        title: String::new(),
        venue: String::new(),
        description: String::new(),
        details: String::new(),
        performances: vec![],
        audit: vec![],
        problem: None,
        errors: vec![],
        notice: None,
    };
    Ok(page(&view, StatusCode::OK, web.form_targets))
}

/// "genre: jazz" lines become the event's free-form attributes.
pub(super) fn parse_details(text: &str) -> Result<Map<String, Value>, String> {
    let mut map = Map::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let Some((key, value)) = line.split_once(':') else {
            return Err(format!(
                "line {} of the details has no colon; write them as “name: value”",
                i + 1
            ));
        };
        let key = key.trim().to_lowercase().replace(' ', "_");
        if key.is_empty() {
            return Err(format!("line {} of the details has no name", i + 1));
        }
        map.insert(key, Value::String(value.trim().to_owned()));
    }
    Ok(map)
}

pub(super) fn details_text(attributes: &Value) -> String {
    match attributes {
        Value::Object(map) => map
            .iter()
            .map(|(k, v)| match v {
                Value::String(s) => format!("{}: {s}", k.replace('_', " ")),
                other => format!("{}: {other}", k.replace('_', " ")),
            })
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

pub(super) fn event_form_from(visit: &Visit, form: &Form, event: Option<EventView>) -> EventForm {
    EventForm {
        chrome: Chrome::of(visit),
        event,
        title: form.text("title"),
        venue: form.text("venue"),
        description: form.text("description"),
        details: form.text("details"),
        performances: vec![],
        audit: vec![],
        problem: None,
        errors: vec![],
        notice: None,
    }
}

/// The event the form describes, as a new event's request.
pub(super) fn event_body(form: &Form) -> Result<CreateEventRequest, String> {
    let details = parse_details(&form.text("details"))?;
    Ok(CreateEventRequest {
        title: form.text("title"),
        venue: form.text("venue"),
        description: form.text("description"),
        attributes: Some(Value::Object(details)),
    })
}

/// The same, as a change to every field of an event.
fn change_of(body: CreateEventRequest) -> UpdateEventRequest {
    UpdateEventRequest {
        title: Some(body.title),
        description: Some(body.description),
        venue: Some(body.venue),
        attributes: body.attributes,
        status: None,
    }
}

pub(super) async fn create_event(
    State(web): State<WebState>,
    visit: Visit,
    form: Form,
) -> PageResult {
    let caller = organizer(&visit)?;
    let mut view = event_form_from(&visit, &form, None);
    let body = match event_body(&form) {
        Ok(body) => body,
        Err(problem) => {
            view.problem = Some(format::sentence(&problem));
            return Ok(page(
                &view,
                StatusCode::UNPROCESSABLE_ENTITY,
                web.form_targets,
            ));
        }
    };
    match routes::events::create(&visit.app, caller, &visit.request, body).await {
        Ok(event) => {
            Ok(Redirect::to(&format!("/organizer/events/{}?created=1", event.id)).into_response())
        }
        Err(refused) => {
            let refusal = Refusal::from(refused).for_the_form(&visit)?;
            let status = refusal.status;
            if refusal.problem.errors.is_empty() {
                view.problem = Some(refusal.message());
            }
            view.errors = refusal.problem.errors;
            Ok(page(&view, status, web.form_targets))
        }
    }
}

#[derive(Deserialize)]
pub(super) struct Notice {
    pub(super) created: Option<u8>,
    pub(super) saved: Option<u8>,
}

pub(super) async fn edit_event(
    State(web): State<WebState>,
    visit: Visit,
    Path(raw): Path<String>,
    Query(notice): Query<Notice>,
) -> PageResult {
    organizer(&visit)?;
    let id = id(&visit, &raw)?;
    let mut view = event_page(&visit, id).await?;
    view.notice = match (notice.created, notice.saved) {
        (Some(_), _) => Some("Created as a draft. Add performances, then publish it.".into()),
        (_, Some(_)) => Some("Saved.".into()),
        _ => None,
    };
    Ok(page(&view, StatusCode::OK, web.form_targets))
}

pub(super) async fn event_page(visit: &Visit, id: Uuid) -> Result<EventForm, PageError> {
    let caller = organizer(visit)?;
    let app = &visit.app;
    let event = routes::events::visible(app, Some(*caller), id)
        .await
        .map_err(refused(visit))?;
    // The sales view answers only to the event's owner (and admins): it is also the
    // check that this organizer may manage the event.
    let sales = routes::performances::sales(app, caller, id)
        .await
        .map_err(refused(visit))?;
    let preview = Ok(ListParams::after(AUDIT_PREVIEW, None));
    let audit = routes::box_office::audit_of_event(app, caller, id, preview)
        .await
        .map_err(refused(visit))?;
    Ok(EventForm {
        chrome: Chrome::of(visit),
        title: event.title.clone(),
        venue: event.venue.clone(),
        description: event.description.clone(),
        details: details_text(&event.attributes),
        event: Some(event),
        performances: sales.performances.iter().map(SalesRow::from).collect(),
        audit: audit.items.iter().map(AuditLine::from).collect(),
        problem: None,
        errors: vec![],
        notice: None,
    })
}

pub(super) async fn update_event(
    State(web): State<WebState>,
    visit: Visit,
    Path(raw): Path<String>,
    form: Form,
) -> PageResult {
    let caller = organizer(&visit)?;
    let id = id(&visit, &raw)?;
    let saved = event_page(&visit, id).await?;
    let mut view = event_form_from(&visit, &form, saved.event);
    view.performances = saved.performances;
    view.audit = saved.audit;
    let body = match event_body(&form) {
        Ok(body) => body,
        Err(problem) => {
            view.problem = Some(format::sentence(&problem));
            return Ok(page(
                &view,
                StatusCode::UNPROCESSABLE_ENTITY,
                web.form_targets,
            ));
        }
    };
    let change = Ok(change_of(body));
    match routes::events::update(&visit.app, caller, &visit.request, id, change).await {
        Ok(_) => Ok(Redirect::to(&format!("/organizer/events/{id}?saved=1")).into_response()),
        Err(refused) => {
            let refusal = Refusal::from(refused).for_the_form(&visit)?;
            let status = refusal.status;
            if refusal.problem.errors.is_empty() {
                view.problem = Some(refusal.message());
            }
            view.errors = refusal.problem.errors;
            Ok(page(&view, status, web.form_targets))
        }
    }
}

/// Publish, unpublish or cancel.
pub(super) async fn set_status(
    State(web): State<WebState>,
    visit: Visit,
    Path(raw): Path<String>,
    form: Form,
) -> PageResult {
    let caller = organizer(&visit)?;
    let id = id(&visit, &raw)?;
    let change = Ok(UpdateEventRequest {
        title: None,
        description: None,
        venue: None,
        attributes: None,
        status: Some(form.text("status")),
    });
    match routes::events::update(&visit.app, caller, &visit.request, id, change).await {
        Ok(_) => Ok(Redirect::to(&format!("/organizer/events/{id}?saved=1")).into_response()),
        Err(refused) => {
            let refusal = Refusal::from(refused).for_the_form(&visit)?;
            let status = refusal.status;
            let mut view = event_page(&visit, id).await?;
            view.problem = Some(refusal.message());
            Ok(page(&view, status, web.form_targets))
        }
    }
}

// ---------------------------------------------------------------- performances
