//! The page's files: built into the binary, or read from `WEBUI_ASSETS_DIR`.
//! Either way, only files under the assets directory can be reached, and they
//! are gzipped for browsers that accept it (uPlot shrinks from 51 kB to 23 kB).

use std::convert::Infallible;
use std::path::Path;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, any_service, get};
use rust_embed::Embed;
use tower::ServiceExt;
use tower_http::compression::CompressionLayer;
use tower_http::services::ServeDir;

#[derive(Embed)]
#[folder = "assets/"]
struct Assets;

/// The service that answers every path no route took.
pub fn service(dir: Option<&Path>) -> MethodRouter {
    let files = match dir {
        Some(dir) => {
            tracing::info!("serving the page from {}", dir.display());
            let serve_dir = ServeDir::new(dir);
            any_service(tower::service_fn(move |request: Request| {
                let serve_dir = serve_dir.clone();
                async move {
                    let response = serve_dir.oneshot(request).await?;
                    if response.status() == StatusCode::NOT_FOUND {
                        return Ok::<_, Infallible>(not_found().into_response());
                    }
                    Ok(response.map(Body::new))
                }
            }))
        }
        None => get(embedded),
    };
    files.layer(CompressionLayer::new())
}

async fn embedded(request: Request) -> Response {
    let path = request.uri().path().trim_start_matches('/');
    match Assets::get(path) {
        Some(file) => (
            [
                (header::CONTENT_TYPE, file.metadata.mimetype().to_owned()),
                (header::CACHE_CONTROL, "no-cache".to_owned()),
            ],
            file.data,
        )
            .into_response(),
        None => not_found().into_response(),
    }
}

fn not_found() -> impl IntoResponse {
    (StatusCode::NOT_FOUND, "not found\n")
}
