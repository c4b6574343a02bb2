//! The route table is the router: every listed method is served on its path and every other
//! method answers 405, so the OpenAPI check against the table covers the real router.

use hyper::{Method, StatusCode};

use crate::harness::*;

fn concrete(path: &str) -> String {
    path.replace("{app}", "demo")
        .replace("{id}", "x_abc")
        .replace("{user}", "alice")
}

#[tokio::test]
async fn every_route_serves_exactly_its_listed_methods() {
    let s = start().await;
    let all = [
        Method::GET,
        Method::POST,
        Method::PUT,
        Method::PATCH,
        Method::DELETE,
    ];
    for (path, methods) in warbler::api::route_list() {
        let url = concrete(path);
        for m in &all {
            let r = s
                .client
                .raw(m.clone(), &url, None, bytes::Bytes::new())
                .await
                .expect("request");
            if methods.contains(m) {
                assert_ne!(
                    r.status,
                    StatusCode::METHOD_NOT_ALLOWED,
                    "{m} {path} is listed but not served"
                );
            } else {
                assert_eq!(
                    r.status,
                    StatusCode::METHOD_NOT_ALLOWED,
                    "{m} {path} is served but not listed"
                );
            }
        }
    }
    let doc = s.call(Method::GET, "/v1/openapi.json", None, None).await;
    assert_eq!(doc.status, StatusCode::OK);
    assert_eq!(doc.body["openapi"], "3.1.0");
    s.stop().await;
}
