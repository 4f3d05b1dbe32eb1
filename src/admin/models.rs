//! The model routes: `GET /models`, `POST /models/<name>/promote` and
//! `POST /models/<name>/rollback`, behind a bearer token. They change the
//! registry and swap the engine's models at once; a version that fails its
//! checks is refused (422) and nothing changes.
//!
//! Bodies, all optional: promote `{"version": "7"}` makes version 7 the
//! champion (without a version, the challenger is promoted), and
//! `{"version": "7", "role": "challenger"}` sets the challenger; rollback
//! returns to the previous champion, or with `{"role": "challenger"}`
//! removes the challenger. `X-Streamscore-Actor` names who asks, for the
//! history.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::model::serving::follow::Follower;
use crate::model::serving::registry::{Change, RegistryError};

/// The header naming who asks for a change.
pub const ACTOR_HEADER: &str = "x-streamscore-actor";

/// The model routes' bearer token. Without one, they answer 401 to all.
#[derive(Clone)]
pub struct AdminToken(Option<[u8; 32]>);

impl AdminToken {
    pub fn new(token: Option<&str>) -> Self {
        Self(
            token
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(|t| Sha256::digest(t.as_bytes()).into()),
        )
    }

    /// Compares digests, so the time taken says nothing of the token.
    fn admits(&self, headers: &HeaderMap) -> bool {
        let Some(expected) = &self.0 else {
            return false;
        };
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        presented.is_some_and(|p| {
            let digest: [u8; 32] = Sha256::digest(p.trim().as_bytes()).into();
            digest
                .iter()
                .zip(expected)
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
        })
    }
}

#[derive(Clone)]
struct Routes {
    follower: Arc<Follower>,
    token: AdminToken,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ChangeBody {
    version: Option<String>,
    #[serde(default)]
    role: Option<String>,
}

pub fn routes(follower: Arc<Follower>, token: AdminToken) -> Router {
    Router::new()
        .route("/models", get(show))
        .route("/models/{name}/promote", post(promote))
        .route("/models/{name}/rollback", post(rollback))
        .with_state(Routes { follower, token })
}

async fn show(State(routes): State<Routes>, headers: HeaderMap) -> Response {
    if !routes.token.admits(&headers) {
        return unauthorised();
    }
    let f = &routes.follower;
    let lineup = f.slot().current();
    let body = serde_json::json!({
        "name": f.name(),
        "champion": lineup.champion.version(),
        "challenger": lineup.challenger.as_ref().map(|c| c.version()),
        "comparison": f.slot().comparison(),
    });
    json(StatusCode::OK, &body)
}

async fn promote(
    State(routes): State<Routes>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    change(routes, name, headers, body, |b| match b.role.as_deref() {
        None | Some("champion") => Ok(Change::Promote(b.version)),
        Some("challenger") => b
            .version
            .map(Change::SetChallenger)
            .ok_or("a challenger needs a `version`"),
        Some(_) => Err("`role` is `champion` or `challenger`"),
    })
    .await
}

async fn rollback(
    State(routes): State<Routes>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    change(routes, name, headers, body, |b| match b.role.as_deref() {
        _ if b.version.is_some() => Err("rollback takes no `version`"),
        None | Some("champion") => Ok(Change::Rollback),
        Some("challenger") => Ok(Change::ClearChallenger),
        Some(_) => Err("`role` is `champion` or `challenger`"),
    })
    .await
}

async fn change(
    routes: Routes,
    name: String,
    headers: HeaderMap,
    body: Bytes,
    to_change: impl FnOnce(ChangeBody) -> Result<Change, &'static str>,
) -> Response {
    if !routes.token.admits(&headers) {
        return unauthorised();
    }
    if name != routes.follower.name() {
        return message(
            StatusCode::NOT_FOUND,
            &format!("this engine serves model `{}`", routes.follower.name()),
        );
    }
    let parsed = if body.iter().all(u8::is_ascii_whitespace) {
        Ok(ChangeBody::default())
    } else {
        serde_json::from_slice::<ChangeBody>(&body).map_err(|e| e.to_string())
    };
    let change = match parsed.and_then(|b| to_change(b).map_err(str::to_owned)) {
        Ok(change) => change,
        Err(why) => return message(StatusCode::BAD_REQUEST, &why),
    };
    let actor: String = headers
        .get(ACTOR_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("anonymous")
        .chars()
        .take(64)
        .collect();
    let by = format!("http:{actor}@{}", crate::instance::instance_id());
    let follower = Arc::clone(&routes.follower);
    let applied = tokio::task::spawn_blocking(move || follower.apply(&change, &by)).await;
    match applied {
        Ok(Ok(state)) => json(StatusCode::OK, &serde_json::json!({ "state": state })),
        Ok(Err(error)) => message(status_of(&error), &error.to_string()),
        Err(e) => message(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

fn status_of(error: &RegistryError) -> StatusCode {
    match error {
        RegistryError::NoModel { .. } | RegistryError::NoVersion { .. } => StatusCode::NOT_FOUND,
        RegistryError::Refused(_) | RegistryError::VersionExists { .. } => StatusCode::CONFLICT,
        RegistryError::Bundle(_) => StatusCode::UNPROCESSABLE_ENTITY,
        RegistryError::Io { .. } | RegistryError::Corrupt { .. } => {
            StatusCode::INTERNAL_SERVER_ERROR
        }
    }
}

fn unauthorised() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer")],
        "a valid bearer token is required (admin.token_file or STREAMSCORE_ADMIN_TOKEN)\n",
    )
        .into_response()
}

fn message(status: StatusCode, text: &str) -> Response {
    json(status, &serde_json::json!({ "error": text }))
}

fn json(status: StatusCode, body: &serde_json::Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        format!("{body}\n"),
    )
        .into_response()
}
