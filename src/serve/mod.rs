//! The request API: `POST /v1/score` on `serve.listen`, a listener of its
//! own (not the admin port). A body is one transaction in the pipeline's
//! schema, or a JSON array of them; each is scored by
//! [`Engine::score_request`], the stream's own decode, feature path and
//! champion against the live state, read and never folded
//! (ARCHITECTURE.md §1). The answer is the record the stream writes. With
//! windows kept per partition, each record is scored by the instance that
//! holds its key's partition (`route.rs`, ARCHITECTURE.md §2), and
//! `GET /v1/owner?key=` names it.
//!
//! Status codes: 200 scored (an array answers item by item); 400 not JSON
//! or an empty array; 413 a body or array past `serve.max_body_bytes` or
//! `serve.max_items`; 422 a record the stream would dead-letter, with the
//! same kind and message; 503 not ready, or its partition's holder cannot
//! be reached; 504 past `serve.deadline_ms` (or 200 with the fallback
//! decision marked `"fallback": true`).

mod route;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::value::RawValue;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use route::{Announcer, Router};
use route::{Destination, FORWARDED, by_holder, key_bytes};

use crate::config::{Fallback, ServeSettings};
use crate::engine::{Answer, Engine, NO_PARTITION};
use crate::kafka::publish::Publisher;
use crate::state::Holder;
use crate::telemetry::Health;
use crate::telemetry::events::{Event, RequestForwarded, RequestServed};

/// How long open connections may take to finish once the API stops.
const STOP_GRACE: Duration = Duration::from_secs(2);
/// How long a request's body may take to arrive.
const BODY_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// How long publishing a request to the input topic may take.
const PUBLISH_WAIT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {listen} for the scoring API (serve.listen): {source}")]
pub struct ServeError {
    listen: String,
    source: std::io::Error,
}

/// The API's listener, bound before the Kafka clients start, so that the
/// partitions they are assigned can be announced at its address.
pub struct Bound {
    listener: std::net::TcpListener,
    address: SocketAddr,
    /// The URL the other instances and clients reach it at.
    pub url: String,
}

/// Binds `serve.listen`; the URL is `serve.advertise`, or the address bound.
pub fn bind(settings: &ServeSettings) -> Result<Bound, ServeError> {
    let error = |source| ServeError {
        listen: settings.listen.clone(),
        source,
    };
    // A std listener: it is served on the API's own runtime (`start`).
    let listener = std::net::TcpListener::bind(&settings.listen).map_err(error)?;
    listener.set_nonblocking(true).map_err(error)?;
    let address = listener.local_addr().map_err(error)?;
    let url = match &settings.advertise {
        Some(url) if url.contains("://") => url.trim_end_matches('/').to_owned(),
        Some(host) => format!("http://{}", host.trim_end_matches('/')),
        None => format!("http://{address}"),
    };
    Ok(Bound {
        listener,
        address,
        url,
    })
}

/// What a request needs.
pub struct Api {
    pub engine: Arc<Engine>,
    pub health: Arc<Health>,
    pub settings: ServeSettings,
    /// With `serve.publish`: where requests go, keyed by `publish_key`'s
    /// value (the field the input is keyed by).
    pub publisher: Option<Publisher>,
    pub publish_key: Option<String>,
    /// With windows kept per partition: where each record is scored.
    pub router: Option<Router>,
    /// This instance's URL, for `GET /v1/owner`.
    pub url: String,
}

/// Serves `bound` until `stop`, on a runtime of its own with
/// `serve.threads` workers: a request is then never queued behind the
/// stream's batches on the same workers (a backlog keeps them busy), only
/// shared with them by the operating system's scheduler.
pub fn start(bound: Bound, api: Api, stop: CancellationToken) -> Result<Running, ServeError> {
    let listen = api.settings.listen.clone();
    let error = |source| ServeError {
        listen: listen.clone(),
        source,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(api.settings.threads)
        .thread_name("streamscore-api")
        .enable_all()
        .build()
        .map_err(error)?;
    let listener = {
        let _inside = runtime.enter();
        TcpListener::from_std(bound.listener).map_err(error)?
    };
    let router = axum::Router::new()
        .route("/v1/score", post(score))
        .route("/v1/owner", get(owner))
        .with_state(Arc::new(api));
    let serving = stop.clone();
    let thread = std::thread::Builder::new()
        .name("streamscore-api".into())
        .spawn(move || {
            runtime.block_on(async {
                let served = crate::http::serve(listener, router, serving.clone(), "scoring API");
                // Once stopped, open connections (a stalled client's) get
                // this long; then every task left is dropped.
                let grace = async {
                    serving.cancelled().await;
                    tokio::time::sleep(STOP_GRACE).await;
                };
                tokio::select! {
                    () = served => {}
                    () = grace => {}
                }
            });
            runtime.shutdown_timeout(STOP_GRACE);
        })
        .map_err(error)?;
    tracing::info!(address = %bound.address, url = %bound.url, "scoring API listening (POST /v1/score)");
    Ok(Running {
        stop,
        thread: Some(thread),
    })
}

/// The API's thread, stopped and waited for when dropped: nothing it holds
/// (the engine, and with it the state store) may outlive the run. A
/// RocksDB still open while the process exits aborted it ("pthread lock:
/// Invalid argument") in CI, when the API's thread was left running.
pub struct Running {
    stop: CancellationToken,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop.cancel();
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!("the scoring API's thread panicked");
        }
    }
}

