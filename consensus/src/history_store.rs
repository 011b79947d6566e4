//! The ledger history (Merkle leaves and signatures) as the state machine
//! keeps it: what each applied entry contributes, and its RocksDB form.
//!
//! Column family `history`: key = seqno (u64 BE), value =
//! `view u64 BE ‖ write_set_digest (32) ‖ claims flag u8 (0/1) [‖ claims (32)]
//! [‖ signature record JSON]`. Loading replays every record through
//! [`History::append`], so a damaged or diverged history is caught at
//! startup as it would be at apply time.

use charter_ledger::entry::write_set_digest;
use charter_ledger::history::{
    History, LeafComponents, SignatureRecord, SIGNATURES_MAP, SIGNATURE_KEY,
};
use charter_ledger::{EntryKind, LedgerEntry, WriteSet};
use serde::{Deserialize, Serialize};

/// One applied entry's part of the history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryRecord {
    pub components: LeafComponents,
    pub signature: Option<SignatureRecord>,
}

/// What applying a normal entry means: its write set and its history record.
pub(crate) struct Decoded {
    pub write_set: WriteSet,
    pub record: HistoryRecord,
    /// Whether the bytes were a valid ledger entry.
    pub decoded: bool,
}

/// Decodes a normal entry's ledger entry. The primary only appends entries
/// it encoded itself, so failure means a bug or damage; stopping every
/// node on it would make one bad entry take down the service, so it is
/// logged and applied as an empty transaction, which keeps all nodes
/// identical.
pub(crate) fn decode_entry(view: u64, seqno: u64, bytes: &[u8]) -> Decoded {
    let (entry, decoded) = match LedgerEntry::decode(bytes) {
        Ok(entry) => (entry, true),
        Err(e) => {
            tracing::error!(view, seqno, error = %e, "undecodable ledger entry; applying it as empty");
            (LedgerEntry::transaction(WriteSet::default()), false)
        }
    };
    let signature = match entry.kind {
        EntryKind::Signature => signature_of(&entry.write_set),
        EntryKind::Transaction => None,
    };
    Decoded {
        record: HistoryRecord {
            components: LeafComponents {
                view,
                write_set_digest: write_set_digest(&entry.write_set),
                claims_digest: entry.claims_digest,
            },
            signature,
        },
        write_set: entry.write_set,
        decoded,
    }
}

/// The history record of an entry without a write set (Raft's blank and
/// membership entries).
pub(crate) fn empty_record(view: u64) -> HistoryRecord {
    HistoryRecord {
        components: LeafComponents {
            view,
            write_set_digest: write_set_digest(&WriteSet::default()),
            claims_digest: None,
        },
        signature: None,
    }
}

fn signature_of(ws: &WriteSet) -> Option<SignatureRecord> {
    let value = ws
        .maps
        .get(SIGNATURES_MAP)?
        .writes
        .get(SIGNATURE_KEY)?
        .as_ref()?;
    match serde_json::from_slice(value) {
        Ok(sig) => Some(sig),
        Err(e) => {
            // Treated as a plain transaction; the auditor will flag it.
            tracing::error!(error = %e, "signature entry with an unreadable signature record");
            None
        }
    }
}

pub(crate) fn history_key(seqno: u64) -> [u8; 8] {
    seqno.to_be_bytes()
}

pub(crate) fn encode_record(r: &HistoryRecord) -> Vec<u8> {
    let mut out = Vec::with_capacity(80);
    out.extend_from_slice(&r.components.view.to_be_bytes());
    out.extend_from_slice(&r.components.write_set_digest);
    match &r.components.claims_digest {
        Some(c) => {
            out.push(1);
            out.extend_from_slice(c);
        }
        None => out.push(0),
    }
    if let Some(sig) = &r.signature {
        // A record serialises infallibly (strings and integers only).
        out.extend_from_slice(&serde_json::to_vec(sig).unwrap_or_default());
    }
    out
}

pub(crate) fn decode_record(bytes: &[u8]) -> Result<HistoryRecord, String> {
    let take = |from: usize, n: usize| -> Result<&[u8], String> {
        bytes
            .get(from..from + n)
            .ok_or_else(|| format!("history record truncated at byte {from}"))
    };
    let view = u64::from_be_bytes(take(0, 8)?.try_into().map_err(|_| "view")?);
    let write_set_digest: [u8; 32] = take(8, 32)?.try_into().map_err(|_| "digest")?;
    let (claims_digest, rest) = match take(40, 1)?[0] {
        0 => (None, 41),
        1 => (Some(take(41, 32)?.try_into().map_err(|_| "claims")?), 73),
        f => return Err(format!("bad claims flag {f}")),
    };
    let signature = if bytes.len() > rest {
        Some(serde_json::from_slice(&bytes[rest..]).map_err(|e| format!("signature record: {e}"))?)
    } else {
        None
    };
    Ok(HistoryRecord {
        components: LeafComponents {
            view,
            write_set_digest,
            claims_digest,
        },
        signature,
    })
}

/// Appends a record, or says why this node must stop.
pub(crate) fn append(
    history: &mut History,
    seqno: u64,
    record: &HistoryRecord,
) -> Result<(), String> {
    history
        .append(seqno, record.components, record.signature.clone())
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_garbage_is_an_error() {
        let plain = HistoryRecord {
            components: LeafComponents {
                view: 3,
                write_set_digest: [1; 32],
                claims_digest: None,
            },
            signature: None,
        };
        let signed = HistoryRecord {
            components: LeafComponents {
                view: 4,
                write_set_digest: [2; 32],
                claims_digest: Some([3; 32]),
            },
            signature: Some(SignatureRecord {
                node_id: "1".into(),
                view: 4,
                seqno: 9,
                root: "00".into(),
                signature: "AA==".into(),
                cert: "pem".into(),
            }),
        };
        for r in [plain, signed] {
            let bytes = encode_record(&r);
            assert_eq!(decode_record(&bytes).unwrap(), r);
            for n in 0..41 {
                assert!(decode_record(&bytes[..n]).is_err());
            }
        }
        assert!(decode_record(&[0; 40].iter().copied().chain([7]).collect::<Vec<_>>()).is_err());
    }
}
