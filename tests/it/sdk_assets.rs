//! The JavaScript SDK served by the binary: content types, ETag revalidation, cache and
//! CORS headers, and the same bytes as `assets/sdk/`.

use hyper::{Method, StatusCode};

use crate::harness::*;

#[tokio::test]
async fn sdk_files_are_served_with_content_types_etags_and_cache_headers() {
    let s = start().await;
    let files = [
        (
            "warbler.js",
            "text/javascript; charset=utf-8",
            include_str!("../../assets/sdk/warbler.js"),
        ),
        (
            "warbler.mjs",
            "text/javascript; charset=utf-8",
            include_str!("../../assets/sdk/warbler.mjs"),
        ),
        (
            "warbler.d.ts",
            "application/typescript; charset=utf-8",
            include_str!("../../assets/sdk/warbler.d.ts"),
        ),
    ];
    let mut etags = Vec::new();
    for (file, content_type, content) in files {
        let path = format!("/sdk/{file}");
        let got = s.call(Method::GET, &path, None, None).await;
        assert_eq!(got.status, StatusCode::OK, "{file}");
        assert_eq!(
            got.body.as_str(),
            Some(content),
            "{file} is served as in assets/sdk"
        );

        let head = s.request(Method::HEAD, &path, &[], None).await;
        let header = |name: &str| {
            head.headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        assert_eq!(header("content-type"), content_type, "{file}");
        assert_eq!(
            header("cache-control"),
            "public, max-age=300, must-revalidate"
        );
        assert_eq!(header("access-control-allow-origin"), "*");
        assert_eq!(header("x-content-type-options"), "nosniff");
        let etag = header("etag");
        assert!(
            etag.starts_with('"') && etag.len() == 26,
            "{file} etag {etag}"
        );

        let again = s
            .request(Method::GET, &path, &[("if-none-match", &etag)], None)
            .await;
        assert_eq!(again.status, StatusCode::NOT_MODIFIED, "{file}");
        assert_eq!(again.body, serde_json::Value::Null);
        let list = format!("\"other\", W/{etag}");
        let other = s
            .request(Method::GET, &path, &[("if-none-match", &list)], None)
            .await;
        assert_eq!(
            other.status,
            StatusCode::NOT_MODIFIED,
            "{file}: a list with a weak match"
        );
        etags.push(etag);
    }
    etags.dedup();
    assert_eq!(etags.len(), 3, "each file has its own ETag");
    s.stop().await;
}
