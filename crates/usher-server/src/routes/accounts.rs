//! Accounts: signup, login, refresh-token rotation, logout, the caller's profile, and
//! admins changing roles.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use usher_core::{Email, Password, Role, User, UserName};
use usher_store::{AccountNotice, NewRefreshToken, NewUser, Rotation, UserChange};

use crate::auth::{self, ACCESS_TOKEN_TTL, REFRESH_TOKEN_TTL, RefreshToken};
use crate::extract::{Admin, Caller, Fields, Json, RequestId, path_id};
use crate::problem::{ApiError, Problem};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(signup))
        .routes(routes!(login))
        .routes(routes!(refresh))
        .routes(routes!(logout))
        .routes(routes!(me))
        .routes(routes!(set_role))
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct UserView {
    pub id: Uuid,
    pub email: String,
    pub name: String,
    #[schema(value_type = String, example = "customer")]
    pub role: Role,
    /// Disabled by an admin: cannot sign in, and every session of it is refused.
    #[serde(default)]
    pub disabled: bool,
    pub created_at: DateTime<Utc>,
}

impl From<User> for UserView {
    fn from(user: User) -> Self {
        Self {
            id: user.id.uuid(),
            email: user.email.as_str().into(),
            name: user.name.as_str().into(),
            role: user.role,
            disabled: user.disabled,
            created_at: user.created_at,
        }
    }
}

/// Who bought a booking, as its organizer sees them.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct BuyerView {
    pub id: Uuid,
    pub email: String,
    pub name: String,
}

impl From<User> for BuyerView {
    fn from(user: User) -> Self {
        Self {
            id: user.id.uuid(),
            email: user.email.as_str().into(),
            name: user.name.as_str().into(),
        }
    }
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Session {
    pub user: UserView,
    /// A JWT to send as `Authorization: Bearer …`.
    pub access_token: String,
    /// Opaque; trade it at `/v1/auth/refresh` for a new pair. Usable once.
    pub refresh_token: String,
    #[schema(example = "Bearer")]
    pub token_type: &'static str,
    /// Seconds until the access token expires.
    pub expires_in: i64,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignupRequest {
    #[schema(example = "ann@example.com")]
    pub email: String,
    /// At least 10 characters.
    #[schema(example = "correct horse battery")]
    pub password: String,
    #[schema(example = "Ann Lee")]
    pub name: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    pub email: String,
    pub password: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefreshRequest {
    pub refresh_token: String,
}

/// What an admin changes about an account: its role, whether it is disabled, or both.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RoleRequest {
    #[schema(example = "organizer")]
    pub role: Option<String>,
    /// `true` signs the account out everywhere at once and refuses its sign-ins until
    /// `false` again.
    pub disabled: Option<bool>,
}

/// Creates the account and starts a session.
#[utoipa::path(post, path = "/v1/auth/signup", tag = "accounts",
    request_body = SignupRequest,
    responses(
        (status = 201, description = "Account created", body = Session),
        (status = 409, description = "Email taken", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Weak password, bad email or name", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Too many sign-ins at once; retry after `Retry-After` seconds (`/problems/busy`)", body = Problem, content_type = "application/problem+json"),
    ))]
async fn signup(
    State(state): State<AppState>,
    Json(body): Json<SignupRequest>,
) -> Result<impl IntoResponse, ApiError> {
    let session = create_account(&state, body).await?;
    Ok((StatusCode::CREATED, axum::Json(session)))
}

/// Creates an account and starts its first session.
pub async fn create_account(state: &AppState, body: SignupRequest) -> Result<Session, ApiError> {
    let mut fields = Fields::new();
    let email = fields.take("email", Email::parse(&body.email));
    let password = fields.take("password", Password::parse(&body.password));
    let name = fields.take("name", UserName::parse(&body.name));
    fields.finish()?;
    let (Some(email), Some(password), Some(name)) = (email, password, name) else {
        return Err(ApiError::Internal("validated fields missing".into()));
    };
    let admin_email = state.config().admin_email.as_ref();
    let role = if admin_email == Some(&email) {
        Role::Admin
    } else {
        Role::Customer
    };
    let password_hash = state.passwords().hash(password).await?;
    let user = state
        .store()
        .create_user(NewUser {
            email,
            name,
            password_hash,
            role,
            first_account_is_admin: admin_email.is_none(),
        })
        .await?;
    start_session(state, user).await
}