async fn score(State(api): State<Arc<Api>>, uri: Uri, headers: HeaderMap, body: Body) -> Response {
    let started = Instant::now();
    // A client that trickles its body holds only its own connection, and
    // not past this: each connection is a task of its own.
    let read = axum::body::to_bytes(body, api.settings.max_body_bytes);
    let body = match tokio::time::timeout(BODY_READ_TIMEOUT, read).await {
        Ok(Ok(body)) => body,
        Ok(Err(e)) => {
            let too_long = std::error::Error::source(&e)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
            let (status, message) = match too_long {
                true => (
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!(
                        "the body is longer than {} bytes (serve.max_body_bytes)",
                        api.settings.max_body_bytes
                    ),
                ),
                false => (StatusCode::BAD_REQUEST, format!("the body broke off: {e}")),
            };
            return served(started, status, &json!({ "error": message }), false);
        }
        Err(_) => {
            let message = format!(
                "the body did not arrive within {} s",
                BODY_READ_TIMEOUT.as_secs()
            );
            return served(
                started,
                StatusCode::REQUEST_TIMEOUT,
                &json!({ "error": message }),
                false,
            );
        }
    };
    let features = uri
        .query()
        .is_some_and(|q| q.split('&').any(|p| p == "features=true"));
    let forwarded = headers.contains_key(FORWARDED);
    let request = Request {
        features,
        query: uri.query().map(str::to_owned),
        forwarded,
    };
    let (status, body, fallback) = answer(&api, &body, request).await;
    served(started, status, &body, fallback)
}

/// The answer, counted.
fn served(started: Instant, status: StatusCode, body: &Value, fallback: bool) -> Response {
    RequestServed {
        status: status.as_u16(),
        seconds: started.elapsed().as_secs_f64(),
        fallback,
    }
    .emit();
    json_response(status, body)
}

