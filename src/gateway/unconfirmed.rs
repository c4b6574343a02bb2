//! Frames written to a device but not yet acknowledged. Delivery is counted from here only
//! for frames still unacknowledged after a grace period: an ack counts delivery itself, so
//! marking every frame at once would double the store writes per message for clients that
//! ack promptly (almost all of them).

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::registry::Shared;
use crate::domain::IdList;

/// How long a written frame waits for its ack before it is counted as delivered anyway.
pub const DELIVERED_GRACE: Duration = Duration::from_secs(1);
/// Most frames remembered; past it the oldest are counted at once.
pub const MAX_UNCONFIRMED: usize = 4096;

/// A written frame: when, and the frame itself (one reference to the message every session
/// shares, rather than copies of its topic and id). It keeps the frame's bytes alive until
/// its ack or the grace, at most [`MAX_UNCONFIRMED`] frames per session; the outbox held
/// them until just before anyway.
struct Entry {
    at: Instant,
    frame: Shared,
}

/// A time-ordered queue of written, unacknowledged frames.
#[derive(Default)]
pub struct Unconfirmed {
    queue: VecDeque<Entry>,
}

/// Delivery marks for the store: (seq, topic).
pub type Marks = Vec<(u64, Option<String>)>;

fn mark(e: &Entry) -> (u64, Option<String>) {
    (e.frame.seq, e.frame.topic.as_deref().map(str::to_owned))
}

fn id_of(e: &Entry) -> &str {
    e.frame.id.as_deref().unwrap_or_default()
}

impl Unconfirmed {
    /// Remembers written message frames; returns marks for any pushed out by the bound.
    pub fn written(&mut self, frames: &[Shared]) -> Marks {
        let now = Instant::now();
        for f in frames {
            if f.seq > 0 && f.id.is_some() {
                self.queue.push_back(Entry {
                    at: now,
                    frame: Arc::clone(f),
                });
            }
        }
        let excess = self.queue.len().saturating_sub(MAX_UNCONFIRMED);
        self.queue.drain(..excess).map(|e| mark(&e)).collect()
    }

    /// Forgets acknowledged frames: their ack counts their delivery.
    ///
    /// Clients ack in the order they read, so the oldest frames are matched first, one
    /// comparison each; only ids left over after that are looked for in the whole queue.
    pub fn acked(&mut self, ids: &IdList) {
        let mut matched = 0;
        while let (Some(front), Some(id)) = (self.queue.front(), ids.get(matched)) {
            if id_of(front) != id {
                break;
            }
            self.queue.pop_front();
            matched += 1;
        }
        if self.queue.is_empty() || matched == ids.len() {
            return;
        }
        let rest: HashSet<&str, foldhash::quality::RandomState> =
            ids.iter().skip(matched).collect();
        self.queue.retain(|e| !rest.contains(id_of(e)));
    }

    /// Takes the marks of frames written at least `grace` ago.
    pub fn due(&mut self, grace: Duration) -> Marks {
        let mut out = Vec::new();
        while let Some(front) = self.queue.front() {
            if front.at.elapsed() < grace {
                break;
            }
            if let Some(e) = self.queue.pop_front() {
                out.push(mark(&e));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::registry::Outgoing;
    use bytes::Bytes;

    fn frame(seq: u64, id: &str) -> Shared {
        Arc::new(Outgoing {
            seq,
            expires_at_ms: u64::MAX,
            frame: Bytes::new(),
            topic: None,
            id: Some(Arc::from(id)),
        })
    }

    #[test]
    fn acked_frames_are_never_marked_and_the_rest_are_after_the_grace() {
        let mut u = Unconfirmed::default();
        assert!(u
            .written(&[frame(1, "msg_a"), frame(2, "msg_b"), frame(0, "gap")])
            .is_empty());
        u.acked(&["msg_a"].into_iter().collect());
        assert!(u.due(Duration::from_secs(60)).is_empty(), "not yet due");
        assert_eq!(u.due(Duration::ZERO), vec![(2, None)]);
        assert!(u.due(Duration::ZERO).is_empty());
    }

    #[test]
    fn the_queue_is_bounded() {
        let mut u = Unconfirmed::default();
        let frames: Vec<Shared> = (1..=(MAX_UNCONFIRMED as u64 + 3))
            .map(|s| frame(s, "msg_x"))
            .collect();
        let overflow = u.written(&frames);
        assert_eq!(overflow, vec![(1, None), (2, None), (3, None)]);
    }
}
