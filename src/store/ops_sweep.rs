//! The periodic sweep, in batches: expire messages whose TTL passed (by the expiry index),
//! forget old message records, release scheduled pushes that are due, forget idempotency
//! keys after 24 hours, and drop statistics past their retention.

use redb::ReadableTable;

use super::msg_cache;
use super::open_tables::Tables;
use super::ops_delivery::{load_message, recipients, release_entry, save_message, Outcome};
use super::ops_messages::{send_now, PushOp};
use super::records::Lifecycle;
use super::tables::{
    from_json, MailboxEntry, APPS, AUDIT, EXPIRE_CONTENT, FORGET_RECORD, IDEMPOTENCY,
    IDEMPOTENCY_EXPIRY, SCHEDULE, STATS, TOPIC_LOG,
};
use super::writer::WriterState;
use super::StoreError;

/// Most rows of each kind one sweep handles; the rest waits for the next one.
pub const SWEEP_BATCH: usize = 1000;
/// How long a message's record (its status and counts) is kept after it expired.
pub const RECORD_RETENTION_MS: u64 = 7 * 24 * 3600 * 1000;
/// How long audit records are kept.
pub const AUDIT_RETENTION_MS: u64 = 90 * 24 * 3600 * 1000;
/// How long per-minute statistics are kept.
pub const STATS_RETENTION_MS: u64 = 31 * 24 * 3600 * 1000;

/// What one sweep did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SweepReport {
    pub expired: u64,
    pub forgotten: u64,
    pub released: u64,
    /// Whether a batch was full, so another sweep should follow soon.
    pub more: bool,
}

pub(crate) fn sweep(
    tables: &mut Tables<'_>,
    state: &mut WriterState,
) -> Result<SweepReport, StoreError> {
    let now = state.clock;
    let mut report = SweepReport::default();
    state.live_only.retain(|_, (_, until)| *until > now);
    expire(tables, state, now, &mut report)?;
    release_schedules(tables, state, now, &mut report)?;
    forget_idempotency(tables, now, &mut report)?;
    if now >= state.next_stats_gc_ms {
        drop_old_stats(tables, now)?;
        drop_old_audit(tables, now)?;
        state.next_stats_gc_ms = now + 3_600_000;
    }
    Ok(report)
}

fn expire(
    tables: &mut Tables<'_>,
    state: &mut WriterState,
    now: u64,
    report: &mut SweepReport,
) -> Result<(), StoreError> {
    let due: Vec<(u64, String, String, u8)> = {
        let table = tables.expiry()?;
        let mut out = Vec::new();
        for row in table.range((0u64, "", "")..(now.saturating_add(1), "", ""))? {
            let (k, v) = row?;
            let (at, app, id) = k.value();
            if at > now {
                break;
            }
            out.push((at, app.to_owned(), id.to_owned(), v.value()));
            if out.len() >= SWEEP_BATCH {
                report.more = true;
                break;
            }
        }
        out
    };
    for (at, app, id, phase) in due {
        tables.expiry()?.remove((at, app.as_str(), id.as_str()))?;
        if phase == FORGET_RECORD {
            forget(tables, state, &app, &id)?;
            report.forgotten += 1;
            continue;
        }
        debug_assert_eq!(phase, EXPIRE_CONTENT);
        let Some(mut m) = load_message(tables, state, &app, &id)? else {
            continue;
        };
        let expires_at_ms = m.expires_at_ms;
        if let Some(topic) = m.topic.clone() {
            tables
                .txn
                .open_table(TOPIC_LOG)?
                .remove((app.as_str(), topic.as_str(), m.seq))?;
            tables.bodies()?.remove((app.as_str(), m.seq))?;
            let never = m.targeted.saturating_sub(m.acked.max(m.delivered));
            m.expired += never;
            state.count(&app, |s| s.expired += never);
            save_message(state, &app, m);
        } else {
            for device in recipients(tables, &app, &id, &m.target)? {
                let entry = tables
                    .mailbox()?
                    .get((app.as_str(), device.as_str(), m.seq))?
                    .map(|v| MailboxEntry::decode(v.value()))
                    .transpose()?;
                if let Some(entry) = entry {
                    release_entry(
                        tables,
                        state,
                        &app,
                        &device,
                        m.seq,
                        &entry,
                        Outcome::Expired,
                    )?;
                }
            }
        }
        tables.expiry()?.insert(
            (
                expires_at_ms.saturating_add(RECORD_RETENTION_MS),
                app.as_str(),
                id.as_str(),
            ),
            FORGET_RECORD,
        )?;
        report.expired += 1;
    }
    Ok(())
}

