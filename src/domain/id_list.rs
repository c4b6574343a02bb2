//! A list of message ids held in one buffer: what an `ack` or `opened` frame carries from
//! the client to the store. A fan-out ack names one id per delivered message; as one
//! `String` each that was an allocation per delivery on a runtime thread and a free on the
//! store's writer thread. Here the ids of a frame are two allocations however many there
//! are, and read borrowed from the frame when they hold no escapes.

use std::borrow::Cow;
use std::fmt;

use serde::de::{SeqAccess, Visitor};
use serde::ser::SerializeSeq;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Message ids in order, possibly repeated (the store ignores repeats).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct IdList {
    text: String,
    /// Where each id ends in `text`.
    ends: Vec<u32>,
}

impl IdList {
    #[must_use]
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// The `i`th id, if there is one.
    #[must_use]
    pub fn get(&self, i: usize) -> Option<&str> {
        let end = usize::try_from(*self.ends.get(i)?).ok()?;
        let start = match i.checked_sub(1) {
            Some(prev) => usize::try_from(self.ends[prev]).ok()?,
            None => 0,
        };
        self.text.get(start..end)
    }

    pub fn iter(&self) -> impl Iterator<Item = &str> + '_ {
        (0..self.len()).filter_map(|i| self.get(i))
    }

    /// Adds an id at the end. Lists are bounded far below 4 GiB by their callers (frames of
    /// at most 64 KiB, ack queues of at most 16,384 ids); an id that would pass that is
    /// dropped rather than stored at a wrong offset.
    pub fn push(&mut self, id: &str) {
        let Ok(end) = u32::try_from(self.text.len() + id.len()) else {
            return;
        };
        self.text.push_str(id);
        self.ends.push(end);
    }

    /// Adds every id of `other` at the end.
    pub fn extend_from(&mut self, other: &IdList) {
        for id in other.iter() {
            self.push(id);
        }
    }
}

impl fmt::Debug for IdList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl<'a> FromIterator<&'a str> for IdList {
    fn from_iter<I: IntoIterator<Item = &'a str>>(iter: I) -> Self {
        let mut out = IdList::default();
        for id in iter {
            out.push(id);
        }
        out
    }
}

impl From<Vec<String>> for IdList {
    fn from(ids: Vec<String>) -> Self {
        ids.iter().map(String::as_str).collect()
    }
}

/// As a list of strings, the shape it is read from.
impl Serialize for IdList {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(Some(self.len()))?;
        for id in self.iter() {
            seq.serialize_element(id)?;
        }
        seq.end()
    }
}

impl<'de> Deserialize<'de> for IdList {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Ids;
        impl<'de> Visitor<'de> for Ids {
            type Value = IdList;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list of message ids")
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<IdList, A::Error> {
                let mut out = IdList::default();
                out.ends.reserve(seq.size_hint().unwrap_or(0).min(1024));
                // Borrowed from the input when the id has no escapes.
                while let Some(id) = seq.next_element::<Borrowed<'de>>()? {
                    out.push(&id.0);
                }
                Ok(out)
            }
        }
        deserializer.deserialize_seq(Ids)
    }
}

/// A string borrowed from the input when it can be, copied when it has escapes.
struct Borrowed<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Borrowed<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Str;
        impl<'de> Visitor<'de> for Str {
            type Value = Borrowed<'de>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }

            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Borrowed(Cow::Borrowed(v)))
            }

            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Borrowed(Cow::Owned(v.to_owned())))
            }

            fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
                Ok(Borrowed(Cow::Owned(v)))
            }
        }
        deserializer.deserialize_str(Str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_read_from_json_keep_their_order_and_text() {
        let ids: IdList = serde_json::from_str(r#"["msg_a","","m\u0073g_b","msg_a"]"#).unwrap();
        assert_eq!(ids.len(), 4);
        assert_eq!(
            ids.iter().collect::<Vec<_>>(),
            ["msg_a", "", "msg_b", "msg_a"]
        );
        assert_eq!(ids.get(2), Some("msg_b"));
        assert_eq!(ids.get(4), None);
        assert!(serde_json::from_str::<IdList>(r#"["a",1]"#).is_err());
        assert!(serde_json::from_str::<IdList>(r#""a""#).is_err());
        assert!(serde_json::from_str::<IdList>("[]").unwrap().is_empty());
    }

    #[test]
    fn lists_join_and_convert() {
        let mut a: IdList = vec!["x".to_owned(), "yy".to_owned()].into();
        let b: IdList = ["z"].into_iter().collect();
        a.extend_from(&b);
        assert_eq!(a.iter().collect::<Vec<_>>(), ["x", "yy", "z"]);
        assert_eq!(format!("{a:?}"), r#"["x", "yy", "z"]"#);
    }
}
