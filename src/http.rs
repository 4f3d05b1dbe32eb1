//! What the two HTTP servers (the admin server and the request API) share:
//! serving a bound listener until the stop, and saying so if it fails.

use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Serves `router` on `listener` in a task of its own until `stop`; `what`
/// names the server in the error log.
pub fn serve_until(
    listener: TcpListener,
    router: Router,
    stop: CancellationToken,
    what: &'static str,
) {
    tokio::spawn(serve(listener, router, stop, what));
}

/// Serves `router` on `listener` until `stop`.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    stop: CancellationToken,
    what: &'static str,
) {
    let served = axum::serve(listener, router)
        .with_graceful_shutdown(stop.cancelled_owned())
        .await;
    if let Err(e) = served {
        tracing::error!(error = %e, "the {what} stopped");
    }
}
