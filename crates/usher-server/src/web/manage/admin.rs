//! Admins' pages: users and their roles and access, dead jobs, store credit, the
//! audit log.

use super::*;

#[derive(Template)]
#[template(path = "manage/admin.html")]
pub(super) struct AdminPage {
    pub(super) chrome: Chrome,
    pub(super) q: String,
    pub(super) users: Vec<UserView>,
    pub(super) more_users: bool,
    pub(super) jobs: Vec<JobView>,
    pub(super) audit: Vec<AuditLine>,
    pub(super) me: Uuid,
    pub(super) notice: Option<String>,
    pub(super) problem: Option<String>,
}

impl AdminPage {
    fn roles(&self) -> [usher_core::Role; 3] {
        use usher_core::Role;
        [Role::Customer, Role::Organizer, Role::Admin]
    }

    fn currencies(&self) -> &'static [&'static str] {
        &CURRENCIES
    }
}

#[derive(Deserialize)]
pub(super) struct AdminQuery {
    pub(super) q: Option<String>,
    pub(super) done: Option<String>,
}

pub(super) async fn admin(
    State(web): State<WebState>,
    visit: Visit,
    Query(query): Query<AdminQuery>,
) -> PageResult {
    admin_only(&visit)?;
    let notice = match query.done.as_deref() {
        Some("role") => Some("Role changed. It applies from the user's next request.".to_owned()),
        Some("disabled") => Some(
            "Disabled: every session of the account ended, and it cannot sign in until enabled."
                .to_owned(),
        ),
        Some("enabled") => Some("Enabled: the account can sign in again.".to_owned()),
        Some("retry") => Some("The job is queued again.".to_owned()),
        Some("credit") => Some("Credited. The user sees it in their wallet now.".to_owned()),
        _ => None,
    };
    let view = admin_page(&visit, query.q.unwrap_or_default(), notice, None).await?;
    Ok(page(&view, StatusCode::OK, web.form_targets))
}

pub(super) async fn admin_page(
    visit: &Visit,
    q: String,
    notice: Option<String>,
    problem: Option<String>,
) -> Result<AdminPage, PageError> {
    let caller = admin_only(visit)?;
    let q = q.trim().to_owned();
    let app = &visit.app;
    let search = UserParams {
        q: Some(q.clone()),
        limit: Some(50),
        cursor: None,
    };
    let users = routes::admin::users(app, caller, search)
        .await
        .map_err(refused(visit))?;
    let dead = JobParams {
        state: Some("dead".into()),
    };
    let jobs = routes::admin::jobs(app, caller, dead)
        .await
        .map_err(refused(visit))?;
    let audit =
        routes::box_office::audit_of_all(app, caller, ListParams::after(AUDIT_PREVIEW, None))
            .await
            .map_err(refused(visit))?;
    Ok(AdminPage {
        chrome: Chrome::of(visit),
        q,
        more_users: users.next_cursor.is_some(),
        users: users.items,
        jobs: jobs.items,
        audit: audit.items.iter().map(AuditLine::from).collect(),
        me: caller.id,
        notice,
        problem,
    })
}

pub(super) async fn set_role(
    State(web): State<WebState>,
    visit: Visit,
    Path(raw): Path<String>,
    form: Form,
) -> PageResult {
    let change = RoleRequest {
        role: Some(form.text("role")),
        disabled: None,
    };
    change_user(&web, &visit, &raw, change, "role").await
}

/// Disables an account (every session ends at once) or enables it again.
pub(super) async fn set_access(
    State(web): State<WebState>,
    visit: Visit,
    Path(raw): Path<String>,
    form: Form,
) -> PageResult {
    let disabled = form.text("disabled") == "true";
    let done = if disabled { "disabled" } else { "enabled" };
    let change = RoleRequest {
        role: None,
        disabled: Some(disabled),
    };
    change_user(&web, &visit, &raw, change, done).await
}

/// An admin's change to an account (as `PATCH /v1/admin/users/{id}`): back to the
/// admin page saying `done`, or the page again with the refusal.
pub(super) async fn change_user(
    web: &WebState,
    visit: &Visit,
    raw: &str,
    change: RoleRequest,
    done: &str,
) -> PageResult {
    let caller = admin_only(visit)?;
    let id = id(visit, raw)?;
    let changed =
        routes::accounts::change_user(&visit.app, caller, &visit.request, id, Ok(change)).await;
    admin_again(web, visit, changed.map(|_| ()), done).await
}

