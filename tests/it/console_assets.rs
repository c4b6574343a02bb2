//! The console's files as the binary serves them: the page with a strict CSP and no-cache,
//! its versioned files cached for a year, ETags answered with 304.

use hyper::{Method, StatusCode};

use crate::harness::start;

#[tokio::test]
async fn the_console_page_has_a_strict_csp_and_its_versioned_files_are_cached_long() {
    let server = start().await;
    let (status, headers, body) = server.request_bytes(Method::GET, "/", &[], None).await;
    assert_eq!(status, StatusCode::OK);
    let h = |name: &str| headers[name].to_str().expect("ascii").to_owned();
    assert_eq!(
        h("content-security-policy"),
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
         connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    );
    assert_eq!(h("x-content-type-options"), "nosniff");
    assert_eq!(h("referrer-policy"), "no-referrer");
    assert_eq!(h("cache-control"), "no-cache");
    assert!(h("content-type").starts_with("text/html"));
    let page = String::from_utf8(body.to_vec()).expect("utf-8");
    let start = page.find("/console/").expect("versioned asset link") + "/console/".len();
    let version = &page[start..start + 24];
    assert!(version.bytes().all(|b| b.is_ascii_hexdigit()), "{version}");

    let path = format!("/console/{version}/app.js");
    let (status, headers, _) = server.request_bytes(Method::GET, &path, &[], None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        headers["cache-control"],
        "public, max-age=31536000, immutable"
    );
    assert!(headers["content-type"]
        .to_str()
        .expect("ascii")
        .starts_with("text/javascript"));
    let etag = headers["etag"].to_str().expect("ascii").to_owned();
    let (status, _, body) = server
        .request_bytes(Method::GET, &path, &[("if-none-match", &etag)], None)
        .await;
    assert_eq!(status, StatusCode::NOT_MODIFIED);
    assert!(body.is_empty());

    let (status, headers, _) = server
        .request_bytes(Method::GET, "/console/0000/app.js", &[], None)
        .await;
    assert_eq!(status, StatusCode::OK, "an old version still loads");
    assert_eq!(
        headers["cache-control"], "no-cache",
        "but is not cached long"
    );
    let (status, _, _) = server
        .request_bytes(
            Method::GET,
            &format!("/console/{version}/nope.js"),
            &[],
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    server.stop().await;
}