/// Logs in with email and password. A wrong password and an unknown email get the same
/// answer, in the same time.
#[utoipa::path(post, path = "/v1/auth/login", tag = "accounts",
    request_body = LoginRequest,
    responses(
        (status = 200, description = "Logged in", body = Session),
        (status = 401, description = "Wrong credentials", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The account is disabled (said only with the right password)", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Too many sign-ins at once; retry after `Retry-After` seconds (`/problems/busy`)", body = Problem, content_type = "application/problem+json"),
    ))]
async fn login(
    State(state): State<AppState>,
    Json(body): Json<LoginRequest>,
) -> Result<axum::Json<Session>, ApiError> {
    sign_in(&state, body).await.map(axum::Json)
}

/// Starts a session for whoever knows the account's password.
pub async fn sign_in(state: &AppState, body: LoginRequest) -> Result<Session, ApiError> {
    const WRONG: ApiError = ApiError::Unauthorized("the email or the password is wrong");
    // A malformed email cannot belong to an account, but is still checked against the
    // dummy hash so that it answers like any other miss.
    let credentials = match Email::parse(&body.email) {
        Ok(email) => state.store().credentials_by_email(&email).await?,
        Err(_) => None,
    };
    let (user, hash) = match credentials {
        Some(c) => (Some(c.user), Some(c.password_hash)),
        None => (None, None),
    };
    let matches = state.passwords().verify(body.password, hash).await?;
    match user {
        // Only someone who knows the password learns that the account is disabled.
        Some(user) if matches && user.disabled => Err(ApiError::Forbidden(
            "this account is disabled; ask the organizer or an admin",
        )),
        Some(user) if matches => start_session(state, user).await,
        _ => Err(WRONG),
    }
}

/// Trades a refresh token for a new pair. Each refresh token works once; presenting
/// one again (a sign it was stolen) revokes every token descended from that login.
#[utoipa::path(post, path = "/v1/auth/refresh", tag = "accounts",
    request_body = RefreshRequest,
    responses(
        (status = 200, description = "New token pair", body = Session),
        (status = 401, description = "Unknown, expired or reused refresh token", body = Problem, content_type = "application/problem+json"),
    ))]
async fn refresh(
    State(state): State<AppState>,
    Json(body): Json<RefreshRequest>,
) -> Result<axum::Json<Session>, ApiError> {
    rotate_session(&state, &body.refresh_token)
        .await
        .map(axum::Json)
}

/// Trades a refresh token for a new session (the API's refresh, and the web UI's
/// cookies renewing themselves).
pub(crate) async fn rotate_session(
    state: &AppState,
    refresh_token: &str,
) -> Result<Session, ApiError> {
    let now = Utc::now();
    let replacement = RefreshToken::generate()?;
    let rotation = usher_app::accounts::rotate_refresh_token(
        state.store(),
        &auth::hash_refresh_token(refresh_token),
        NewRefreshToken {
            id: Uuid::now_v7(),
            family_id: Uuid::nil(),
            user_id: Uuid::nil().into(),
            token_hash: replacement.hash,
            expires_at: now + REFRESH_TOKEN_TTL,
        },
        now,
    )
    .await?;
    match rotation {
        Rotation::Rotated {
            user_id,
            session_id,
        } => {
            let user = state
                .store()
                .user(user_id)
                .await?
                .ok_or(ApiError::Unauthorized("the account no longer exists"))?;
            if user.disabled {
                return Err(ApiError::Unauthorized("this account is disabled"));
            }
            Ok(Session {
                access_token: state
                    .tokens()
                    .issue_access(user.id.uuid(), session_id, now)?,
                refresh_token: replacement.token,
                token_type: "Bearer",
                expires_in: ACCESS_TOKEN_TTL.num_seconds(),
                user: user.into(),
            })
        }
        Rotation::Reused { session_id } => {
            tracing::warn!(%session_id, "a rotated refresh token was presented again; its family is revoked");
            state
                .account_changed(AccountNotice::Session(session_id))
                .await;
            Err(ApiError::Unauthorized(
                "this refresh token was already used; every session from that login is now signed out",
            ))
        }
        Rotation::Invalid => Err(ApiError::Unauthorized(
            "the refresh token is unknown or expired",
        )),
    }
}

/// Ends the session the refresh token belongs to: the refresh token stops working, and
/// so do the access tokens of that session (on every instance, at once). The caller's
/// access token only authenticates the call: logging out another session of one's own
/// (a lost phone) leaves this one signed in.
#[utoipa::path(post, path = "/v1/auth/logout", tag = "accounts",
    request_body = RefreshRequest,
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Logged out"),
        (status = 401, description = "Not logged in", body = Problem, content_type = "application/problem+json"),
    ))]
