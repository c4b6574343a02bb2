//! `GET /v1/openapi.json`: the OpenAPI 3.1 document of the whole HTTP API, kept in
//! `assets/openapi.json` and checked against the router by a test (every route and method
//! in both, nothing more).

use axum::http::{header, HeaderValue};
use axum::response::IntoResponse;
use axum::routing::get;

use super::{Method, RouteTable};

/// The document, embedded in the binary.
pub const DOCUMENT: &str = include_str!("../../assets/openapi.json");

pub fn routes(t: &mut RouteTable) {
    t.add("/v1/openapi.json", &[Method::GET], get(document));
}

async fn document() -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        DOCUMENT,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn documented() -> BTreeSet<(String, String)> {
        let doc: serde_json::Value = serde_json::from_str(DOCUMENT).expect("openapi.json is JSON");
        assert_eq!(doc["openapi"].as_str().map(|v| &v[..3]), Some("3.1"));
        let mut out = BTreeSet::new();
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for method in item.as_object().expect("path item").keys() {
                if ["get", "post", "put", "patch", "delete"].contains(&method.as_str()) {
                    out.insert((path.clone(), method.to_uppercase()));
                }
            }
        }
        out
    }

    #[test]
    fn every_route_is_documented_and_every_documented_route_exists() {
        let served: BTreeSet<(String, String)> = super::super::route_list()
            .into_iter()
            .flat_map(|(path, methods)| {
                methods
                    .iter()
                    .map(move |m| (path.to_owned(), m.to_string()))
            })
            // OpenAPI has no CONNECT operations; /v1/connect documents its GET upgrade.
            .filter(|(_, m)| m != "CONNECT")
            .collect();
        let documented = documented();
        let missing: Vec<_> = served.difference(&documented).collect();
        let extra: Vec<_> = documented.difference(&served).collect();
        assert!(
            missing.is_empty(),
            "routes missing from assets/openapi.json: {missing:?}"
        );
        assert!(extra.is_empty(), "documented but not served: {extra:?}");
    }
}