fn json_response(status: StatusCode, body: &Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// What the request asked besides its records.
struct Request {
    features: bool,
    query: Option<String>,
    /// Sent by another instance: score what is held here, forward nothing.
    forwarded: bool,
}

/// One record's answer.
enum ItemAnswer {
    Scored(Value),
    /// What the stream would dead-letter: 422 with its kind.
    Refused {
        kind: String,
        message: String,
    },
    /// Not scored: this status and why.
    Failed {
        status: StatusCode,
        message: String,
    },
}

/// The status, the body, and whether the fallback answered.
async fn answer(api: &Arc<Api>, body: &[u8], request: Request) -> (StatusCode, Value, bool) {
    if let Some(why) = api.health.not_ready_because() {
        return error(StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {why}"));
    }
    // Each record's own bytes go to the stream's decoder (and to the
    // topic, with `publish`): re-serialised, a duplicate key or a number's
    // spelling would be lost, and the record decoded otherwise than the
    // stream decodes it.
    let (items, single) = match records_of(body) {
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("invalid JSON: {e}")),
        Ok(parsed) => parsed,
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
    // Scored in a task of its own, so that the deadline is kept even while
    // the scoring holds its thread (it yields only between stages).
    let items = Arc::new(items);
    let forwarded = request.forwarded;
    let mut scoring = tokio::spawn({
        let (api, items) = (Arc::clone(api), Arc::clone(&items));
        async move { score_items(&api, &items, &request).await }
    });
    let scored = match tokio::time::timeout(api.settings.deadline, &mut scoring).await {
        Err(_) => {
            // Its answer would come too late: stop it at its next yield.
            scoring.abort();
            None
        }
        Ok(Err(e)) => Some(Err(format!("the scoring task failed: {e}"))),
        Ok(Ok(answers)) => Some(answers),
    };
    // Published after scoring: the stream must not fold a request before
    // the API has read the state without it. A forwarded request was
    // published, or not, by the instance it came to.
    if let Some(publisher) = api.publisher.as_ref().filter(|_| !forwarded)
        && let Err(e) = publish(api, publisher, &items).await
    {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the request was not published to the input topic: {e}"),
        );
    }
    match scored {
        None => past_deadline(api, &items, single),
        Some(Err(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, e),
        Some(Ok(answers)) => rendered(answers, single),
    }
}

/// The body's records, each as sent, and whether it was one record alone
/// (not an array).
fn records_of(body: &[u8]) -> Result<(Vec<Box<RawValue>>, bool), serde_json::Error> {
    let whole: &RawValue = serde_json::from_slice(body)?;
    match whole.get().starts_with('[') {
        true => Ok((serde_json::from_str(whole.get())?, false)),
        false => Ok((vec![whole.to_owned()], true)),
    }
}

/// Every item's answer, in order: those held here scored here, the others
/// by the instances holding them.
async fn score_items(
    api: &Api,
    items: &[Box<RawValue>],
    request: &Request,
) -> Result<Vec<ItemAnswer>, String> {
    let destinations: Vec<Destination> = match &api.router {
        None => vec![Destination::Here(NO_PARTITION); items.len()],
        Some(router) => items
            .iter()
            .map(|item| router.destination(item, request.forwarded))
            .collect(),
    };
    let here: Vec<(usize, i32)> = destinations
        .iter()
        .enumerate()
        .filter_map(|(i, d)| match d {
            Destination::Here(partition) => Some((i, *partition)),
            _ => None,
        })
        .collect();
    let local = async {
        if here.is_empty() {
            return Ok(Vec::new());
        }
        let records = here
            .iter()
            .map(|&(i, partition)| (partition, items[i].get().as_bytes().to_vec()))
            .collect();
        api.engine
            .score_request(records, request.features)
            .await
            .map_err(|e| e.to_string())
    };
    let groups = by_holder(&destinations, items);
    let remote = futures::future::join_all(groups.iter().map(|(url, group)| async move {
        let router = api.router.as_ref().expect("only a router forwards");
        let values: Vec<&RawValue> = group.iter().map(|(_, v)| *v).collect();
        let answered = forwarded_answers(
            router.forward(url, request.query.as_deref(), &values).await,
            url,
            values.len(),
        );
        RequestForwarded {
            outcome: match answered
                .iter()
                .all(|a| !matches!(a, ItemAnswer::Failed { .. }))
            {
                true => "answered",
                false => "failed",
            },
        }
        .emit();
        answered
    }));
    let (local, remote) = tokio::join!(local, remote);
    let mut answers: Vec<Option<ItemAnswer>> = (0..items.len()).map(|_| None).collect();
    for ((i, _), answer) in here.iter().zip(local?) {
        answers[*i] = Some(match answer {
            Answer::Scored(record) => {
                ItemAnswer::Scored(serde_json::from_slice(&record).unwrap_or(Value::Null))
            }
            Answer::Refused { kind, message } => ItemAnswer::Refused {
                kind: kind.as_str().to_owned(),
                message,
            },
        });
    }
    for ((_, group), group_answers) in groups.iter().zip(remote) {
        for ((i, _), answer) in group.iter().zip(group_answers) {
            answers[*i] = Some(answer);
        }
    }
    for (i, destination) in destinations.into_iter().enumerate() {
        if let Destination::Unavailable(message) = destination {
            answers[i] = Some(ItemAnswer::Failed {
                status: StatusCode::SERVICE_UNAVAILABLE,
                message,
            });
        }
    }
    answers
        .into_iter()
        .map(|a| a.ok_or_else(|| "a request record got no answer".to_owned()))
        .collect()
}

/// A holder's answer to a forwarded array, item by item; a failed forward,
/// or an answer that is not one per item, fails every item.
fn forwarded_answers(
    answer: Result<(StatusCode, Value), String>,
    url: &str,
    count: usize,
) -> Vec<ItemAnswer> {
    let failed = |status: StatusCode, message: String| {
        (0..count)
            .map(|_| ItemAnswer::Failed {
                status,
                message: message.clone(),
            })
            .collect()
    };
    let (status, body) = match answer {
        Err(message) => return failed(StatusCode::SERVICE_UNAVAILABLE, message),
        Ok(answer) => answer,
    };
    match body {
        Value::Array(values) if status == StatusCode::OK && values.len() == count => values
            .into_iter()
            .map(|value| match value.get("error") {
                None => ItemAnswer::Scored(value),
                Some(error) => match (error.get("kind"), error.get("status")) {
                    (Some(kind), None) => ItemAnswer::Refused {
                        kind: kind.as_str().unwrap_or_default().to_owned(),
                        message: error["message"].as_str().unwrap_or_default().to_owned(),
                    },
                    (_, status) => ItemAnswer::Failed {
                        status: status
                            .and_then(Value::as_u64)
                            .and_then(|s| StatusCode::from_u16(s as u16).ok())
                            .unwrap_or(StatusCode::SERVICE_UNAVAILABLE),
                        message: error["message"].as_str().unwrap_or_default().to_owned(),
                    },
                },
            })
            .collect(),
        body => {
            let message = body["error"].as_str().map_or_else(
                || format!("{url} answered {status}"),
                |why| format!("{url} answered {status}: {why}"),
            );
            failed(status, message)
        }
    }
}

/// One item alone gets its own status; an array is a 200 whose failed
/// items say what went wrong.
fn rendered(answers: Vec<ItemAnswer>, single: bool) -> (StatusCode, Value, bool) {
    let rendered: Vec<(StatusCode, Value)> = answers
        .into_iter()
        .map(|answer| match answer {
            ItemAnswer::Scored(value) => (StatusCode::OK, value),
            ItemAnswer::Refused { kind, message } => (
                StatusCode::UNPROCESSABLE_ENTITY,
                json!({"error": {"kind": kind, "message": message}}),
            ),
            ItemAnswer::Failed { status, message } => (
                status,
                json!({"error": {"status": status.as_u16(), "message": message}}),
            ),
        })
        .collect();
    if single {
        let (status, value) = rendered
            .into_iter()
            .next()
            .unwrap_or((StatusCode::INTERNAL_SERVER_ERROR, Value::Null));
        // A failure alone reads as every other error does.
        let value = match (&value["error"]["status"], &value["error"]["message"]) {
            (Value::Number(_), Value::String(message)) => json!({"error": message}),
            _ => value,
        };
        return (status, value, false);
    }
    let values = rendered.into_iter().map(|(_, v)| v).collect();
    (StatusCode::OK, Value::Array(values), false)
}

/// Each record to the input topic, keyed as the stream's records are.
async fn publish(
    api: &Api,
    publisher: &Publisher,
    items: &[Box<RawValue>],
) -> Result<(), rdkafka::error::KafkaError> {
    for item in items {
        let key = api
            .publish_key
            .as_deref()
            .and_then(|field| key_bytes(item, field));
        publisher
            .publish(key.as_deref(), item.get().as_bytes(), PUBLISH_WAIT)
            .await?;
    }
    Ok(())
}

/// 504, or with `serve.fallback` its decision for every record, marked.
fn past_deadline(api: &Api, items: &[Box<RawValue>], single: bool) -> (StatusCode, Value, bool) {
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

#[derive(serde::Deserialize)]
struct OwnerQuery {
    key: String,
}

/// `GET /v1/owner?key=K`: the partition a record keyed K lands on and the
/// URL of the instance that scores it, as Kafka Streams' interactive
/// queries tell a client where a key lives. With windows kept per
/// instance, every instance serves every key.
async fn owner(State(api): State<Arc<Api>>, Query(query): Query<OwnerQuery>) -> Response {
    let Some(router) = &api.router else {
        return json_response(
            StatusCode::OK,
            &json!({"key": query.key, "partition": null, "url": api.url, "here": true}),
        );
    };
    let partition = router.partition_of(query.key.as_bytes());
    let holder = router.checkpoint.holder(partition, &router.own_url);
    let url = match holder {
        Ok(Holder::Here) => router.own_url.clone(),
        Ok(Holder::At(url)) => url,
        Ok(Holder::Unknown) => {
            return json_response(
                StatusCode::SERVICE_UNAVAILABLE,
                &json!({"error": format!("partition {partition} is moving between instances; try again"), "partition": partition}),
            );
        }
        Err(e) => {
            return json_response(
                StatusCode::SERVICE_UNAVAILABLE,
                &json!({"error": e.to_string(), "partition": partition}),
            );
        }
    };
    let here = url == router.own_url;
    json_response(
        StatusCode::OK,
        &json!({"key": query.key, "partition": partition, "url": url, "here": here}),
    )
}
