//! Where a request's records are scored when windows are kept per
//! partition and several instances each hold part of the partitions
//! (README "Scoring at authorisation time", several instances). A record's
//! key gives its input partition, as its producer will compute it
//! (`kafka/partitioner.rs`); the changelog's directory gives the instance
//! that holds that partition (`state/owners.rs`). Records held here are
//! scored here; the others are forwarded, one request per holder, to that
//! instance's own API, which scores them on the live state of their
//! partition. Forwarding, not a standby copy: a standby is a checkpoint
//! behind, and a card's last few seconds are what a fraud feature is for.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use serde_json::value::RawValue;

use crate::config::{Partitioner, Routing};
use crate::engine::NO_PARTITION;
use crate::kafka::partitioner::partition_for_key;
use crate::state::{Checkpoint, Holder};

/// The header a forwarded request carries: its receiver scores what it
/// holds and forwards nothing again (a partition that moved meanwhile is
/// answered 503, never sent round in a circle).
pub const FORWARDED: &str = "x-streamscore-forwarded";

/// Where one record goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// Scored here, against this partition's state.
    Here(i32),
    /// Forwarded to the instance at this URL.
    At(String),
    /// No instance can be named: 503 with this reason.
    Unavailable(String),
}

/// The routing of a request API whose windows are kept per partition.
pub struct Router {
    pub routing: Routing,
    pub partitioner: Partitioner,
    /// The input topic's partitions.
    pub partitions: i32,
    pub checkpoint: Arc<Checkpoint>,
    /// This instance's URL, as it announces itself.
    pub own_url: String,
    client: Client<HttpConnector, Full<Bytes>>,
}

impl Router {
    pub fn new(
        routing: Routing,
        partitioner: Partitioner,
        partitions: i32,
        checkpoint: Arc<Checkpoint>,
        own_url: String,
    ) -> Self {
        Self {
            routing,
            partitioner,
            partitions,
            checkpoint,
            own_url,
            client: Client::builder(TokioExecutor::new()).build(connector()),
        }
    }

    /// The partition a key's records land on.
    pub fn partition_of(&self, key: &[u8]) -> i32 {
        partition_for_key(self.partitioner, key, self.partitions)
    }

    /// Where `item` is scored. A record without its key is scored here,
    /// where the stream's decoder refuses it, as the stream would.
    pub fn destination(&self, item: &RawValue, forwarded: bool) -> Destination {
        let Some(key) = key_bytes(item, &self.routing.key) else {
            return Destination::Here(NO_PARTITION);
        };
        let partition = self.partition_of(&key);
        match self.checkpoint.holder(partition, &self.own_url) {
            Ok(Holder::Here) => Destination::Here(partition),
            Ok(Holder::At(_)) if forwarded => Destination::Unavailable(format!(
                "partition {partition} is not held here any more; ask GET /v1/owner again"
            )),
            Ok(Holder::At(url)) => Destination::At(url),
            Ok(Holder::Unknown) => Destination::Unavailable(format!(
                "partition {partition} is moving between instances; try again"
            )),
            Err(e) => Destination::Unavailable(e.to_string()),
        }
    }

    /// POSTs `items` to the instance at `url`, as a forwarded request: its
    /// status and parsed body.
    pub async fn forward(
        &self,
        url: &str,
        query: Option<&str>,
        items: &[&RawValue],
    ) -> Result<(StatusCode, Value), String> {
        let path = match query {
            Some(query) => format!("{url}/v1/score?{query}"),
            None => format!("{url}/v1/score"),
        };
        let body = serde_json::to_vec(items).map_err(|e| e.to_string())?;
        let request = Request::post(&path)
            .header("content-type", "application/json")
            .header(FORWARDED, "1")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| format!("{path}: {e}"))?;
        let response = self
            .client
            .request(request)
            .await
            .map_err(|e| format!("{url} did not answer: {e}"))?;
        let status = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("{url} broke off its answer: {e}"))?
            .to_bytes();
        let value = serde_json::from_slice(&bytes)
            .map_err(|e| format!("{url} answered something that is not JSON: {e}"))?;
        Ok((status, value))
    }
}

/// The forwarding client's connector. Without TCP_NODELAY a forwarded
/// request written in two pieces (head, then body) waited for the peer's
/// delayed acknowledgement: 79% of the hops took over 50 ms (504) in
/// `scripts/bench_api.sh --forwarded` until this was set.
fn connector() -> HttpConnector {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector
}

/// A key field's bytes as a producer keys the record: a string's own
/// bytes, any other value's JSON text. `None` for a record that is not an
/// object, or lacks the field.
pub fn key_bytes(item: &RawValue, field: &str) -> Option<Vec<u8>> {
    #[derive(serde::Deserialize)]
    struct Fields<'a>(
        #[serde(borrow)] std::collections::HashMap<std::borrow::Cow<'a, str>, &'a RawValue>,
    );
    let Fields(fields) = serde_json::from_str(item.get()).ok()?;
    match serde_json::from_str::<Value>(fields.get(field)?.get()).ok()? {
        Value::Null => None,
        Value::String(text) => Some(text.clone().into_bytes()),
        other => Some(other.to_string().into_bytes()),
    }
}

/// The items going to each instance, with their positions in the request.
pub fn by_holder<'a>(
    destinations: &[Destination],
    items: &'a [Box<RawValue>],
) -> BTreeMap<String, Vec<(usize, &'a RawValue)>> {
    let mut groups: BTreeMap<String, Vec<(usize, &RawValue)>> = BTreeMap::new();
    for (i, (destination, item)) in destinations.iter().zip(items).enumerate() {
        if let Destination::At(url) = destination {
            groups.entry(url.clone()).or_default().push((i, item));
        }
    }
    groups
}

/// Announces this instance's API as the holder of each partition it is
/// assigned, once the partition's state is restored: it follows the
/// state's restore in the consumer's rebalance callback
/// (`kafka/context.rs`).
pub struct Announcer {
    pub checkpoint: Arc<Checkpoint>,
    pub url: String,
}

impl crate::kafka::context::FollowsAssignment for Announcer {
    fn assigned(&self, _held: &std::collections::BTreeSet<i32>, added: &[i32]) {
        // Without the announcement the others answer 503 for these
        // partitions, so it is tried until it lands, as a restore is.
        for attempt in 1.. {
            match self.checkpoint.announce_holder(added, &self.url) {
                Ok(()) => return,
                Err(e) => {
                    tracing::error!(partitions = ?added, attempt, error = %e, "cannot announce the partitions' holder; trying again");
                    std::thread::sleep(std::time::Duration::from_secs(1));
                }
            }
        }
    }

    /// The next holder's announcement replaces this one's.
    fn revoked(&self, _held: &std::collections::BTreeSet<i32>, _removed: &[i32]) {}
}
