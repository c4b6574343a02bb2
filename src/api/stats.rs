//! `GET /v1/stats?from=&to=&step=` (API key, scope read): an app's per-minute counters,
//! summed into buckets of `step` seconds.

use axum::extract::{Query, State};
use axum::routing::get;
use axum::Json;
use serde::Deserialize;
use serde_json::json;

use crate::domain::format_rfc3339_ms;
use crate::store::records::Scope;
use crate::store::tables::StatsRow;

use super::extract::ApiKey;
use super::{ApiError, AppState, Method, RouteTable};

/// Most buckets one query returns.
pub const MAX_BUCKETS: u64 = 1440;

pub fn routes(t: &mut RouteTable) {
    t.add("/v1/stats", &[Method::GET], get(stats));
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct StatsQuery {
    from: Option<String>,
    to: Option<String>,
    step: Option<u64>,
}

fn parse_time(field: &str, value: &str) -> Result<u64, ApiError> {
    let t = time::OffsetDateTime::parse(value, &time::format_description::well_known::Rfc3339)
        .map_err(|e| ApiError::invalid(format!("{field}: not an RFC 3339 time ({e})")))?;
    u64::try_from(t.unix_timestamp_nanos() / 1_000_000)
        .map_err(|_| ApiError::invalid(format!("{field}: before 1970")))
}

async fn stats(
    State(state): State<AppState>,
    key: ApiKey,
    query: Result<Query<StatsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    key.require(Scope::Read)?;
    let Query(q) = query.map_err(|e| ApiError::invalid(e.body_text()))?;
    series(&state, &key.app, &q).map(Json)
}

/// The app's counters between `from` and `to` (default: the last hour) in `step` buckets.
pub(super) fn series(
    state: &AppState,
    app: &str,
    q: &StatsQuery,
) -> Result<serde_json::Value, ApiError> {
    let now = state.store.now_ms();
    let to =
        q.to.as_deref()
            .map(|v| parse_time("to", v))
            .transpose()?
            .unwrap_or(now);
    let from = q
        .from
        .as_deref()
        .map(|v| parse_time("from", v))
        .transpose()?
        .unwrap_or(to.saturating_sub(3_600_000));
    let step = q.step.unwrap_or(60);
    if step < 60 || step % 60 != 0 {
        return Err(ApiError::invalid("step: a multiple of 60 seconds"));
    }
    if from >= to {
        return Err(ApiError::invalid("from: must be before to"));
    }
    let step_min = step / 60;
    let (from_min, to_min) = (from / 60_000, to.div_ceil(60_000));
    let buckets = (to_min - from_min).div_ceil(step_min);
    if buckets > MAX_BUCKETS {
        return Err(ApiError::invalid(format!(
            "step: the range would need {buckets} buckets; at most {MAX_BUCKETS}"
        )));
    }
    let rows = state.store.stats(app, from_min, to_min)?;
    let mut series: Vec<StatsRow> =
        vec![StatsRow::default(); usize::try_from(buckets).unwrap_or(0)];
    for (minute, row) in rows {
        let i = usize::try_from((minute - from_min) / step_min).unwrap_or(usize::MAX);
        if let Some(bucket) = series.get_mut(i) {
            bucket.add(&row);
        }
    }
    let points: Vec<_> = series
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let t = (from_min + i as u64 * step_min) * 60_000;
            json!({"t": format_rfc3339_ms(t), "accepted": r.accepted, "delivered": r.delivered,
                   "acked": r.acked, "opened": r.opened, "expired": r.expired})
        })
        .collect();
    Ok(json!({
        "from": format_rfc3339_ms(from_min * 60_000),
        "to": format_rfc3339_ms(to_min * 60_000),
        "step": step,
        "series": points,
    }))
}
