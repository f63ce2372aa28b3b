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
use tower::ServiceExt;
use tower_http::compression::CompressionLayer;
use tower_http::services::ServeDir;

/// Every file of `assets/`, built into the binary (a test checks the list
/// against the directory). `include_bytes!` does what an embedding crate
/// would, without compiling one and its parser (a second `syn`) in every
/// build.
const EMBEDDED: &[(&str, &[u8])] = &[
    ("favicon.svg", include_bytes!("../assets/favicon.svg")),
    ("index.html", include_bytes!("../assets/index.html")),
    (
        "licenses/uPlot-LICENSE.txt",
        include_bytes!("../assets/licenses/uPlot-LICENSE.txt"),
    ),
    (
        "uPlot.iife.min.js",
        include_bytes!("../assets/uPlot.iife.min.js"),
    ),
    ("uPlot.min.css", include_bytes!("../assets/uPlot.min.css")),
    ("webui.css", include_bytes!("../assets/webui.css")),
    ("webui.js", include_bytes!("../assets/webui.js")),
];

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
    match EMBEDDED.iter().find(|(name, _)| *name == path) {
        Some((name, data)) => (
            [
                // The type ServeDir gives the same file from a directory.
                (
                    header::CONTENT_TYPE,
                    mime_guess::from_path(name).first_or_octet_stream().as_ref(),
                ),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            *data,
        )
            .into_response(),
        None => not_found().into_response(),
    }
}

fn not_found() -> impl IntoResponse {
    (StatusCode::NOT_FOUND, "not found\n")
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::EMBEDDED;

    fn files(dir: &Path, prefix: &str, found: &mut Vec<(String, Vec<u8>)>) {
        for entry in std::fs::read_dir(dir).expect("the assets directory") {
            let entry = entry.expect("an entry");
            let name = format!("{prefix}{}", entry.file_name().to_string_lossy());
            if entry.path().is_dir() {
                files(&entry.path(), &format!("{name}/"), found);
            } else {
                found.push((name, std::fs::read(entry.path()).expect("a file")));
            }
        }
    }

    /// A file added to `assets/` and not to the list would be missing from
    /// the binary, and served only with `WEBUI_ASSETS_DIR`.
    #[test]
    fn every_file_of_the_assets_directory_is_built_in() {
        let mut on_disk = Vec::new();
        files(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("assets"),
            "",
            &mut on_disk,
        );
        on_disk.sort();
        let mut built_in: Vec<(String, Vec<u8>)> = EMBEDDED
            .iter()
            .map(|(name, data)| ((*name).to_owned(), data.to_vec()))
            .collect();
        built_in.sort();
        let names = |files: &[(String, Vec<u8>)]| -> Vec<String> {
            files.iter().map(|(name, _)| name.clone()).collect()
        };
        assert_eq!(names(&built_in), names(&on_disk));
        assert!(
            built_in == on_disk,
            "a built-in file differs from its copy on disk"
        );
    }
}
