//! Signing in and out, the session extractor and CSRF checks.
//!
//! The session cookie holds a random token; the database holds only its SHA-256. Each session
//! has its own CSRF token, put in every form and checked on every POST. The login form, before
//! any session exists, uses a double-submit token: a cookie scoped to `/login` and the same
//! value in the form.

use axum::extract::{Form, FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::views::{LoginPage, UserView};
use super::{AppError, AppState};
use crate::auth::{self, random_token, token_digest, tokens_match, SESSION_SECONDS};
use crate::db::now;
use crate::model::{Role, User};

const SESSION_COOKIE: &str = "xr_session";
const LOGIN_COOKIE: &str = "xr_login";

/// A signed-in request: who, and the token their forms must carry.
pub struct Session {
    /// The account.
    pub user: User,
    /// This session's CSRF token.
    pub csrf: String,
    token_sha256: String,
}

impl Session {
    /// Refuses a form whose CSRF token is missing or wrong.
    pub fn check_csrf(&self, submitted: Option<&str>) -> Result<(), AppError> {
        match submitted {
            Some(token) if tokens_match(token, &self.csrf) => Ok(()),
            _ => Err(AppError::Forbidden(
                "The form's security token is missing or out of date: reload the page and try again."
                    .into(),
            )),
        }
    }

    /// The header's view of this user.
    pub fn view(&self) -> Option<UserView> {
        Some(UserView {
            name: self.user.name.clone(),
            admin: self.user.role == Role::Admin,
            csrf: self.csrf.clone(),
        })
    }
}

impl FromRequestParts<AppState> for Session {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Session, Response> {
        let to_login = || Redirect::to("/login").into_response();
        let Some(token) = cookie(&parts.headers, SESSION_COOKIE) else {
            return Err(to_login());
        };
        let digest = token_digest(&token);
        let lookup = digest.clone();
        let found = state
            .blocking(move |s| s.db.session(&lookup))
            .await
            .map_err(IntoResponse::into_response)?;
        match found {
            Some((user, csrf)) => Ok(Session {
                user,
                csrf,
                token_sha256: digest,
            }),
            None => Err(to_login()),
        }
    }
}

/// A cookie's value from the request headers.
fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

fn set_cookie(name: &str, value: &str, path: &str, max_age: i64, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{name}={value}; Path={path}; Max-Age={max_age}; HttpOnly; SameSite=Strict{secure}"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static(""))
}

fn login_form(state: &AppState, status: StatusCode, message: Option<String>) -> Response {
    let csrf = random_token();
    let page = LoginPage {
        user: None,
        disclaimer: xray_infer::DISCLAIMER,
        csrf: csrf.clone(),
        message,
    };
    let mut response = super::page(&page, "login");
    *response.status_mut() = status;
    response.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(
            LOGIN_COOKIE,
            &csrf,
            "/login",
            3600,
            state.config.secure_cookies,
        ),
    );
    response
}

pub async fn login_page(State(state): State<AppState>) -> Response {
    login_form(&state, StatusCode::OK, None)
}

#[derive(Deserialize)]
pub struct LoginForm {
    name: String,
    password: String,
    csrf: Option<String>,
}

pub async fn login(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Result<Response, AppError> {
    let expected = cookie(&headers, LOGIN_COOKIE);
    let fresh = match (&expected, &form.csrf) {
        (Some(a), Some(b)) => tokens_match(a, b),
        _ => false,
    };
    if !fresh {
        return Err(AppError::Forbidden(
            "The sign-in form's security token is missing or out of date: reload the page.".into(),
        ));
    }
    let name = form.name.clone();
    let user = state
        .blocking(move |s| {
            let found = s.db.user_by_name(&name)?;
            // Verify against a real hash even for an unknown name, so timing tells nothing.
            let stored = found
                .as_ref()
                .map(|(_, h)| h.as_str())
                .unwrap_or(DUMMY_HASH);
            let ok = auth::verify_password(&form.password, stored);
            match found {
                Some((user, _)) if ok => Ok(Some(user)),
                _ => {
                    // The name as typed, shortened: a refused login may carry anything.
                    let typed: String = name.chars().take(64).collect();
                    s.db.audit(None, "login_refused", None, &typed)?;
                    Ok(None)
                }
            }
        })
        .await?;
    let Some(user) = user else {
        return Ok(login_form(
            &state,
            StatusCode::UNAUTHORIZED,
            Some("Wrong user name or password.".into()),
        ));
    };
    let token = random_token();
    let csrf = random_token();
    let digest = token_digest(&token);
    state
        .blocking(move |s| {
            s.db.create_session(&user, &digest, &csrf, now() + SESSION_SECONDS)
        })
        .await?;
    let mut response = Redirect::to("/worklist").into_response();
    let secure = state.config.secure_cookies;
    response.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(SESSION_COOKIE, &token, "/", SESSION_SECONDS, secure),
    );
    response.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(LOGIN_COOKIE, "", "/login", 0, secure),
    );
    Ok(response)
}

#[derive(Deserialize)]
pub struct CsrfForm {
    csrf: Option<String>,
}

pub async fn logout(
    State(state): State<AppState>,
    session: Session,
    Form(form): Form<CsrfForm>,
) -> Result<Response, AppError> {
    session.check_csrf(form.csrf.as_deref())?;
    let (digest, user) = (session.token_sha256.clone(), session.user.clone());
    state
        .blocking(move |s| s.db.end_session(&digest, &user))
        .await?;
    let mut response = Redirect::to("/login").into_response();
    response.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(SESSION_COOKIE, "", "/", 0, state.config.secure_cookies),
    );
    Ok(response)
}

/// An Argon2id hash of a random password nobody knows: what an unknown name is checked against.
const DUMMY_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$Q3K5lR1dTJsn1mN3aA7bJj9mFvUe7oQn1YbqYf6o0hY";