/// Back to the admin page saying `done`, or the page again with what was refused.
async fn admin_again(
    web: &WebState,
    visit: &Visit,
    result: Result<(), ApiError>,
    done: &str,
) -> PageResult {
    match result {
        Ok(()) => Ok(Redirect::to(&format!("/admin?done={done}")).into_response()),
        Err(refused) => {
            let refusal = Refusal::from(refused).for_the_form(visit)?;
            let status = refusal.status;
            let view = admin_page(visit, String::new(), None, Some(refusal.message())).await?;
            Ok(page(&view, status, web.form_targets))
        }
    }
}

pub(super) async fn retry_job(
    State(web): State<WebState>,
    visit: Visit,
    Path(raw): Path<String>,
    _form: Form,
) -> PageResult {
    let caller = admin_only(&visit)?;
    let id = id(&visit, &raw)?;
    let retried = routes::admin::retry(&visit.app, caller, &visit.request, id).await;
    admin_again(&web, &visit, retried, "retry").await
}

/// Store credit given from a user's row.
pub(super) async fn credit(
    State(web): State<WebState>,
    visit: Visit,
    Path(raw): Path<String>,
    form: Form,
) -> PageResult {
    let caller = admin_only(&visit)?;
    let id = id(&visit, &raw)?;
    let currency = form.text("currency").to_uppercase();
    let result = match format::parse_price(&form.text("amount"), &currency) {
        None => Err(ApiError::validation(
            "amount",
            "the amount should be a number like 25.00",
        )),
        Some(amount) => {
            let body = CreditRequest {
                amount: MoneyRequest { amount, currency },
                reason: form.text("reason"),
            };
            routes::box_office::credit(&visit.app, caller, &visit.request, id, Ok(body))
                .await
                .map(|_| ())
        }
    };
    admin_again(&web, &visit, result, "credit").await
}

// ---------------------------------------------------------------- the audit log

/// Entries shown on the admin page and an event's page; the rest is a click away.
pub(super) const AUDIT_PREVIEW: u32 = 10;

/// One audit entry as a page shows it.
pub(super) struct AuditLine {
    pub(super) at: String,
    pub(super) who: String,
    pub(super) action: String,
    pub(super) target: String,
    pub(super) detail: String,
    pub(super) request_id: String,
}

impl From<&AuditEntryView> for AuditLine {
    fn from(entry: &AuditEntryView) -> Self {
        let action = entry.action.replace(['.', '_'], " ");
        Self {
            at: entry.at.format("%Y-%m-%d %H:%M:%S").to_string(),
            who: match (&entry.actor_name, entry.actor_id) {
                (Some(name), _) => name.clone(),
                (None, Some(id)) => format!("user {}", &id.to_string()[..8]),
                (None, None) => "system".to_owned(),
            },
            action: format::sentence(&action).trim_end_matches('.').to_owned(),
            target: format!(
                "{} {}",
                entry.target.kind,
                &entry.target.id.to_string()[..8]
            ),
            detail: detail_text(&entry.detail),
            request_id: entry.request_id.clone().unwrap_or_default(),
        }
    }
}

/// An entry's detail in one short line: `changed: 2, unit ids: 2 items`.
pub(super) fn detail_text(detail: &Value) -> String {
    const MAX_CHARS: usize = 160;
    let Value::Object(map) = detail else {
        return String::new();
    };
    let text = map
        .iter()
        .map(|(key, value)| {
            let value = match value {
                Value::String(s) => s.clone(),
                Value::Array(items) if items.len() == 1 => match &items[0] {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                },
                Value::Array(items) => format!("{} items", items.len()),
                other => other.to_string(),
            };
            format!("{}: {value}", key.replace('_', " "))
        })
        .collect::<Vec<_>>()
        .join(", ");
    truncate(&text, MAX_CHARS)
}

#[derive(Template)]
#[template(path = "manage/audit.html")]
pub(super) struct AuditLogPage {
    pub(super) chrome: Chrome,
    /// The event, for an organizer's view of one event; none for the whole log.
    pub(super) event: Option<(Uuid, String)>,
    pub(super) audit: Vec<AuditLine>,
    pub(super) earlier: bool,
    pub(super) next: Option<String>,
}

