//! Ledger entries: what one Raft log entry carries for the application,
//! and its deterministic binary encoding.
//!
//! Layout (all integers big-endian; `bytes` = u32 length then the bytes):
//!
//! ```text
//! u8     format version (1)
//! u8     kind (1 = transaction, 2 = signature)
//! u8     has claims digest (0 or 1), then 32 bytes if 1
//! u32    number of maps, then per map in ascending name order:
//!          bytes  map name (UTF-8)
//!          u32    number of writes, then per write in ascending key order:
//!                   bytes  key
//!                   u8     0 = remove, 1 = write, then bytes value if 1
//! ```
//!
//! The same write set always encodes to the same bytes, so every node and
//! an offline auditor compute the same digest of it.

use sha2::{Digest, Sha256};

use crate::kv::{MapWrites, WriteSet};

pub const FORMAT_VERSION: u8 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// An application or governance transaction.
    Transaction = 1,
    /// A signature over the Merkle root: its write set writes one
    /// [`crate::history::SignatureRecord`] (JSON) to
    /// `public:ccf.internal.signatures`.
    Signature = 2,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerEntry {
    pub kind: EntryKind,
    pub claims_digest: Option<[u8; 32]>,
    pub write_set: WriteSet,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EntryError {
    #[error("entry truncated at byte {0}")]
    Truncated(usize),
    #[error("unsupported entry format version {0}")]
    Version(u8),
    #[error("unknown entry kind {0}")]
    Kind(u8),
    #[error("bad flag byte {value} at byte {at}")]
    Flag { value: u8, at: usize },
    #[error("map name at byte {0} is not UTF-8")]
    MapName(usize),
    #[error("maps or keys out of order (or repeated) at byte {0}")]
    Order(usize),
    #[error("{0} trailing bytes after the entry")]
    Trailing(usize),
}

impl LedgerEntry {
    pub fn transaction(write_set: WriteSet) -> Self {
        LedgerEntry {
            kind: EntryKind::Transaction,
            claims_digest: None,
            write_set,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![FORMAT_VERSION, self.kind as u8];
        match &self.claims_digest {
            Some(d) => {
                out.push(1);
                out.extend_from_slice(d);
            }
            None => out.push(0),
        }
        encode_write_set(&self.write_set, &mut out);
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, EntryError> {
        let mut r = Reader { bytes, at: 0 };
        let version = r.u8()?;
        if version != FORMAT_VERSION {
            return Err(EntryError::Version(version));
        }
        let kind = match r.u8()? {
            1 => EntryKind::Transaction,
            2 => EntryKind::Signature,
            k => return Err(EntryError::Kind(k)),
        };
        let claims_digest = match r.flag()? {
            true => Some(r.take(32)?.try_into().expect("32 bytes")),
            false => None,
        };
        let write_set = decode_write_set(&mut r)?;
        if r.at != bytes.len() {
            return Err(EntryError::Trailing(bytes.len() - r.at));
        }
        Ok(LedgerEntry {
            kind,
            claims_digest,
            write_set,
        })
    }
}

/// SHA-256 of the write set's encoding.
pub fn write_set_digest(ws: &WriteSet) -> [u8; 32] {
    let mut buf = Vec::new();
    encode_write_set(ws, &mut buf);
    Sha256::digest(&buf).into()
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_be_bytes());
    out.extend_from_slice(b);
}

fn encode_write_set(ws: &WriteSet, out: &mut Vec<u8>) {
    out.extend_from_slice(&(ws.maps.len() as u32).to_be_bytes());
    for (name, mw) in &ws.maps {
        put_bytes(out, name.as_bytes());
        out.extend_from_slice(&(mw.writes.len() as u32).to_be_bytes());
        for (k, w) in &mw.writes {
            put_bytes(out, k);
            match w {
                Some(v) => {
                    out.push(1);
                    put_bytes(out, v);
                }
                None => out.push(0),
            }
        }
    }
}

fn decode_write_set(r: &mut Reader<'_>) -> Result<WriteSet, EntryError> {
    let mut ws = WriteSet::default();
    let maps = r.u32()?;
    let mut last_name: Option<String> = None;
    for _ in 0..maps {
        let at = r.at;
        let name = String::from_utf8(r.bytes()?.to_vec()).map_err(|_| EntryError::MapName(at))?;
        if last_name.as_ref().is_some_and(|l| *l >= name) {
            return Err(EntryError::Order(at));
        }
        let mut mw = MapWrites::default();
        let writes = r.u32()?;
        let mut last_key: Option<Vec<u8>> = None;
        for _ in 0..writes {
            let at = r.at;
            let key = r.bytes()?.to_vec();
            if last_key.as_ref().is_some_and(|l| *l >= key) {
                return Err(EntryError::Order(at));
            }
            let value = match r.flag()? {
                true => Some(r.bytes()?.to_vec()),
                false => None,
            };
            last_key = Some(key.clone());
            mw.writes.insert(key, value);
        }
        last_name = Some(name.clone());
        ws.maps.insert(name, mw);
    }
    Ok(ws)
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], EntryError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|e| *e <= self.bytes.len())
            .ok_or(EntryError::Truncated(self.at))?;
        let out = &self.bytes[self.at..end];
        self.at = end;
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, EntryError> {
        Ok(self.take(1)?[0])
    }

    fn flag(&mut self) -> Result<bool, EntryError> {
        let at = self.at;
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            value => Err(EntryError::Flag { value, at }),
        }
    }

    fn u32(&mut self) -> Result<u32, EntryError> {
        Ok(u32::from_be_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }

    fn bytes(&mut self) -> Result<&'a [u8], EntryError> {
        let n = self.u32()? as usize;
        self.take(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> LedgerEntry {
        let mut ws = WriteSet::default();
        ws.put("public:records", b"1", b"hello");
        ws.remove("public:records", b"2");
        ws.put("private:secret", b"k", b"");
        LedgerEntry {
            kind: EntryKind::Transaction,
            claims_digest: Some([7; 32]),
            write_set: ws,
        }
    }

    #[test]
    fn known_encoding() {
        let mut ws = WriteSet::default();
        ws.put("m", b"k", b"v");
        let bytes = LedgerEntry::transaction(ws).encode();
        let expected: Vec<u8> = [
            &[1u8, 1, 0][..],
            &[0, 0, 0, 1],
            &[0, 0, 0, 1, b'm'],
            &[0, 0, 0, 1],
            &[0, 0, 0, 1, b'k'],
            &[1, 0, 0, 0, 1, b'v'],
        ]
        .concat();
        assert_eq!(bytes, expected);
    }

    #[test]
    fn every_truncation_and_trailing_garbage_is_an_error() {
        let bytes = sample().encode();
        assert_eq!(LedgerEntry::decode(&bytes).unwrap(), sample());
        for n in 0..bytes.len() {
            assert!(
                LedgerEntry::decode(&bytes[..n]).is_err(),
                "prefix {n} decoded"
            );
        }
        let mut long = bytes.clone();
        long.push(0);
        assert_eq!(LedgerEntry::decode(&long), Err(EntryError::Trailing(1)));
    }

    #[test]
    fn huge_lengths_do_not_allocate_or_panic() {
        let bytes = [1u8, 1, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff];
        assert!(LedgerEntry::decode(&bytes).is_err());
    }

    fn arb_write_set() -> impl Strategy<Value = WriteSet> {
        let writes = proptest::collection::btree_map(
            proptest::collection::vec(any::<u8>(), 0..8),
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..8)),
            0..5,
        );
        proptest::collection::btree_map("[a-z:.]{0,12}", writes, 0..4).prop_map(|maps| WriteSet {
            maps: maps
                .into_iter()
                .map(|(k, writes)| (k, MapWrites { writes }))
                .collect(),
        })
    }

    proptest! {
        #[test]
        fn decode_inverts_encode(ws in arb_write_set(), claims in proptest::option::of(any::<[u8; 32]>())) {
            let e = LedgerEntry { kind: EntryKind::Transaction, claims_digest: claims, write_set: ws };
            let bytes = e.encode();
            prop_assert_eq!(LedgerEntry::decode(&bytes).unwrap(), e.clone());
            // Deterministic: encoding the decoded entry gives the same bytes.
            prop_assert_eq!(LedgerEntry::decode(&bytes).unwrap().encode(), bytes);
        }

        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = LedgerEntry::decode(&bytes);
        }
    }
}
