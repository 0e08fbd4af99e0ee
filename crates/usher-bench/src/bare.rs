//! `usher bench hello --bare`: the ceiling Usher's own `/healthz` is measured against.
//! A bare axum handler answering the same JSON, served by `axum::serve` in a process of
//! its own (this binary, started the way the throwaway Usher server is), with nothing
//! in front of it: no middleware, no connection limits, no session layer. What `hello`
//! serves less than this is what Usher's accept loop and middleware cost.

use axum::Router;
use axum::routing::get;
use serde::Serialize;
use tokio::net::TcpListener;

#[derive(Serialize)]
struct Health {
    status: &'static str,
}

async fn healthz() -> axum::Json<Health> {
    axum::Json(Health { status: "ok" })
}

/// Serves the bare handler on a free loopback port until the process is stopped;
/// prints `listening on URL` first, as `usher serve` does.
pub async fn serve_bare() -> anyhow::Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    println!("listening on http://{}", listener.local_addr()?);
    let app = Router::new().route("/healthz", get(healthz));
    axum::serve(listener, app).await?;
    Ok(())
}
