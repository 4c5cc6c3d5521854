//! The dashboard page: `GET /` and its assets under `/assets/`, all embedded in the binary (the
//! gateway may have no Internet, so nothing comes from a CDN).
//!
//! The page holds no data: it is open, and it reads the API with the token the operator gives
//! it (in the URL fragment `#token=...`, which browsers never send to the server). Assets are
//! addressed as `/assets/<file>?v=<tag>`, where the tag is a hash of every embedded file, so
//! they can be cached for good: a new binary brings new addresses. The page itself is
//! revalidated on each load (`no-cache` with an `ETag`).
//!
//! uPlot (MIT, Leon Sorokin) draws the charts; `scripts/fetch-assets.sh` downloads it with a
//! pinned checksum into `assets/vendor/`, and its licence is served at
//! `/assets/vendor/uPlot-LICENSE.txt`.

use std::sync::LazyLock;

use axum::extract::Path;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use sha2::Digest;

/// One embedded file.
struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

const JS: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

/// Everything under `/assets/`.
const ASSETS: &[Asset] = &[
    Asset {
        path: "app.js",
        content_type: JS,
        body: include_bytes!("../../assets/app.js"),
    },
    Asset {
        path: "sse.js",
        content_type: JS,
        body: include_bytes!("../../assets/sse.js"),
    },
    Asset {
        path: "app.css",
        content_type: CSS,
        body: include_bytes!("../../assets/app.css"),
    },
    Asset {
        path: "vendor/uPlot.iife.min.js",
        content_type: JS,
        body: include_bytes!("../../assets/vendor/uPlot.iife.min.js"),
    },
    Asset {
        path: "vendor/uPlot.min.css",
        content_type: CSS,
        body: include_bytes!("../../assets/vendor/uPlot.min.css"),
    },
    Asset {
        path: "vendor/uPlot-LICENSE.txt",
        content_type: "text/plain; charset=utf-8",
        body: include_bytes!("../../assets/vendor/LICENSE"),
    },
];

/// The page, with `{{v}}` where the asset tag goes.
const INDEX: &str = include_str!("../../assets/index.html");

/// Scripts and styles from this origin only; no inline code, no frames, nothing elsewhere.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// What the page and assets are served with: the tag, and the page with it filled in.
struct Built {
    tag: String,
    index: String,
}

static BUILT: LazyLock<Built> = LazyLock::new(|| {
    let mut hash = sha2::Sha256::new();
    hash.update(INDEX.as_bytes());
    for a in ASSETS {
        hash.update(a.path.as_bytes());
        hash.update(a.body);
    }
    let tag: String = hash.finalize()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Built {
        index: INDEX.replace("{{v}}", &tag),
        tag,
    }
});

/// The page's routes (open: they serve no data). Merged after the API's `no-store` layer, as
/// they set their own caching.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(index))
        .route("/assets/{*path}", get(asset))
}

async fn index(headers: HeaderMap) -> Response {
    let built = &*BUILT;
    let etag = format!("\"page-{}\"", built.tag);
    serve(
        &headers,
        &etag,
        "text/html; charset=utf-8",
        "no-cache",
        built.index.as_bytes(),
    )
}

async fn asset(Path(path): Path<String>, headers: HeaderMap) -> Response {
    let Some(a) = ASSETS.iter().find(|a| a.path == path) else {
        return (
            StatusCode::NOT_FOUND,
            [(header::CACHE_CONTROL, "no-store")],
            "no such asset\n",
        )
            .into_response();
    };
    let etag = format!("\"{}\"", BUILT.tag);
    serve(
        &headers,
        &etag,
        a.content_type,
        "public, max-age=31536000, immutable",
        a.body,
    )
}

/// `200` with the body, or `304` when the client already has this version.
fn serve(
    req: &HeaderMap,
    etag: &str,
    content_type: &'static str,
    cache: &'static str,
    body: &'static [u8],
) -> Response {
    let fresh = req
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .any(|t| t.trim().trim_start_matches("W/") == etag)
        });
    let mut r = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        ([(header::CONTENT_TYPE, content_type)], body).into_response()
    };
    let h = r.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    if let Ok(v) = HeaderValue::from_str(etag) {
        h.insert(header::ETAG, v);
    }
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    r
}

/// The address that opens the dashboard of a gateway configured with `config`, with `token`
/// in the fragment when given (a wildcard `listen` address is shown as loopback).
pub fn url(config: &crate::Config, token: Option<&str>) -> String {
    let d = &config.dashboard;
    let scheme = if d.tls_cert.is_some() {
        "https"
    } else {
        "http"
    };
    let mut addr = d.listen;
    if addr.ip().is_unspecified() {
        addr.set_ip(if addr.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        });
    }
    match token {
        Some(t) => format!("{scheme}://{addr}/#token={t}"),
        None => format!("{scheme}://{addr}/"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_names_every_asset_it_loads_with_the_tag() {
        let page = &BUILT.index;
        assert!(!page.contains("{{v}}"), "every tag filled in");
        for a in ASSETS
            .iter()
            .filter(|a| a.path.ends_with(".js") || a.path.ends_with(".css"))
        {
            let addr = format!("/assets/{}?v={}", a.path, BUILT.tag);
            assert!(page.contains(&addr), "the page loads {addr}");
        }
        assert!(page.contains("uPlot-LICENSE.txt"), "the licence is linked");
    }

    #[test]
    fn dashboard_urls_carry_the_token_in_the_fragment() {
        let mut c = crate::Config::default();
        assert_eq!(url(&c, None), "http://127.0.0.1:8080/");
        assert_eq!(url(&c, Some("abc")), "http://127.0.0.1:8080/#token=abc");
        c.dashboard.listen = "0.0.0.0:9000".parse().unwrap();
        c.dashboard.tls_cert = Some("cert.pem".into());
        assert_eq!(url(&c, Some("t")), "https://127.0.0.1:9000/#token=t");
        c.dashboard.listen = "[::]:9000".parse().unwrap();
        assert_eq!(url(&c, None), "https://[::1]:9000/");
    }
}