fn forget(
    tables: &mut Tables<'_>,
    state: &mut WriterState,
    app: &str,
    id: &str,
) -> Result<(), StoreError> {
    let m = load_message(tables, state, app, id)?;
    let target = m.as_ref().map_or("", |m| m.target.as_str());
    for device in recipients(tables, app, id, target)? {
        tables
            .msg_recipients()?
            .remove((app, id, device.as_str()))?;
    }
    if let Some(m) = m {
        tables.bodies()?.remove((app, m.seq))?;
    }
    msg_cache::remove(tables, &mut state.messages, app, id)
}

fn release_schedules(
    tables: &mut Tables<'_>,
    state: &mut WriterState,
    now: u64,
    report: &mut SweepReport,
) -> Result<(), StoreError> {
    let due: Vec<(u64, String, String, Vec<u8>)> = {
        let table = tables.txn.open_table(SCHEDULE)?;
        let mut out = Vec::new();
        for row in table.range((0u64, "", "")..(now.saturating_add(1), "", ""))? {
            let (k, v) = row?;
            let (at, app, id) = k.value();
            if at > now {
                break;
            }
            out.push((at, app.to_owned(), id.to_owned(), v.value().to_vec()));
            if out.len() >= SWEEP_BATCH {
                report.more = true;
                break;
            }
        }
        out
    };
    for (at, app, id, bytes) in due {
        tables
            .txn
            .open_table(SCHEDULE)?
            .remove((at, app.as_str(), id.as_str()))?;
        let still_scheduled = load_message(tables, state, &app, &id)?
            .is_some_and(|m| m.lifecycle == Lifecycle::Scheduled);
        if !still_scheduled || tables.txn.open_table(APPS)?.get(app.as_str())?.is_none() {
            continue;
        }
        let op: PushOp = from_json("schedule", &bytes)?;
        send_now(tables, state, &op, false)?;
        report.released += 1;
    }
    Ok(())
}

fn forget_idempotency(
    tables: &mut Tables<'_>,
    now: u64,
    report: &mut SweepReport,
) -> Result<(), StoreError> {
    let due: Vec<(u64, String, String)> = {
        let table = tables.txn.open_table(IDEMPOTENCY_EXPIRY)?;
        let mut out = Vec::new();
        for row in table.range((0u64, "", "")..(now.saturating_add(1), "", ""))? {
            let (k, ()) = (row?.0, ());
            let (at, app, key) = k.value();
            if at > now {
                break;
            }
            out.push((at, app.to_owned(), key.to_owned()));
            if out.len() >= SWEEP_BATCH {
                report.more = true;
                break;
            }
        }
        out
    };
    for (at, app, key) in due {
        tables
            .txn
            .open_table(IDEMPOTENCY_EXPIRY)?
            .remove((at, app.as_str(), key.as_str()))?;
        tables
            .txn
            .open_table(IDEMPOTENCY)?
            .remove((app.as_str(), key.as_str()))?;
    }
    Ok(())
}

fn drop_old_stats(tables: &mut Tables<'_>, now: u64) -> Result<(), StoreError> {
    let cutoff_minute = now.saturating_sub(STATS_RETENTION_MS) / 60_000;
    let apps: Vec<String> = {
        let table = tables.txn.open_table(APPS)?;
        let mut out = Vec::new();
        for row in table.iter()? {
            out.push(row?.0.value().to_owned());
        }
        out
    };
    let mut stats = tables.txn.open_table(STATS)?;
    for app in apps {
        let old: Vec<u64> = {
            let mut out = Vec::new();
            for row in stats.range((app.as_str(), 0u64)..(app.as_str(), cutoff_minute))? {
                out.push(row?.0.value().1);
                if out.len() >= SWEEP_BATCH {
                    break;
                }
            }
            out
        };
        for minute in old {
            stats.remove((app.as_str(), minute))?;
        }
    }
    Ok(())
}

fn drop_old_audit(tables: &mut Tables<'_>, now: u64) -> Result<(), StoreError> {
    let cutoff = now.saturating_sub(AUDIT_RETENTION_MS);
    let mut table = tables.txn.open_table(AUDIT)?;
    let old: Vec<(u64, u64)> = {
        let mut out = Vec::new();
        for row in table.range(..(cutoff, 0u64))? {
            out.push(row?.0.value());
            if out.len() >= SWEEP_BATCH {
                break;
            }
        }
        out
    };
    for key in old {
        table.remove(key)?;
    }
    Ok(())
}
