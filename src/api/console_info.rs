//! What the console's dashboard and settings pages read: `GET /v1/admin/overview` (live
//! connections and the last hour's counters over the caller's apps), `GET /v1/admin/settings`
//! (the effective configuration with secrets masked, and the served certificate), and
//! `GET /v1/admin/ca.crt` (the bootstrapped CA for clients to trust).

use std::path::PathBuf;

use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Json;
use serde_json::{json, Value};

use crate::config::TlsMode;
use crate::domain::format_rfc3339_ms;
use crate::store::tables::StatsRow;

use super::extract::Admin;
use super::{ApiError, AppState, Method, RouteTable};

/// Most apps the overview sums over.
pub const MAX_OVERVIEW_APPS: usize = 1000;
/// Largest certificate file read for the settings page.
const MAX_CERT_BYTES: u64 = 256 * 1024;

pub fn routes(t: &mut RouteTable) {
    t.add("/v1/admin/overview", &[Method::GET], get(overview));
    t.add("/v1/admin/settings", &[Method::GET], get(settings));
    t.add("/v1/admin/ca.crt", &[Method::GET], get(ca_cert));
}

async fn overview(State(state): State<AppState>, admin: Admin) -> Result<Json<Value>, ApiError> {
    let now = state.store.now_ms();
    let to_min = now / 60_000 + 1;
    let from_min = to_min - 60;
    let mut series = vec![StatsRow::default(); 60];
    let mut apps = Vec::new();
    let mut connections = 0usize;
    for app in state.store.apps(None, MAX_OVERVIEW_APPS)? {
        if !admin.sees_app(&app.name) {
            continue;
        }
        let live = state.registry.app_sessions(&app.name);
        connections += live;
        for (minute, row) in state.store.stats(&app.name, from_min, to_min)? {
            if let Some(bucket) = usize::try_from(minute - from_min)
                .ok()
                .and_then(|i| series.get_mut(i))
            {
                bucket.add(&row);
            }
        }
        apps.push(json!({"id": app.name, "connections": live, "suspended": app.suspended}));
    }
    let points: Vec<_> = series
        .iter()
        .enumerate()
        .map(|(i, r)| {
            json!({"t": format_rfc3339_ms((from_min + i as u64) * 60_000),
                   "accepted": r.accepted, "delivered": r.delivered, "acked": r.acked,
                   "opened": r.opened, "expired": r.expired})
        })
        .collect();
    Ok(Json(json!({
        "connections": connections,
        "apps": apps,
        "step": 60,
        "series": points,
    })))
}

/// Replaces the value of every key that names a secret, wherever it is.
fn mask_secrets(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                let k = k.to_ascii_lowercase();
                if ["secret", "password", "token"]
                    .iter()
                    .any(|s| k.contains(s))
                {
                    *v = json!("********");
                } else {
                    mask_secrets(v);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(mask_secrets),
        _ => {}
    }
}

fn leaf_path(state: &AppState) -> Option<PathBuf> {
    let config = state.config.borrow();
    match config.tls.mode {
        TlsMode::Auto => Some(state.data_dir.join("tls").join("server.crt")),
        TlsMode::Files => config.tls.cert.clone(),
        // Plain HTTP (`--insecure-plaintext`): no certificate to show.
        TlsMode::Off => None,
    }
}

/// Subject, issuer, names and validity of the first certificate in a PEM file.
fn describe_certificate(path: &std::path::Path) -> Value {
    use std::io::Read as _;
    let mut pem = Vec::new();
    let read = std::fs::File::open(path).and_then(|f| f.take(MAX_CERT_BYTES).read_to_end(&mut pem));
    if let Err(e) = read {
        return json!({"path": path.display().to_string(), "error": e.to_string()});
    }
    let parsed = x509_parser::pem::parse_x509_pem(&pem)
        .map_err(|e| e.to_string())
        .and_then(|(_, pem)| {
            pem.parse_x509()
                .map(|cert| {
                    let names: Vec<String> = cert
                        .subject_alternative_name()
                        .ok()
                        .flatten()
                        .map(|ext| {
                            ext.value
                                .general_names
                                .iter()
                                .map(|n| match n {
                                    x509_parser::extensions::GeneralName::DNSName(d) => {
                                        (*d).to_owned()
                                    }
                                    x509_parser::extensions::GeneralName::IPAddress(b) => {
                                        ip_text(b)
                                    }
                                    other => other.to_string(),
                                })
                                .collect()
                        })
                        .unwrap_or_default();
                    let not_after = cert.validity().not_after.timestamp();
                    let now = time::OffsetDateTime::now_utc().unix_timestamp();
                    json!({
                        "subject": cert.subject().to_string(),
                        "issuer": cert.issuer().to_string(),
                        "names": names,
                        "not_before": rfc3339(cert.validity().not_before.timestamp()),
                        "not_after": rfc3339(not_after),
                        "days_left": (not_after - now).div_euclid(86_400),
                    })
                })
                .map_err(|e| e.to_string())
        });
    match parsed {
        Ok(mut v) => {
            v["path"] = json!(path.display().to_string());
            v
        }
        Err(e) => json!({"path": path.display().to_string(), "error": e}),
    }
}

fn rfc3339(unix_secs: i64) -> String {
    u64::try_from(unix_secs).map_or_else(|_| unix_secs.to_string(), |s| format_rfc3339_ms(s * 1000))
}

fn ip_text(bytes: &[u8]) -> String {
    match bytes.len() {
        4 => {
            let a: [u8; 4] = bytes.try_into().unwrap_or_default();
            std::net::Ipv4Addr::from(a).to_string()
        }
        16 => {
            let a: [u8; 16] = bytes.try_into().unwrap_or_default();
            std::net::Ipv6Addr::from(a).to_string()
        }
        _ => format!("{bytes:02x?}"),
    }
}

async fn settings(State(state): State<AppState>, _admin: Admin) -> Result<Json<Value>, ApiError> {
    let config = state.config.borrow().clone();
    let mut effective = serde_json::to_value(&*config)
        .map_err(|_| ApiError::unavailable("the configuration could not be shown"))?;
    mask_secrets(&mut effective);
    let certificate = leaf_path(&state).map(|p| describe_certificate(&p));
    let ca_available = state.data_dir.join("tls").join("ca.crt").is_file();
    Ok(Json(json!({
        "config": effective,
        "certificate": certificate,
        "ca_available": ca_available,
        "version": env!("CARGO_PKG_VERSION"),
    })))
}

async fn ca_cert(State(state): State<AppState>, _admin: Admin) -> Result<Response, ApiError> {
    let path = state.data_dir.join("tls").join("ca.crt");
    let pem = tokio::fs::read(&path).await.map_err(|_| {
        ApiError::not_found("this server has no bootstrapped CA (tls.mode = files)")
    })?;
    Ok((
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/x-pem-file"),
            ),
            (
                header::CONTENT_DISPOSITION,
                HeaderValue::from_static("attachment; filename=\"warbler-ca.crt\""),
            ),
        ],
        pem,
    )
        .into_response())
}
