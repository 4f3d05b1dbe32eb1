//! The admin server: one HTTP server per instance, on loopback by default.
//! `/metrics` (Prometheus text), `/healthz` (the process is alive) and
//! `/readyz` (partitions assigned and a model loaded). Later capabilities
//! (models, drift) add their routes with [`AdminServer::merge`]; none
//! starts a server of its own. The model routes are in `models.rs`.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::telemetry::{self, Health};

pub mod models;

#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {listen} for the admin server (admin.listen): {source}")]
pub struct AdminError {
    listen: String,
    source: std::io::Error,
}

/// The routes, before the server binds.
pub struct AdminServer {
    router: Router,
}

impl AdminServer {
    pub fn new(health: Arc<Health>) -> Self {
        let router = Router::new()
            .route("/metrics", get(metrics))
            .route("/healthz", get(|| async { "ok\n" }))
            .route("/readyz", get(ready))
            .with_state(health);
        Self { router }
    }

    /// Adds another capability's routes.
    pub fn merge(mut self, routes: Router) -> Self {
        self.router = self.router.merge(routes);
        self
    }

    /// Binds `listen` (port 0 picks a free port) and serves until `stop`.
    /// Returns the bound address; a bind error stops the start.
    pub async fn start(
        self,
        listen: &str,
        stop: CancellationToken,
    ) -> Result<SocketAddr, AdminError> {
        let error = |source| AdminError {
            listen: listen.to_owned(),
            source,
        };
        let listener = TcpListener::bind(listen).await.map_err(error)?;
        let address = listener.local_addr().map_err(error)?;
        crate::http::serve_until(listener, self.router, stop, "admin server");
        tracing::info!(%address, "admin server listening (/metrics /healthz /readyz)");
        Ok(address)
    }
}

async fn metrics() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        telemetry::prometheus().render(),
    )
}

async fn ready(State(health): State<Arc<Health>>) -> impl IntoResponse {
    match health.not_ready_because() {
        None => (StatusCode::OK, "ready\n".to_owned()),
        Some(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        ),
    }
}
