//! `GET /sdk/warbler.js`, `/sdk/warbler.mjs`, `/sdk/warbler.d.ts`: the JavaScript SDK
//! (`assets/sdk/`), embedded in the binary, with an ETag, revalidating cache headers, and
//! CORS open to every origin (module scripts from other origins need it; the files hold
//! no secret).

use std::sync::LazyLock;

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use sha2::{Digest, Sha256};

use super::{Method, RouteTable};

const JAVASCRIPT: &str = "text/javascript; charset=utf-8";
const TYPESCRIPT: &str = "application/typescript; charset=utf-8";

/// One embedded file with its precomputed strong ETag.
struct Asset {
    body: &'static str,
    content_type: &'static str,
    etag: HeaderValue,
}

impl Asset {
    fn new(body: &'static str, content_type: &'static str) -> Self {
        let digest = Sha256::digest(body.as_bytes());
        let hex = crate::auth::hex(&digest[..12]);
        let etag = HeaderValue::from_str(&format!("\"{hex}\"")).expect("hex is a header value");
        Self {
            body,
            content_type,
            etag,
        }
    }

    fn respond(&self, request: &HeaderMap) -> Response {
        let matches = request
            .get(header::IF_NONE_MATCH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                v.split(',')
                    .any(|t| t.trim() == "*" || t.trim().trim_start_matches("W/") == self.etag)
            });
        let headers = [
            (header::ETAG, self.etag.clone()),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=300, must-revalidate"),
            ),
            (
                header::ACCESS_CONTROL_ALLOW_ORIGIN,
                HeaderValue::from_static("*"),
            ),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
        ];
        if matches {
            return (StatusCode::NOT_MODIFIED, headers).into_response();
        }
        let content_type = [(
            header::CONTENT_TYPE,
            HeaderValue::from_static(self.content_type),
        )];
        (headers, content_type, self.body).into_response()
    }
}

static UMD: LazyLock<Asset> =
    LazyLock::new(|| Asset::new(include_str!("../../assets/sdk/warbler.js"), JAVASCRIPT));
static MODULE: LazyLock<Asset> =
    LazyLock::new(|| Asset::new(include_str!("../../assets/sdk/warbler.mjs"), JAVASCRIPT));
static TYPES: LazyLock<Asset> =
    LazyLock::new(|| Asset::new(include_str!("../../assets/sdk/warbler.d.ts"), TYPESCRIPT));

pub fn routes(t: &mut RouteTable) {
    t.add(
        "/sdk/warbler.js",
        &[Method::GET],
        get(|h: HeaderMap| async move { UMD.respond(&h) }),
    );
    t.add(
        "/sdk/warbler.mjs",
        &[Method::GET],
        get(|h: HeaderMap| async move { MODULE.respond(&h) }),
    );
    t.add(
        "/sdk/warbler.d.ts",
        &[Method::GET],
        get(|h: HeaderMap| async move { TYPES.respond(&h) }),
    );
}

#[cfg(test)]
mod tests {
    /// `warbler.mjs` is the `<core>` block of `warbler.js`, dedented, between a header and
    /// the exports. Run with `WARBLER_BLESS=1` to rewrite it after editing `warbler.js`.
    fn expected_module() -> String {
        let umd = include_str!("../../assets/sdk/warbler.js");
        let start = umd.find("  // <core>").expect("core start");
        let start = start + umd[start..].find('\n').expect("newline") + 1;
        let end = umd.find("  // </core>").expect("core end");
        let core: String = umd[start..end]
            .split_inclusive('\n')
            .map(|line| line.strip_prefix("  ").unwrap_or(line))
            .collect();
        format!(
            "/*! Warbler JavaScript SDK 0.1.0, ES module build: the code of warbler.js with exports.\n \
             * Served by every Warbler server at /sdk/warbler.mjs. Apache-2.0. Documentation: docs/sdk.md. */\n\
             {core}\nexport {{ Client, register, showNotification, WarblerError, VERSION }};\n\
             export default Warbler;\n"
        )
    }

    #[test]
    fn the_es_module_build_is_the_umd_core_with_exports() {
        let expected = expected_module();
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/assets/sdk/warbler.mjs");
        if std::env::var_os("WARBLER_BLESS").is_some() {
            std::fs::write(path, &expected).expect("write warbler.mjs");
        }
        assert!(
            include_str!("../../assets/sdk/warbler.mjs") == expected,
            "assets/sdk/warbler.mjs is stale: rerun this test with WARBLER_BLESS=1"
        );
    }
}
