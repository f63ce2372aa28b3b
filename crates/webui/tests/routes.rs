//! The routes, driven with `oneshot` (no socket), with Redis unreachable:
//! the redirect, the page's files, `/json`'s 503, `/history` and `/events`.

use std::path::PathBuf;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use dockercoins::CancellationToken;
use dockercoins::redis::{Redis, RedisOptions};
use http_body_util::BodyExt;
use tower::ServiceExt;

/// Nothing listens on port 1 of the loopback: connections are refused at once.
const NO_REDIS: &str = "redis://127.0.0.1:1";

fn app(assets_dir: Option<PathBuf>) -> (Router, CancellationToken) {
    let config = webui::Config {
        redis: RedisOptions::at(NO_REDIS),
        assets_dir,
    };
    let redis = Redis::new(&RedisOptions::at(NO_REDIS)).expect("a valid url");
    let shutdown = CancellationToken::new();
    let live = webui::sampler::start(redis.clone(), shutdown.clone());
    (webui::app(&config, redis, live, shutdown.clone()), shutdown)
}

async fn get(app: &Router, path: &str) -> (StatusCode, String, String) {
    let request = Request::get(path).body(Body::empty()).expect("a request");
    let response = app.clone().oneshot(request).await.expect("a response");
    let status = response.status();
    let content_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("a body")
        .to_bytes();
    (
        status,
        content_type,
        String::from_utf8_lossy(&body).into_owned(),
    )
}

#[tokio::test]
async fn root_redirects_to_the_page() {
    let (app, _stop) = app(None);
    let request = Request::get("/").body(Body::empty()).expect("a request");
    let response = app.oneshot(request).await.expect("a response");
    assert_eq!(response.status(), StatusCode::FOUND);
    // Relative, so that behind a proxy that adds a path the page stays under it.
    assert_eq!(response.headers()[header::LOCATION], "index.html");
}

/// Every URL the page uses, as written in its files: the files it loads
/// (`href`, `src`), what its script asks (`EventSource`, `fetch`) and the
/// stylesheets' `url(...)`. Each must be relative to the page (no scheme, no
/// leading `/`), so that the page works behind a proxy that serves it under a
/// path, as `kubectl proxy` does:
/// `/api/v1/namespaces/default/services/webui/proxy/index.html`.
#[tokio::test]
async fn every_url_of_the_page_is_relative() {
    let (app, _stop) = app(None);
    let mut urls = Vec::new();
    let (_, _, page) = get(&app, "/index.html").await;
    for attribute in ["href=\"", "src=\""] {
        for part in page.split(attribute).skip(1) {
            urls.push((
                "index.html",
                part.split('"').next().unwrap_or("").to_owned(),
            ));
        }
    }
    let (_, _, script) = get(&app, "/webui.js").await;
    for call in [
        "EventSource(",
        "fetch(",
        "XMLHttpRequest",
        "location.href =",
        "location =",
    ] {
        for part in script.split(call).skip(1) {
            let argument = part.trim_start().trim_start_matches(['"', '\'', '`']);
            let end = argument
                .find(['"', '\'', '`', ')'])
                .unwrap_or(argument.len());
            urls.push(("webui.js", argument[..end].to_owned()));
        }
    }
    for sheet in ["/webui.css", "/uPlot.min.css"] {
        let (_, _, css) = get(&app, sheet).await;
        for part in css.split("url(").skip(1) {
            let url = part.split(')').next().unwrap_or("");
            urls.push((sheet, url.trim_matches(['"', '\'', ' ']).to_owned()));
        }
    }
    let expected = [
        "favicon.svg",
        "uPlot.min.css",
        "webui.css",
        "uPlot.iife.min.js",
        "webui.js",
        "events",
    ];
    for url in expected {
        assert!(
            urls.iter().any(|(_, u)| u == url),
            "{url} not found in {urls:?}"
        );
    }
    for (file, url) in &urls {
        assert!(
            !url.starts_with('/') && !url.contains("://"),
            "{file}: {url} is not relative to the page"
        );
        // The event stream never ends (`events_*` tests read it); the files must be there.
        if url != "events" && !url.starts_with("data:") {
            let (status, _, _) = get(&app, &format!("/{url}")).await;
            assert_eq!(status, StatusCode::OK, "{file}: {url}");
        }
    }
}