async fn logout(
    State(state): State<AppState>,
    _caller: Caller,
    Json(body): Json<RefreshRequest>,
) -> Result<StatusCode, ApiError> {
    sign_out(&state, &body.refresh_token).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Ends the session `refresh_token` belongs to, on every instance.
pub async fn sign_out(state: &AppState, refresh_token: &str) -> Result<(), ApiError> {
    // Unknown tokens are not an error: the session is over either way.
    let ended = state
        .store()
        .revoke_refresh_family(&auth::hash_refresh_token(refresh_token), Utc::now())
        .await?;
    if let Some(session_id) = ended {
        state
            .account_changed(AccountNotice::Session(session_id))
            .await;
    }
    Ok(())
}

/// The caller's own account.
#[utoipa::path(get, path = "/v1/me", tag = "accounts",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The caller", body = UserView),
        (status = 401, description = "Not logged in", body = Problem, content_type = "application/problem+json"),
    ))]
async fn me(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<axum::Json<UserView>, ApiError> {
    let user = state
        .store()
        .user(caller.id.into())
        .await?
        .ok_or(ApiError::Unauthorized("the account no longer exists"))?;
    Ok(axum::Json(user.into()))
}

/// Changes a user's role, or disables or enables the account (admins only). Takes
/// effect on the user's next request: access tokens carry no role, and every request is
/// authorized against the account as it is now. Disabling also ends every session.
#[utoipa::path(patch, path = "/v1/admin/users/{id}", tag = "accounts",
    params(("id" = Uuid, Path, description = "User id")),
    request_body = RoleRequest,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Changed", body = UserView),
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such user", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Admins cannot change their own role or disable themselves", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Unknown role, or nothing to change", body = Problem, content_type = "application/problem+json"),
    ))]
async fn set_role(
    State(state): State<AppState>,
    caller: Caller,
    request: RequestId,
    Path(id): Path<String>,
    // Judged after the caller: no verdict on the body for those without the right.
    body: Result<Json<RoleRequest>, ApiError>,
) -> Result<axum::Json<UserView>, ApiError> {
    let caller = caller.require_admin()?;
    let id = path_id(&id)?;
    change_user(&state, caller, &request, id, body.map(|Json(body)| body))
        .await
        .map(axum::Json)
}

/// An admin changes another account's role, state, or both.
pub async fn change_user(
    state: &AppState,
    caller: Admin,
    request: &RequestId,
    id: Uuid,
    body: Result<RoleRequest, ApiError>,
) -> Result<UserView, ApiError> {
    let body = body?;
    let mut fields = Fields::new();
    let role = fields.optional("role", body.role.as_deref(), Role::parse);
    if body.role.is_none() && body.disabled.is_none() {
        fields.reject("role", "say the new `role`, or `disabled`, or both");
    }
    fields.finish()?;
    let Some(role) = role else {
        return Err(ApiError::Internal("validated role missing".into()));
    };
    if id == caller.id {
        // Guards against the last admin locking everyone out by accident.
        return Err(ApiError::Conflict {
            kind: "own-role",
            detail: "admins cannot change their own role or disable themselves; ask another admin"
                .into(),
        });
    }
    let change = UserChange {
        role,
        disabled: body.disabled,
    };
    // Role and state change together or not at all.
    let audit = caller.audit(request);
    let user = usher_app::accounts::update_user(
        state.store(),
        id.into(),
        change,
        state.clock().now(),
        &audit,
    )
    .await?
    .ok_or(ApiError::NotFound)?;
    tracing::info!(user_id = %id, ?change, "account changed");
    state.account_changed(AccountNotice::Account(id)).await;
    Ok(user.into())
}

async fn start_session(state: &AppState, user: User) -> Result<Session, ApiError> {
    let now = Utc::now();
    let refresh = RefreshToken::generate()?;
    let session_id = Uuid::now_v7();
    state
        .store()
        .insert_refresh_token(NewRefreshToken {
            id: Uuid::now_v7(),
            family_id: session_id,
            user_id: user.id,
            token_hash: refresh.hash,
            expires_at: now + REFRESH_TOKEN_TTL,
        })
        .await?;
    Ok(Session {
        access_token: state
            .tokens()
            .issue_access(user.id.uuid(), session_id, now)?,
        refresh_token: refresh.token,
        token_type: "Bearer",
        expires_in: ACCESS_TOKEN_TTL.num_seconds(),
        user: user.into(),
    })
}
