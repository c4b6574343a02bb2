//! The admin console's files (`assets/console/`), embedded in the binary: `/` serves the
//! page (no-cache, ETag), `/console/{version}/{file}` its scripts, style sheet and
//! dictionaries (cached for a year under the current build's version). Every answer
//! carries a strict Content-Security-Policy: no inline script or style, nothing from
//! other origins, no framing.

use std::sync::LazyLock;

use axum::extract::Path;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use sha2::{Digest, Sha256};

use super::{ApiError, Method, RouteTable};

/// The Content-Security-Policy of every console answer.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; \
form-action 'self'";

const JS: &str = "text/javascript; charset=utf-8";

/// Every console file but the page, by name.
pub const FILES: &[(&str, &str, &[u8])] = &[
    ("api.js", JS, include_bytes!("../../assets/console/api.js")),
    ("app.js", JS, include_bytes!("../../assets/console/app.js")),
    ("dom.js", JS, include_bytes!("../../assets/console/dom.js")),
    (
        "i18n.js",
        JS,
        include_bytes!("../../assets/console/i18n.js"),
    ),
    (
        "pages_apps.js",
        JS,
        include_bytes!("../../assets/console/pages_apps.js"),
    ),
    (
        "pages_admin.js",
        JS,
        include_bytes!("../../assets/console/pages_admin.js"),
    ),
    (
        "pages_traffic.js",
        JS,
        include_bytes!("../../assets/console/pages_traffic.js"),
    ),
    (
        "en.json",
        "application/json",
        include_bytes!("../../assets/console/en.json"),
    ),
    (
        "zh.json",
        "application/json",
        include_bytes!("../../assets/console/zh.json"),
    ),
    (
        "style.css",
        "text/css; charset=utf-8",
        include_bytes!("../../assets/console/style.css"),
    ),
];

const INDEX_TEMPLATE: &str = include_str!("../../assets/console/index.html");

fn hex12(bytes: &[u8]) -> String {
    crate::auth::hex(&Sha256::digest(bytes)[..12])
}

/// The build's console version: a hash over every file, so a changed file gets new URLs.
pub static VERSION: LazyLock<String> = LazyLock::new(|| {
    let mut all = Vec::new();
    for (name, _, body) in FILES {
        all.extend_from_slice(name.as_bytes());
        all.extend_from_slice(body);
    }
    all.extend_from_slice(INDEX_TEMPLATE.as_bytes());
    hex12(&all)
});

static INDEX: LazyLock<String> = LazyLock::new(|| INDEX_TEMPLATE.replace("{{VERSION}}", &VERSION));

pub fn routes(t: &mut RouteTable) {
    t.add("/", &[Method::GET], get(index));
    t.add("/console/{version}/{file}", &[Method::GET], get(file));
}

fn respond(
    request: &HeaderMap,
    body: &'static [u8],
    content_type: &'static str,
    cache: &'static str,
) -> Response {
    let etag = format!("\"{}\"", hex12(body));
    let matches = request
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .any(|t| t.trim() == "*" || t.trim().trim_start_matches("W/") == etag)
        });
    let mut response = if matches {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (
            [(header::CONTENT_TYPE, HeaderValue::from_static(content_type))],
            body,
        )
            .into_response()
    };
    let h = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, v);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    response
}

async fn index(headers: HeaderMap) -> Response {
    respond(
        &headers,
        INDEX.as_bytes(),
        "text/html; charset=utf-8",
        "no-cache",
    )
}

async fn file(
    headers: HeaderMap,
    Path((version, name)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let (_, content_type, body) = FILES
        .iter()
        .find(|(n, _, _)| *n == name)
        .ok_or_else(|| ApiError::not_found("no such console file"))?;
    let cache = if version == *VERSION {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    Ok(respond(&headers, body, content_type, cache))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    fn keys(json: &[u8]) -> BTreeSet<String> {
        let v: serde_json::Value = serde_json::from_slice(json).expect("dictionary is JSON");
        v.as_object()
            .expect("an object")
            .iter()
            .map(|(k, v)| {
                assert!(
                    v.as_str().is_some_and(|s| !s.trim().is_empty()),
                    "{k}: every string translated"
                );
                k.clone()
            })
            .collect()
    }

    fn file(name: &str) -> &'static [u8] {
        super::FILES
            .iter()
            .find(|(n, _, _)| *n == name)
            .map(|(_, _, b)| *b)
            .expect("embedded")
    }

    #[test]
    fn both_dictionaries_have_the_same_keys_and_every_key_the_scripts_use() {
        let en = keys(file("en.json"));
        let zh = keys(file("zh.json"));
        let only_en: Vec<_> = en.difference(&zh).collect();
        let only_zh: Vec<_> = zh.difference(&en).collect();
        assert!(only_en.is_empty(), "missing in zh.json: {only_en:?}");
        assert!(only_zh.is_empty(), "missing in en.json: {only_zh:?}");
        // Every t('key') in the scripts and data-i18n="key" in the page is in the dictionaries.
        let mut sources: Vec<String> = super::FILES
            .iter()
            .filter(|(_, content_type, _)| *content_type == super::JS)
            .map(|(_, _, b)| String::from_utf8_lossy(b).into_owned())
            .collect();
        sources.push(super::INDEX_TEMPLATE.to_owned());
        for src in sources {
            for marker in ["t('", "data-i18n=\""] {
                for piece in src.split(marker).skip(1) {
                    let key: String = piece
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '.')
                        .collect();
                    assert!(en.contains(&key), "{marker}{key}: not in the dictionaries");
                }
            }
        }
    }

    #[test]
    fn every_console_file_is_embedded_and_the_page_has_no_inline_script_or_handler() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/assets/console");
        let on_disk: BTreeSet<String> = std::fs::read_dir(dir)
            .expect("console dir")
            .filter_map(Result::ok)
            .filter(|e| e.path().is_file())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n != "index.html")
            .collect();
        let embedded: BTreeSet<String> = super::FILES
            .iter()
            .map(|(n, _, _)| (*n).to_owned())
            .collect();
        assert_eq!(on_disk, embedded);
        let page = super::INDEX_TEMPLATE.to_ascii_lowercase();
        assert!(!page.contains("<script>"), "no inline script");
        assert!(!page.contains(" style="), "no inline style");
        assert!(!page.contains(" on"), "no inline event handlers");
        for (name, _, body) in super::FILES {
            let text = String::from_utf8_lossy(body);
            assert!(!text.contains("innerHTML"), "{name} uses innerHTML");
            assert!(!text.contains("insertAdjacentHTML"), "{name}");
            assert!(!text.contains("eval("), "{name}");
        }
    }
}
