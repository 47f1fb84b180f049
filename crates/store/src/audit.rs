//! The audit chain: an append-only, hash-linked log of every change.
//!
//! Record `n` stores the hash of record `n - 1` (`prev_hash`; the first
//! record's is [`GENESIS_HASH`], 64 zeros) and its own `hash`:
//!
//! ```text
//! hash = hex(sha256(json([ "keyward-audit-v1", seq, at, actor, action,
//!                          env, subject, detail, prev_hash ])))
//! ```
//!
//! where `json` is serde_json's compact serialization of that array (no white
//! space; `env` and `subject` are `null` when absent), and `detail` is the
//! record's detail as a *string*: the exact compact JSON text stored in the
//! row. Sequence numbers start at 1 and have no gaps.
//!
//! [`crate::Store::verify_audit`] recomputes every hash and link, so an
//! edited field, a deleted or inserted record, or a reordering is reported
//! with the first sequence number where the chain breaks. (Truncating the
//! newest records is only visible against a head hash kept elsewhere:
//! [`AuditReport::head_hash`].) Nothing in the store's API updates or
//! deletes audit records.

use keyward_jose::crypto::{hex, sha256};
use serde::{Deserialize, Serialize};

use crate::records::Timestamp;

/// The `prev_hash` of the first record.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

const HASH_DOMAIN: &str = "keyward-audit-v1";

/// A stored audit record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub seq: i64,
    pub at: Timestamp,
    pub actor: String,
    pub action: String,
    pub env: Option<String>,
    pub subject: Option<String>,
    pub detail: serde_json::Value,
    /// Hex SHA-256 of the previous record ([`GENESIS_HASH`] for the first).
    pub prev_hash: String,
    /// Hex SHA-256 of this record (see the module documentation).
    pub hash: String,
}

impl AuditRecord {
    /// The hash this record's contents call for; equal to `hash` for every
    /// record the store wrote.
    pub fn expected_hash(&self) -> String {
        record_hash(
            self.seq,
            self.at,
            &self.actor,
            &self.action,
            self.env.as_deref(),
            self.subject.as_deref(),
            &self.detail.to_string(),
            &self.prev_hash,
        )
    }
}

/// What to append; the store assigns `seq` and the hashes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditEntry {
    pub at: Timestamp,
    pub actor: String,
    pub action: String,
    pub env: Option<String>,
    pub subject: Option<String>,
    pub detail: serde_json::Value,
}

/// The result of walking the whole chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditReport {
    /// Number of records in the chain.
    pub length: i64,
    /// Hash of the last record, if any.
    pub head_hash: Option<String>,
    /// The first place the chain is broken; `None` if it is intact.
    pub first_broken: Option<BrokenLink>,
    /// The head recorded earlier that the walk was asked to find, and
    /// where it is (absent when none was asked for).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected_head: Option<ExpectedHead>,
}

/// A head hash recorded earlier, looked for in the chain: records cut off
/// the end of the chain leave no break behind, but take that head with them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExpectedHead {
    pub hash: String,
    /// The sequence number of the record with that hash; `None` if no
    /// record has it.
    pub seq: Option<i64>,
}

impl AuditReport {
    /// True if no break was found.
    pub fn is_intact(&self) -> bool {
        self.first_broken.is_none()
    }

    /// True if a head was expected and no record has it.
    pub fn expected_head_missing(&self) -> bool {
        self.expected_head.as_ref().is_some_and(|e| e.seq.is_none())
    }
}

/// Where and why the chain breaks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BrokenLink {
    /// The sequence number of the record at which the break was found.
    pub seq: i64,
    pub reason: String,
}

/// The record hash defined in the module documentation. `detail` is the
/// compact JSON text of the detail.
#[allow(clippy::too_many_arguments)]
pub fn record_hash(
    seq: i64,
    at: Timestamp,
    actor: &str,
    action: &str,
    env: Option<&str>,
    subject: Option<&str>,
    detail: &str,
    prev_hash: &str,
) -> String {
    let preimage = serde_json::json!([
        HASH_DOMAIN,
        seq,
        at,
        actor,
        action,
        env,
        subject,
        detail,
        prev_hash
    ]);
    hex(&sha256(preimage.to_string().as_bytes()))
}

/// An audit row as stored, with the detail still as text.
#[derive(Debug, Clone)]
pub(crate) struct StoredAudit {
    pub seq: i64,
    pub at: Timestamp,
    pub actor: String,
    pub action: String,
    pub env: Option<String>,
    pub subject: Option<String>,
    pub detail: String,
    pub prev_hash: String,
    pub hash: String,
}

impl StoredAudit {
    fn computed_hash(&self) -> String {
        record_hash(
            self.seq,
            self.at,
            &self.actor,
            &self.action,
            self.env.as_deref(),
            self.subject.as_deref(),
            &self.detail,
            &self.prev_hash,
        )
    }
}

/// Checks records one at a time, in `seq` order.
#[derive(Debug)]
pub(crate) struct ChainWalker {
    expected_seq: i64,
    prev_hash: String,
    length: i64,
    first_broken: Option<BrokenLink>,
    expected_head: Option<ExpectedHead>,
}

impl ChainWalker {
    pub fn new() -> Self {
        ChainWalker {
            expected_seq: 1,
            prev_hash: GENESIS_HASH.to_string(),
            length: 0,
            first_broken: None,
            expected_head: None,
        }
    }

