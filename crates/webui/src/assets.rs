//! The page's files: built into the binary, or read from `WEBUI_ASSETS_DIR`.
//! Either way, only files under the assets directory can be reached. uPlot,
//! the largest (51 kB), is also kept gzipped (23 kB, `uPlot.iife.min.js.gz`,
//! made with `gzip -9 -n`; the lint suite checks it against the file) and
//! served so to browsers that accept it: compressing on the fly would compile
//! a compression library into every build for that one file.

use std::convert::Infallible;
use std::path::Path;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, any_service, get};
use tower::ServiceExt;
use tower_http::services::ServeDir;

/// Every file of `assets/`, built into the binary, with its gzipped copy if
/// it has one (a test checks the list against the directory).
/// `include_bytes!` does what an embedding crate would, without compiling one
/// and its parser (a second `syn`) in every build.
#[allow(clippy::type_complexity)]
const EMBEDDED: &[(&str, &[u8], Option<&[u8]>)] = &[
    ("favicon.svg", include_bytes!("../assets/favicon.svg"), None),
    ("index.html", include_bytes!("../assets/index.html"), None),
    (
        "licenses/uPlot-LICENSE.txt",
        include_bytes!("../assets/licenses/uPlot-LICENSE.txt"),
        None,
    ),
    (
        "uPlot.iife.min.js",
        include_bytes!("../assets/uPlot.iife.min.js"),
        Some(include_bytes!("../assets/uPlot.iife.min.js.gz")),
    ),
    (
        "uPlot.min.css",
        include_bytes!("../assets/uPlot.min.css"),
        None,
    ),
    ("webui.css", include_bytes!("../assets/webui.css"), None),
    ("webui.js", include_bytes!("../assets/webui.js"), None),
];

/// The service that answers every path no route took.
pub fn service(dir: Option<&Path>) -> MethodRouter {
    match dir {
        Some(dir) => {
            tracing::info!("serving the page from {}", dir.display());
            let serve_dir = ServeDir::new(dir).precompressed_gzip();
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
    }
}

async fn embedded(request: Request) -> Response {
    let path = request.uri().path().trim_start_matches('/');
    let Some((name, data, gzipped)) = EMBEDDED.iter().find(|(name, ..)| *name == path) else {
        return not_found().into_response();
    };
    // The type ServeDir gives the same file from a directory.
    let content_type = mime_guess::from_path(name).first_or_octet_stream();
    let headers = [
        (header::CONTENT_TYPE, content_type.as_ref()),
        (header::CACHE_CONTROL, "no-cache"),
        (header::VARY, "accept-encoding"),
    ];
    match gzipped {
        Some(gzipped) if accepts_gzip(&request) => {
            (headers, [(header::CONTENT_ENCODING, "gzip")], *gzipped).into_response()
        }
        _ => (headers, *data).into_response(),
    }
}

/// Whether `Accept-Encoding` names gzip (or `*`) without refusing it (`q=0`).
fn accepts_gzip(request: &Request) -> bool {
    request
        .headers()
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|coding| {
            let mut parts = coding.split(';').map(str::trim);
            let name = parts.next().unwrap_or_default();
            let refused = parts.any(|param| {
                param
                    .strip_prefix("q=")
                    .and_then(|q| q.parse::<f32>().ok())
                    .is_some_and(|q| q == 0.0)
            });
            (name.eq_ignore_ascii_case("gzip") || name == "*") && !refused
        })
}

fn not_found() -> impl IntoResponse {
    (StatusCode::NOT_FOUND, "not found\n")
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use axum::extract::Request;
    use axum::http::header;

    use super::{EMBEDDED, accepts_gzip};

    #[test]
    fn gzip_is_sent_only_to_who_accepts_it() {
        let asking = |value: &str| {
            let request = Request::builder()
                .header(header::ACCEPT_ENCODING, value)
                .body(axum::body::Body::empty())
                .expect("a request");
            accepts_gzip(&request)
        };
        assert!(asking("gzip, deflate, br"));
        assert!(asking("br;q=1.0, GZIP;q=0.5"));
        assert!(asking("*"));
        assert!(!asking("gzip;q=0, br"));
        assert!(!asking("br, deflate"));
        assert!(!asking("identity"));
    }

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
        let mut built_in: Vec<(String, Vec<u8>)> = Vec::new();
        for (name, data, gzipped) in EMBEDDED {
            built_in.push(((*name).to_owned(), data.to_vec()));
            if let Some(gzipped) = gzipped {
                built_in.push((format!("{name}.gz"), gzipped.to_vec()));
            }
        }
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