#[tokio::test]
async fn the_page_and_everything_it_loads_are_served_from_the_binary() {
    let (app, _stop) = app(None);
    let (status, content_type, page) = get(&app, "/index.html").await;
    assert_eq!(status, StatusCode::OK);
    assert!(content_type.starts_with("text/html"), "{content_type}");
    assert!(
        page.contains(r#"<span id="speed">"#),
        "the classic #speed element"
    );
    let assets: Vec<&str> = page
        .split(['"', '\''])
        .filter(|part| part.ends_with(".js") || part.ends_with(".css") || part.ends_with(".svg"))
        .collect();
    assert!(assets.len() >= 5, "{assets:?}");
    for asset in assets {
        assert!(!asset.contains("//"), "{asset} would need the internet");
        let (status, _, _) = get(&app, &format!("/{asset}")).await;
        assert_eq!(status, StatusCode::OK, "{asset}");
    }
    let (status, _, license) = get(&app, "/licenses/uPlot-LICENSE.txt").await;
    assert_eq!(status, StatusCode::OK);
    assert!(license.contains("MIT"));
}

#[tokio::test]
async fn the_axis_font_size_is_the_one_15px_in_the_css() {
    // The workshop's update lesson runs `sed -i s/15px/50px/` on it.
    let (app, _stop) = app(None);
    let (status, content_type, css) = get(&app, "/webui.css").await;
    assert_eq!(status, StatusCode::OK);
    assert!(content_type.starts_with("text/css"), "{content_type}");
    assert_eq!(css.matches("15px").count(), 1);
    assert!(css.contains(".axis-labels, .u-legend { font-size: 15px; }"));
}

#[tokio::test]
async fn unknown_files_are_404() {
    let (app, _stop) = app(None);
    for path in ["/nope.js", "/../Cargo.toml", "/licenses/../../src/lib.rs"] {
        let (status, _, _) = get(&app, path).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
    }
}

#[tokio::test]
async fn assets_dir_serves_edits_without_a_rebuild() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    std::fs::write(dir.path().join("index.html"), "edited page").expect("write");
    let (app, _stop) = app(Some(dir.path().to_owned()));
    let (status, _, page) = get(&app, "/index.html").await;
    assert_eq!((status, page.as_str()), (StatusCode::OK, "edited page"));
    let (status, _, _) = get(&app, "/webui.js").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn json_answers_503_with_a_json_error_while_redis_is_down() {
    let (app, _stop) = app(None);
    let (status, content_type, body) = get(&app, "/json").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(content_type, "application/json");
    let body: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert!(
        body["error"].as_str().expect("an error").contains("redis"),
        "{body}"
    );
}

#[tokio::test]
async fn history_says_redis_is_down() {
    let (app, _stop) = app(None);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let body = loop {
        let (status, content_type, body) = get(&app, "/history").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(content_type, "application/json");
        let body: serde_json::Value = serde_json::from_str(&body).expect("JSON");
        if !body["status"].is_null() || std::time::Instant::now() > deadline {
            break body;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(body["series"]["time"].is_array() && body["series"]["speed"].is_array());
    let error = body["status"]["redis_error"].as_str().expect("redis_error");
    assert!(error.contains("unreachable"), "{error}");
    assert!(body["status"]["speed"].is_null());
}

#[tokio::test]
async fn events_stream_history_then_updates_and_end_on_shutdown() {
    let (app, stop) = app(None);
    let request = Request::get("/events")
        .body(Body::empty())
        .expect("a request");
    let response = app.oneshot(request).await.expect("a response");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()[header::CONTENT_TYPE],
        "text/event-stream"
    );
    let mut body = response.into_body();
    let mut next = async || {
        let frame = tokio::time::timeout(Duration::from_secs(3), body.frame()).await;
        let frame = frame.expect("an event within 3 s");
        frame.map(|f| {
            String::from_utf8_lossy(f.expect("a frame").data_ref().expect("data")).into_owned()
        })
    };
    let first = next().await.expect("the history event");
    assert!(first.starts_with("event: history\n"), "{first}");
    let second = next().await.expect("an update event");
    assert!(second.starts_with("event: update\n"), "{second}");
    assert!(second.contains(r#""redis_error":"#), "{second}");
    stop.cancel();
    assert!(next().await.is_none(), "the stream ends on shutdown");
}

#[tokio::test]
async fn files_are_gzipped_for_browsers_that_ask() {
    let (app, _stop) = app(None);
    let request = Request::get("/uPlot.iife.min.js")
        .header(header::ACCEPT_ENCODING, "gzip")
        .body(Body::empty())
        .expect("a request");
    let response = app.clone().oneshot(request).await.expect("a response");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()[header::CONTENT_ENCODING], "gzip");
    let body = response
        .into_body()
        .collect()
        .await
        .expect("a body")
        .to_bytes();
    assert!(body.len() < 30_000, "{} bytes gzipped", body.len());
    // `curl` without Accept-Encoding, and /json, get plain bytes.
    let (status, _, plain) = get(&app, "/uPlot.iife.min.js").await;
    assert_eq!(status, StatusCode::OK);
    assert!(plain.len() > 50_000);
}