pub(super) async fn admin_audit(
    State(web): State<WebState>,
    visit: Visit,
    Query(query): Query<CursorQuery>,
) -> PageResult {
    let admin = admin_only(&visit)?;
    let params = ListParams::after(AUDIT_PAGE, query.cursor.clone());
    let log = routes::box_office::audit_of_all(&visit.app, admin, params)
        .await
        .map_err(refused(&visit))?;
    let view = audit_log_page(&visit, "/admin/audit", None, &query, log);
    Ok(page(&view, StatusCode::OK, web.form_targets))
}

pub(super) async fn event_audit(
    State(web): State<WebState>,
    visit: Visit,
    Path(raw): Path<String>,
    Query(query): Query<CursorQuery>,
) -> PageResult {
    let caller = organizer(&visit)?;
    let id = id(&visit, &raw)?;
    let event = routes::events::visible(&visit.app, Some(*caller), id)
        .await
        .map_err(refused(&visit))?;
    let params = Ok(ListParams::after(AUDIT_PAGE, query.cursor.clone()));
    let log = routes::box_office::audit_of_event(&visit.app, caller, id, params)
        .await
        .map_err(refused(&visit))?;
    let view = audit_log_page(
        &visit,
        &format!("/organizer/events/{id}/audit"),
        Some((id, event.title)),
        &query,
        log,
    );
    Ok(page(&view, StatusCode::OK, web.form_targets))
}

/// Entries on one page of the audit log.
const AUDIT_PAGE: u32 = 50;

/// A page of the whole audit log (an admin's), or of one event's (`event`).
fn audit_log_page(
    visit: &Visit,
    page_path: &str,
    event: Option<(Uuid, String)>,
    query: &CursorQuery,
    log: routes::box_office::AuditPage,
) -> AuditLogPage {
    AuditLogPage {
        chrome: Chrome::of(visit),
        event,
        audit: log.items.iter().map(AuditLine::from).collect(),
        earlier: query.cursor.is_some(),
        next: log
            .next_cursor
            .map(|c| format!("{page_path}?cursor={}", format::query_value(&c))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn details_lines_become_attributes_and_back() {
        let map = parse_details("Genre: jazz\n\n age limit : 18+ ").unwrap();
        assert_eq!(map["genre"], "jazz");
        assert_eq!(map["age_limit"], "18+");
        assert_eq!(
            details_text(&Value::Object(map)),
            "age limit: 18+\ngenre: jazz"
        );
        assert!(parse_details("no colon here").is_err());
    }

    #[test]
    fn the_builder_makes_rows_of_seats_per_section() {
        let form = Form::from_pairs(&[
            ("section_name", "Stalls"),
            ("section_price", "45"),
            ("section_rows", "3"),
            ("section_seats", "10"),
            ("section_name", ""),
            ("section_price", ""),
            ("section_rows", ""),
            ("section_seats", ""),
        ]);
        let SeatingRequest::Reserved { sections } = seating(&form, "reserved", "EUR").unwrap()
        else {
            panic!("a reserved plan was asked for");
        };
        assert_eq!(sections.len(), 1, "blank lines are skipped");
        let price = &sections[0].price;
        assert_eq!((price.amount, price.currency.as_str()), (4500, "EUR"));
        let rows = &sections[0].rows;
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[2].label, "C");
        assert!(matches!(rows[2].seats, SeatsRequest::Count(10)));
    }

    #[test]
    fn the_builder_names_each_bad_line() {
        let form = Form::from_pairs(&[
            ("tt_name", "Standing"),
            ("tt_price", "twenty"),
            ("tt_capacity", "0"),
        ]);
        let problems = seating(&form, "general", "EUR").unwrap_err();
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].starts_with("Ticket type 1"));
        let empty = Form::from_pairs(&[]);
        assert_eq!(
            seating(&empty, "reserved", "EUR").unwrap_err(),
            ["Add at least one section."]
        );
    }

    #[test]
    fn plan_fields_read_as_words() {
        assert_eq!(
            plan_field("seating.sections[1].rows[0].label"),
            "Section 2, row 1, label"
        );
        assert_eq!(plan_field("starts_at"), "Start");
    }
}
