//! The request API: `POST /v1/score` on `serve.listen`, a listener of its
//! own (not the admin port). A body is one transaction in the pipeline's
//! schema, or a JSON array of them; each is scored by
//! [`Engine::score_request`], the stream's own decode, feature path and
//! champion against the live state, read and never folded
//! (ARCHITECTURE.md §1). The answer is the record the stream writes.
//!
//! Status codes: 200 scored (an array answers item by item); 400 not JSON
//! or an empty array; 413 a body or array past `serve.max_body_bytes` or
//! `serve.max_items`; 422 a record the stream would dead-letter, with the
//! same kind and message; 503 not ready; 504 past `serve.deadline_ms`
//! (or 200 with the fallback decision marked `"fallback": true`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::{Fallback, ServeSettings};
use crate::engine::{Answer, Engine};
use crate::kafka::publish::Publisher;
use crate::telemetry::Health;
use crate::telemetry::events::{Event, RequestServed};

/// How long publishing a request to the input topic may take.
const PUBLISH_WAIT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {listen} for the scoring API (serve.listen): {source}")]
pub struct ServeError {
    listen: String,
    source: std::io::Error,
}

/// What a request needs.
pub struct Api {
    pub engine: Arc<Engine>,
    pub health: Arc<Health>,
    pub settings: ServeSettings,
    /// With `serve.publish`: where requests go, keyed by `publish_key`'s
    /// value (the windows' first key, so a card's records stay in order).
    pub publisher: Option<Publisher>,
    pub publish_key: Option<String>,
}

/// Binds `serve.listen` and serves until `stop`; returns the address.
pub async fn start(api: Api, stop: CancellationToken) -> Result<SocketAddr, ServeError> {
    let listen = api.settings.listen.clone();
    let error = |source| ServeError {
        listen: listen.clone(),
        source,
    };
    let listener = TcpListener::bind(&listen).await.map_err(error)?;
    let address = listener.local_addr().map_err(error)?;
    let router = Router::new()
        .route("/v1/score", post(score))
        .layer(DefaultBodyLimit::max(api.settings.max_body_bytes))
        .with_state(Arc::new(api));
    crate::http::serve_until(listener, router, stop, "scoring API");
    tracing::info!(%address, "scoring API listening (POST /v1/score)");
    Ok(address)
}

async fn score(State(api): State<Arc<Api>>, uri: Uri, body: Bytes) -> Response {
    let started = Instant::now();
    let features = uri
        .query()
        .is_some_and(|q| q.split('&').any(|p| p == "features=true"));
    let (status, body, fallback) = answer(&api, &body, features).await;
    RequestServed {
        status: status.as_u16(),
        seconds: started.elapsed().as_secs_f64(),
        fallback,
    }
    .emit();
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// The status, the body, and whether the fallback answered.
async fn answer(api: &Api, body: &[u8], features: bool) -> (StatusCode, Value, bool) {
    if let Some(why) = api.health.not_ready_because() {
        return error(StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {why}"));
    }
    let (items, single) = match serde_json::from_slice::<Value>(body) {
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("invalid JSON: {e}")),
        Ok(Value::Array(items)) => (items, false),
        Ok(item) => (vec![item], true),
    };
    if items.is_empty() {
        return error(StatusCode::BAD_REQUEST, "an empty array".into());
    }
    if items.len() > api.settings.max_items {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "{} records; a request takes at most {} (serve.max_items)",
                items.len(),
                api.settings.max_items
            ),
        );
    }
    let records: Vec<Vec<u8>> = items
        .iter()
        .map(|item| item.to_string().into_bytes())
        .collect();
    let scored = tokio::time::timeout(
        api.settings.deadline,
        api.engine.score_request(records, features),
    )
    .await;
    // Published after scoring: the stream must not fold a request before
    // the API has read the state without it.
    if let Some(publisher) = &api.publisher
        && let Err(e) = publish(api, publisher, &items).await
    {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the request was not published to the input topic: {e}"),
        );
    }
    match scored {
        Err(_) => past_deadline(api, &items, single),
        Ok(Err(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        Ok(Ok(answers)) => scored_answer(answers, single),
    }
}

/// Each record to the input topic, keyed as the stream's records are.
async fn publish(
    api: &Api,
    publisher: &Publisher,
    items: &[Value],
) -> Result<(), rdkafka::error::KafkaError> {
    for item in items {
        let key = api
            .publish_key
            .as_deref()
            .and_then(|field| item.get(field))
            .map(|value| match value {
                Value::String(text) => text.clone().into_bytes(),
                other => other.to_string().into_bytes(),
            });
        publisher
            .publish(key.as_deref(), item.to_string().as_bytes(), PUBLISH_WAIT)
            .await?;
    }
    Ok(())
}

fn scored_answer(answers: Vec<Answer>, single: bool) -> (StatusCode, Value, bool) {
    let rendered: Vec<(bool, Value)> = answers
        .into_iter()
        .map(|answer| match answer {
            Answer::Scored(record) => {
                (true, serde_json::from_slice(&record).unwrap_or(Value::Null))
            }
            Answer::Refused { kind, message } => (
                false,
                json!({"error": {"kind": kind.as_str(), "message": message}}),
            ),
        })
        .collect();
    if single {
        let (ok, value) = rendered.into_iter().next().unwrap_or((false, Value::Null));
        let status = match ok {
            true => StatusCode::OK,
            false => StatusCode::UNPROCESSABLE_ENTITY,
        };
        return (status, value, false);
    }
    let values = rendered.into_iter().map(|(_, v)| v).collect();
    (StatusCode::OK, Value::Array(values), false)
}

/// 504, or with `serve.fallback` its decision for every record, marked.
fn past_deadline(api: &Api, items: &[Value], single: bool) -> (StatusCode, Value, bool) {
    let millis = api.settings.deadline.as_millis();
    let Some(fallback) = api.settings.fallback else {
        return error(
            StatusCode::GATEWAY_TIMEOUT,
            format!("not scored within the deadline of {millis} ms (serve.deadline_ms)"),
        );
    };
    let decision = match fallback {
        Fallback::Pass => "pass",
        Fallback::Flag => "flag",
    };
    let records: Vec<Value> = items
        .iter()
        .map(|_| json!({"decision": decision, "fallback": true}))
        .collect();
    let body = match single {
        true => records.into_iter().next().unwrap_or(Value::Null),
        false => Value::Array(records),
    };
    (StatusCode::OK, body, true)
}

fn error(status: StatusCode, message: String) -> (StatusCode, Value, bool) {
    (status, json!({"error": message}), false)
}
