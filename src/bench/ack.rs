//! The `ack` frame a benchmark device sends for what it has just read: built id by id and
//! sent once per batch, as an SDK does.

/// An `ack` frame being built.
#[derive(Debug, Default)]
pub struct AckFrame {
    frame: String,
    ids: usize,
}

impl AckFrame {
    /// Adds a message id. Ids are the server's (`msg_` and base-32 characters), so nothing
    /// needs escaping.
    pub fn push(&mut self, id: &str) {
        if self.ids == 0 {
            self.frame.clear();
            self.frame.push_str(r#"{"type":"ack","ids":[""#);
        } else {
            self.frame.push_str(",\"");
        }
        self.frame.push_str(id);
        self.frame.push('"');
        self.ids += 1;
    }

    /// Ids in the frame so far.
    #[must_use]
    pub fn len(&self) -> usize {
        self.ids
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.ids == 0
    }

    /// The finished frame, if it holds any id; the next [`Self::push`] starts a new one in
    /// the same buffer (no allocation per frame, unlike [`Self::take`]).
    pub fn finish(&mut self) -> Option<&str> {
        if self.ids == 0 {
            return None;
        }
        self.frame.push_str("]}");
        self.ids = 0;
        Some(&self.frame)
    }

    /// The finished frame, if it holds any id; starts a new one.
    pub fn take(&mut self) -> Option<String> {
        if self.ids == 0 {
            return None;
        }
        self.frame.push_str("]}");
        self.ids = 0;
        Some(std::mem::take(&mut self.frame))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gateway::protocol::ClientFrame;

    #[test]
    fn the_frame_is_one_the_server_parses() {
        let mut a = AckFrame::default();
        assert_eq!(a.take(), None);
        a.push("msg_a");
        a.push("msg_b");
        assert_eq!(a.len(), 2);
        let frame = a.take().expect("a frame");
        assert!(a.is_empty());
        assert_eq!(
            ClientFrame::parse(&frame),
            Ok(ClientFrame::Ack {
                ids: ["msg_a", "msg_b"].into_iter().collect()
            })
        );
        a.push("msg_c");
        assert_eq!(
            a.take().as_deref(),
            Some(r#"{"type":"ack","ids":["msg_c"]}"#)
        );
        a.push("msg_d");
        assert_eq!(a.finish(), Some(r#"{"type":"ack","ids":["msg_d"]}"#));
        assert_eq!(a.finish(), None);
        a.push("msg_e");
        assert_eq!(a.finish(), Some(r#"{"type":"ack","ids":["msg_e"]}"#));
    }
}
