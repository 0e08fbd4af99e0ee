//! The one script and the one stylesheet, compiled into the binary (no CDN, no bundler:
//! the UI works with no internet access). Pages link them with `?v=<hash>` so a new
//! release is fetched at once while an unchanged file stays cached.

use std::sync::OnceLock;

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use sha2::{Digest, Sha256};

use crate::web::WebState;

const SCRIPT: &str = include_str!("../../static/app.js");
const STYLES: &str = include_str!("../../static/app.css");
const ICON: &str = include_str!("../../static/icon.svg");

pub fn router() -> Router<WebState> {
    Router::new().route("/static/{file}", get(asset))
}

/// A short hash of the assets, for cache-busting links.
pub fn version() -> &'static str {
    static VERSION: OnceLock<String> = OnceLock::new();
    VERSION.get_or_init(|| {
        let digest = Sha256::new()
            .chain_update(SCRIPT)
            .chain_update(STYLES)
            .chain_update(ICON)
            .finalize();
        hex::encode(&digest[..6])
    })
}

async fn asset(Path(file): Path<String>) -> Response {
    let (body, kind) = match file.as_str() {
        "app.js" => (SCRIPT, "text/javascript; charset=utf-8"),
        "app.css" => (STYLES, "text/css; charset=utf-8"),
        "icon.svg" => (ICON, "image/svg+xml"),
        _ => return StatusCode::NOT_FOUND.into_response(),
    };
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=86400"),
    );
    response
}
