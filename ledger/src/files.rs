//! Ledger files: every committed entry, appended to chunk files in the
//! node's ledger directory, in a format an auditor can read without a
//! node (see `docs/ledger-format.md`).
//!
//! Files: `ledger_<first>` is the chunk being written;
//! `ledger_<first>-<last>.committed` is a closed chunk. A chunk is closed
//! (synced, then renamed) at a signature entry once it has passed the
//! configured size, so every closed chunk ends with a signature.
//!
//! Frame, one per entry (integers big-endian):
//!
//! ```text
//! u32   frame length (bytes after this field)
//! u8    frame version (1)
//! u64   view
//! u64   seqno
//! [32]  SHA-256 of the entry's commit evidence
//! u8    content: 0 = Raft-internal entry (no ledger entry), 1 = ledger entry
//! ...   the ledger entry's encoding (crate::entry), if content is 1
//! ```

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::merkle::Hash;

pub const FRAME_VERSION: u8 = 1;
/// Bytes of a frame after its length field, before the entry.
const FRAME_FIXED: usize = 1 + 8 + 8 + 32 + 1;
/// Frames larger than this are damage, not entries.
pub const MAX_FRAME_BYTES: u32 = 1 << 30;

/// One frame as read from a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub view: u64,
    pub seqno: u64,
    pub commit_evidence_digest: Hash,
    /// The ledger entry's encoding; `None` for Raft-internal entries.
    pub entry: Option<Vec<u8>>,
}

pub fn encode_frame(frame: &Frame) -> Vec<u8> {
    let body_len = FRAME_FIXED + frame.entry.as_ref().map_or(0, Vec::len);
    let mut out = Vec::with_capacity(4 + body_len);
    out.extend_from_slice(&(body_len as u32).to_be_bytes());
    out.push(FRAME_VERSION);
    out.extend_from_slice(&frame.view.to_be_bytes());
    out.extend_from_slice(&frame.seqno.to_be_bytes());
    out.extend_from_slice(&frame.commit_evidence_digest);
    match &frame.entry {
        Some(e) => {
            out.push(1);
            out.extend_from_slice(e);
        }
        None => out.push(0),
    }
    out
}

/// Why a frame could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("truncated frame ({0} bytes left in the file)")]
    Truncated(usize),
    #[error("frame length {0} is out of range")]
    Length(u32),
    #[error("unknown frame version {0}")]
    Version(u8),
    #[error("unknown content byte {0}")]
    Content(u8),
}

/// Decodes the frame at the start of `bytes`; returns it and its size.
pub fn decode_frame(bytes: &[u8]) -> Result<(Frame, usize), FrameError> {
    if bytes.len() < 4 {
        return Err(FrameError::Truncated(bytes.len()));
    }
    let len = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    if (len as usize) < FRAME_FIXED || len > MAX_FRAME_BYTES {
        return Err(FrameError::Length(len));
    }
    let end = 4 + len as usize;
    let Some(body) = bytes.get(4..end) else {
        return Err(FrameError::Truncated(bytes.len()));
    };
    if body[0] != FRAME_VERSION {
        return Err(FrameError::Version(body[0]));
    }
    let u64_at = |i: usize| {
        let mut a = [0u8; 8];
        a.copy_from_slice(&body[i..i + 8]);
        u64::from_be_bytes(a)
    };
    let mut digest = [0u8; 32];
    digest.copy_from_slice(&body[17..49]);
    let entry = match body[49] {
        0 if body.len() == FRAME_FIXED => None,
        0 => return Err(FrameError::Length(len)),
        1 => Some(body[FRAME_FIXED..].to_vec()),
        c => return Err(FrameError::Content(c)),
    };
    Ok((
        Frame {
            view: u64_at(1),
            seqno: u64_at(9),
            commit_evidence_digest: digest,
            entry,
        },
        end,
    ))
}

/// A chunk file in a ledger directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    pub path: PathBuf,
    pub first: u64,
    /// `Some(last)` for a closed (`.committed`) chunk.
    pub last: Option<u64>,
}