    /// Also looks for the record whose hash is `hash`.
    pub fn expecting_head(mut self, hash: &str) -> Self {
        self.expected_head = Some(ExpectedHead {
            hash: hash.to_string(),
            seq: None,
        });
        self
    }

    pub fn push(&mut self, rec: &StoredAudit) {
        self.length += 1;
        if self.first_broken.is_none() {
            if let Some(reason) = self.check(rec) {
                self.first_broken = Some(BrokenLink {
                    seq: rec.seq,
                    reason,
                });
            }
        }
        if let Some(e) = &mut self.expected_head {
            if e.seq.is_none() && e.hash == rec.hash {
                e.seq = Some(rec.seq);
            }
        }
        self.expected_seq = rec.seq.saturating_add(1);
        self.prev_hash.clone_from(&rec.hash);
    }

    fn check(&self, rec: &StoredAudit) -> Option<String> {
        if rec.seq != self.expected_seq {
            return Some(format!("sequence gap: expected {}", self.expected_seq));
        }
        if rec.prev_hash != self.prev_hash {
            return Some(if rec.seq == 1 {
                "prev_hash of the first record is not the genesis hash".to_string()
            } else {
                format!("prev_hash does not match record {}", rec.seq - 1)
            });
        }
        if serde_json::from_str::<serde_json::Value>(&rec.detail).is_err() {
            return Some("detail is not valid JSON".to_string());
        }
        if rec.computed_hash() != rec.hash {
            return Some("hash does not match the record's contents".to_string());
        }
        None
    }

    pub fn finish(self) -> AuditReport {
        AuditReport {
            length: self.length,
            head_hash: (self.length > 0).then_some(self.prev_hash),
            first_broken: self.first_broken,
            expected_head: self.expected_head,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(n: i64) -> Vec<StoredAudit> {
        let mut prev = GENESIS_HASH.to_string();
        (1..=n)
            .map(|seq| {
                let mut r = StoredAudit {
                    seq,
                    at: 1000 + seq,
                    actor: "tester".into(),
                    action: "thing.do".into(),
                    env: Some("prod".into()),
                    subject: None,
                    detail: format!("{{\"n\":{seq}}}"),
                    prev_hash: prev.clone(),
                    hash: String::new(),
                };
                r.hash = r.computed_hash();
                prev.clone_from(&r.hash);
                r
            })
            .collect()
    }

    fn walk(rows: &[StoredAudit]) -> AuditReport {
        let mut w = ChainWalker::new();
        rows.iter().for_each(|r| w.push(r));
        w.finish()
    }

    #[test]
    fn expected_head_is_found_or_missing() {
        let rows = chain(5);
        let find = |rows: &[StoredAudit], h: &str| {
            let mut w = ChainWalker::new().expecting_head(h);
            rows.iter().for_each(|r| w.push(r));
            w.finish()
        };
        let rep = find(&rows, &rows[2].hash);
        assert_eq!(rep.expected_head.as_ref().unwrap().seq, Some(3));
        assert!(rep.is_intact() && !rep.expected_head_missing());
        // The newest two records cut off: still intact, but the head is gone.
        let rep = find(&rows[..3], &rows[4].hash);
        assert!(rep.is_intact() && rep.expected_head_missing());
        assert!(walk(&rows).expected_head.is_none());
    }

    #[test]
    fn intact_chain() {
        let rows = chain(5);
        let rep = walk(&rows);
        assert_eq!(rep.length, 5);
        assert_eq!(rep.head_hash.as_deref(), Some(rows[4].hash.as_str()));
        assert!(rep.is_intact());
        let empty = walk(&[]);
        assert_eq!(empty.length, 0);
        assert_eq!(empty.head_hash, None);
        assert!(empty.is_intact());
    }

    #[test]
    fn breaks_are_located() {
        let mut rows = chain(5);
        rows[2].actor = "mallory".into();
        let rep = walk(&rows);
        assert_eq!(rep.first_broken.unwrap().seq, 3);

        let mut rows = chain(5);
        rows.remove(1);
        let b = walk(&rows).first_broken.unwrap();
        assert_eq!((b.seq, b.reason.as_str()), (3, "sequence gap: expected 2"));

        // Re-hashing an edited record still breaks the next link.
        let mut rows = chain(5);
        rows[1].detail = "{}".into();
        rows[1].hash = rows[1].computed_hash();
        let b = walk(&rows).first_broken.unwrap();
        assert_eq!(
            (b.seq, b.reason.as_str()),
            (3, "prev_hash does not match record 2")
        );

        let mut rows = chain(2);
        rows[0].detail = "{".into();
        assert_eq!(
            walk(&rows).first_broken.unwrap().reason,
            "detail is not valid JSON"
        );
    }

    #[test]
    fn hash_is_documented_form() {
        let h = record_hash(1, 2, "a", "b", None, Some("s"), "{}", GENESIS_HASH);
        let text = format!(
            "[\"keyward-audit-v1\",1,2,\"a\",\"b\",null,\"s\",\"{{}}\",\"{GENESIS_HASH}\"]"
        );
        assert_eq!(h, hex(&sha256(text.as_bytes())));
        assert_eq!(GENESIS_HASH.len(), 64);
    }
}
