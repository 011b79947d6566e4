//! Transaction ids: `<view>.<seqno>`, where view is the Raft term of the
//! leader that appended the entry and seqno its position in the log.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TxId {
    pub view: u64,
    pub seqno: u64,
}

impl TxId {
    pub fn new(view: u64, seqno: u64) -> Self {
        TxId { view, seqno }
    }
}

impl fmt::Display for TxId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.view, self.seqno)
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("transaction id must look like <view>.<seqno> (two unsigned integers), got {0:?}")]
pub struct ParseTxIdError(pub String);

impl FromStr for TxId {
    type Err = ParseTxIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseTxIdError(s.to_string());
        let (view, seqno) = s.split_once('.').ok_or_else(err)?;
        let digits = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
        if !digits(view) || !digits(seqno) {
            return Err(err());
        }
        Ok(TxId {
            view: view.parse().map_err(|_| err())?,
            seqno: seqno.parse().map_err(|_| err())?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_garbage() {
        let id: TxId = "3.42".parse().unwrap();
        assert_eq!(id, TxId::new(3, 42));
        assert_eq!(id.to_string(), "3.42");
        for bad in ["", "3", "3.", ".4", "a.b", "3.4.5", "-1.2", "3 .4", "+3.4"] {
            assert!(bad.parse::<TxId>().is_err(), "{bad:?} parsed");
        }
    }
}