/// Parses `ledger_<first>` or `ledger_<first>-<last>.committed`.
pub fn parse_chunk_name(name: &str) -> Option<(u64, Option<u64>)> {
    let rest = name.strip_prefix("ledger_")?;
    if let Some(range) = rest.strip_suffix(".committed") {
        let (a, b) = range.split_once('-')?;
        return Some((a.parse().ok()?, Some(b.parse().ok()?)));
    }
    rest.parse().ok().map(|first| (first, None))
}

/// The chunk files of `dir`, by first seqno. Other files are ignored.
pub fn list_chunks(dir: &Path) -> io::Result<Vec<Chunk>> {
    let mut chunks = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        if let Some((first, last)) = name.to_str().and_then(parse_chunk_name) {
            chunks.push(Chunk {
                path: entry.path(),
                first,
                last,
            });
        }
    }
    chunks.sort_by_key(|c| (c.first, c.last.is_none()));
    Ok(chunks)
}

/// Appends committed entries to chunk files.
pub struct LedgerWriter {
    dir: PathBuf,
    chunk_bytes: u64,
    open: Option<OpenChunk>,
    last_seqno: Option<u64>,
}

struct OpenChunk {
    first: u64,
    file: File,
    bytes: u64,
}

impl LedgerWriter {
    /// Opens `dir` (creating it), finds the last entry written, and cuts a
    /// partial frame off the end of the open chunk (a crash mid-write).
    pub fn open(dir: &Path, chunk_bytes: u64) -> io::Result<LedgerWriter> {
        std::fs::create_dir_all(dir)?;
        let chunks = list_chunks(dir)?;
        let mut writer = LedgerWriter {
            dir: dir.to_path_buf(),
            chunk_bytes,
            open: None,
            last_seqno: chunks.iter().filter_map(|c| c.last).max(),
        };
        // The open chunk is the newest file; an older un-renamed chunk is
        // left alone (the audit will report it).
        let newest_closed = chunks.iter().filter_map(|c| c.last).max();
        let open_chunk = chunks
            .iter()
            .rev()
            .find(|c| c.last.is_none() && newest_closed.is_none_or(|l| c.first > l));
        if let Some(chunk) = open_chunk {
            let mut file = OpenOptions::new()
                .read(true)
                .write(true)
                .open(&chunk.path)?;
            let mut bytes = Vec::new();
            file.read_to_end(&mut bytes)?;
            let mut at = 0;
            let mut last = None;
            while at < bytes.len() {
                match decode_frame(&bytes[at..]) {
                    Ok((frame, n)) => {
                        last = Some(frame.seqno);
                        at += n;
                    }
                    // A torn write at the very end: cut below.
                    Err(FrameError::Truncated(_)) => break,
                    Err(e) => {
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            format!("{} is damaged at byte {at}: {e}", chunk.path.display()),
                        ))
                    }
                }
            }
            if at < bytes.len() {
                tracing::warn!(file = %chunk.path.display(), at, "cutting a partial entry off the open ledger chunk");
                file.set_len(at as u64)?;
            }
            file.seek(SeekFrom::End(0))?;
            if last.is_some() {
                writer.last_seqno = writer.last_seqno.max(last);
            }
            writer.open = Some(OpenChunk {
                first: chunk.first,
                file,
                bytes: at as u64,
            });
        }
        Ok(writer)
    }

    /// The newest seqno in the files.
    pub fn last_seqno(&self) -> Option<u64> {
        self.last_seqno
    }

    /// Appends one committed entry. Entries already written (a re-apply
    /// after a restart) are skipped; a jump forward (a snapshot was
    /// installed) starts a new chunk.
    pub fn append(&mut self, frame: &Frame, is_signature: bool) -> io::Result<()> {
        if self.last_seqno.is_some_and(|l| frame.seqno <= l) {
            return Ok(());
        }
        let contiguous = self
            .last_seqno
            .map_or(frame.seqno == 0, |l| frame.seqno == l + 1);
        if !contiguous {
            // A snapshot moved us forward: the chunk so far is complete.
            self.close(true)?;
        }
        if self.open.is_none() {
            let path = self.dir.join(format!("ledger_{}", frame.seqno));
            let file = OpenOptions::new().create(true).append(true).open(path)?;
            self.open = Some(OpenChunk {
                first: frame.seqno,
                file,
                bytes: 0,
            });
        }
        let bytes = encode_frame(frame);
        if let Some(open) = self.open.as_mut() {
            open.file.write_all(&bytes)?;
            open.bytes += bytes.len() as u64;
        }
        self.last_seqno = Some(frame.seqno);
        if is_signature {
            let full = self
                .open
                .as_ref()
                .is_some_and(|o| o.bytes >= self.chunk_bytes);
            if full {
                self.close(true)?;
            } else if let Some(open) = self.open.as_ref() {
                // Signed history is on disk before anyone relies on it.
                open.file.sync_data()?;
            }
        }
        Ok(())
    }

    /// Makes everything appended so far durable. The state machine calls
    /// this before its applied state moves, so the files never lag it.
    pub fn sync(&self) -> io::Result<()> {
        match &self.open {
            Some(open) => open.file.sync_data(),
            None => Ok(()),
        }
    }

    /// Syncs the open chunk; with `rename`, closes it as `.committed`.
    fn close(&mut self, rename: bool) -> io::Result<()> {
        let Some(open) = self.open.take() else {
            return Ok(());
        };
        open.file.sync_all()?;
        if let (true, Some(last)) = (rename, self.last_seqno) {
            let from = self.dir.join(format!("ledger_{}", open.first));
            let to = self
                .dir
                .join(format!("ledger_{}-{last}.committed", open.first));
            std::fs::rename(from, to)?;
            // The rename itself must survive a crash.
            File::open(&self.dir)?.sync_all()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(seqno: u64, entry: Option<&[u8]>) -> Frame {
        Frame {
            view: 2,
            seqno,
            commit_evidence_digest: [seqno as u8; 32],
            entry: entry.map(<[u8]>::to_vec),
        }
    }

    #[test]
    fn frames_round_trip_and_damage_is_an_error() {
        for f in [frame(7, None), frame(8, Some(b"entry bytes"))] {
            let bytes = encode_frame(&f);
            assert_eq!(decode_frame(&bytes).unwrap(), (f.clone(), bytes.len()));
            for n in 0..bytes.len() {
                assert!(decode_frame(&bytes[..n]).is_err(), "prefix {n}");
            }
        }
        let mut bad = encode_frame(&frame(1, None));
        bad[4] = 9;
        assert_eq!(decode_frame(&bad), Err(FrameError::Version(9)));
        assert!(decode_frame(&[0xff, 0xff, 0xff, 0xff, 1]).is_err());
    }

    #[test]
    fn chunk_names_parse() {
        assert_eq!(parse_chunk_name("ledger_5"), Some((5, None)));
        assert_eq!(parse_chunk_name("ledger_5-9.committed"), Some((5, Some(9))));
        assert_eq!(parse_chunk_name("ledger_x"), None);
        assert_eq!(parse_chunk_name("other"), None);
    }

    #[test]
    fn writer_closes_chunks_at_signatures_and_resumes_after_a_torn_write() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = LedgerWriter::open(dir.path(), 100).unwrap();
        for s in 0..10 {
            w.append(&frame(s, Some(&[0u8; 20])), s % 5 == 4).unwrap();
        }
        let chunks = list_chunks(dir.path()).unwrap();
        let names: Vec<_> = chunks.iter().map(|c| (c.first, c.last)).collect();
        assert_eq!(names, vec![(0, Some(4)), (5, Some(9))]);
        w.append(&frame(10, None), false).unwrap();
        drop(w);
        // A torn write at the end of the open chunk.
        let open = dir.path().join("ledger_10");
        let mut f = OpenOptions::new().append(true).open(&open).unwrap();
        f.write_all(&[0, 0, 0, 200, 1, 2]).unwrap();
        drop(f);
        let mut w = LedgerWriter::open(dir.path(), 100).unwrap();
        assert_eq!(w.last_seqno(), Some(10));
        w.append(&frame(9, None), false).unwrap(); // already there: skipped
        w.append(&frame(11, None), false).unwrap();
        let bytes = std::fs::read(&open).unwrap();
        let (a, n) = decode_frame(&bytes).unwrap();
        let (b, m) = decode_frame(&bytes[n..]).unwrap();
        assert_eq!((a.seqno, b.seqno, n + m), (10, 11, bytes.len()));
        // A jump (snapshot installed) starts a new chunk.
        w.append(&frame(20, None), false).unwrap();
        assert!(dir.path().join("ledger_20").exists());
    }
}
