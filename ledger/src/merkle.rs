//! The ledger's Merkle tree: SHA-256, the same shape as CCF's tree (which is
//! Microsoft's `merklecpp` library), kept in memory with no I/O.
//!
//! # Hashes
//!
//! - Leaf of a transaction (CCF's "leaf components"):
//!   `SHA-256(write_set_digest ‖ SHA-256(commit_evidence) ‖ claims_digest)`,
//!   see [`leaf_hash`]. The tree itself treats leaves as opaque 32 bytes.
//! - Interior node: `SHA-256(left ‖ right)` over the two 32-byte child hashes
//!   (64 bytes in, a full SHA-256, no domain-separation prefix). This is
//!   CCF's `sha256_history` hash function for `merkle::TreeT<32, ...>`.
//!
//! # Shape
//!
//! Leaves are appended left to right. The tree over `n` leaves is:
//!
//! - `n == 1`: the leaf itself (a one-leaf tree's root is the leaf);
//! - otherwise, with `k` the largest power of two strictly below `n`:
//!   `node(tree(leaves[0..k]), tree(leaves[k..n]))`.
//!
//! So the left child is always a perfect subtree and only the right edge is
//! unbalanced: a node with no right sibling is *promoted unchanged* to the
//! level above; it is never hashed with itself and never duplicated.
//! Equivalently, split `n` into powers of two from the largest down (the
//! set bits of `n`); each power is a perfect subtree, a *peak*, and the
//! root folds the peaks from the right:
//! `root = H(p0 ‖ H(p1 ‖ ... H(p[k-1] ‖ p[k])))` with `p0` the leftmost and
//! largest. Examples: 2 leaves `H(l0‖l1)`; 3 leaves `H(H(l0‖l1)‖l2)`;
//! 7 leaves `H(H(H(l0‖l1)‖H(l2‖l3)) ‖ H(H(l4‖l5)‖l6))`. This is the tree
//! shape of RFC 6962 / RFC 9162 (without their 0x00/0x01 prefixes).
//!
//! Source: `merklecpp.h` in github.com/microsoft/merklecpp (the library CCF
//! vendors), `TreeT::insert_leaf` / `continue_insertion_stack`: a new leaf
//! walks down the right edge to the first *full* subtree `s` and replaces it
//! with `node(s, leaf)`. By induction that yields exactly the shape above.
//! The unit tests below check roots and paths against constants produced
//! by a line-by-line Python port of that insertion code and of
//! `TreeT::path()`.
//!
//! # Paths (receipt proofs)
//!
//! An inclusion path lists the siblings from the leaf up to the root. Each
//! step says on which side the *sibling* sits: `Left(h)` means
//! `acc = H(h ‖ acc)`, `Right(h)` means `acc = H(acc ‖ h)`. Levels where the
//! leaf's ancestor was promoted contribute no step. This is merklecpp's
//! `PATH_LEFT`/`PATH_RIGHT` order and CCF's receipt `proof`, which
//! serialises as `[{"left": "<hex>"}, {"right": "<hex>"}, ...]` (see
//! `ccf.receipt.root` in CCF's Python package). [`ProofStep`]'s serde form is
//! exactly that JSON.
//!
//! # Storage and flushing
//!
//! The tree keeps, per level `h`, the hashes of the *complete* subtrees of
//! `2^h` leaves (node `j` of level `h` covers leaves `j·2^h .. (j+1)·2^h`).
//! Appending a leaf pushes it on level 0 and, while it completes a pair,
//! pushes the parent one level up: amortised one hash per append. Peaks are
//! the last node of each level whose bit is set in the size, so the root
//! costs `popcount(n) - 1` hashes and any inclusion path `O(log n)`.
//!
//! [`MerkleTree::flush_to`] drops the leaves already signed and flushed to
//! disk. On level `h` it keeps nodes from `(flushed >> h)` rounded down to
//! even: the even rounding keeps the left sibling a retained leaf's path
//! may need, and it always keeps every peak of every size between
//! `flushed` and `len`. Memory is therefore at most about twice the retained
//! leaves plus two hashes per level, and the root over *all* leaves ever
//! appended, as well as paths of retained leaves, keep working.

use std::collections::VecDeque;
use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// A SHA-256 digest.
pub type Hash = [u8; 32];

/// Version byte at the start of [`MerkleTree::to_bytes`].
pub const TREE_FORMAT_VERSION: u8 = 1;

/// Bytes of the fixed header of [`MerkleTree::to_bytes`]: version, flushed
/// count, retained count.
const HEADER_LEN: usize = 1 + 8 + 8;

/// The leaf of a transaction, as CCF computes it:
/// `SHA-256(write_set_digest ‖ SHA-256(commit_evidence) ‖ claims_digest)`.
/// `commit_evidence` is hashed as its UTF-8 bytes (e.g. `ce:2.643:<hex>`);
/// pass 32 zero bytes as `claims_digest` when the transaction set none.
pub fn leaf_hash(write_set_digest: &Hash, commit_evidence: &str, claims_digest: &Hash) -> Hash {
    let evidence_digest = Sha256::digest(commit_evidence.as_bytes());
    let mut h = Sha256::new();
    h.update(write_set_digest);
    h.update(evidence_digest);
    h.update(claims_digest);
    h.finalize().into()
}

/// An interior node: `SHA-256(left ‖ right)`.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// One step of an inclusion path, from the leaf towards the root. The
/// variant names the side the *sibling* is on, as in CCF receipts; serde
/// gives CCF's JSON, `{"left": "<64 hex>"}` or `{"right": "<64 hex>"}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProofStep {
    /// The sibling is on the left: `acc = H(sibling ‖ acc)`.
    Left(#[serde(with = "hex32")] Hash),
    /// The sibling is on the right: `acc = H(acc ‖ sibling)`.
    Right(#[serde(with = "hex32")] Hash),
}

impl ProofStep {
    /// The sibling hash of this step.
    pub fn hash(&self) -> &Hash {
        match self {
            ProofStep::Left(h) | ProofStep::Right(h) => h,
        }
    }

    /// Combines the hash accumulated so far with this step's sibling.
    pub fn apply(&self, acc: &Hash) -> Hash {
        match self {
            ProofStep::Left(sibling) => node_hash(sibling, acc),
            ProofStep::Right(sibling) => node_hash(acc, sibling),
        }
    }
}

/// The root implied by `leaf` and its inclusion path (CCF's
/// `ccf.receipt.root`). The caller compares it with a signed root; an empty
/// path gives the leaf itself (a one-leaf tree, or a signature receipt
/// whose "leaf" is the root).
pub fn verify_path(leaf: Hash, steps: &[ProofStep]) -> Hash {
    steps.iter().fold(leaf, |acc, step| step.apply(&acc))
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MerkleError {
    #[error("leaf {index} was flushed (the first retained leaf is {flushed})")]
    Flushed { index: u64, flushed: u64 },
    #[error("leaf {index} is not in a tree of {size} leaves")]
    NoSuchLeaf { index: u64, size: u64 },
    /// A past tree size the retained state cannot answer for: it must lie
    /// between the flushed count and the current number of leaves.
    #[error("tree size {size} is outside the answerable range {flushed}..={len}")]
    BadSize { size: u64, flushed: u64, len: u64 },
    #[error("cannot flush to leaf {index}: the tree has only {len} leaves")]
    FlushBeyondEnd { index: u64, len: u64 },
    #[error("serialised tree: unsupported format version {0}")]
    Version(u8),
    #[error("serialised tree: expected {expected} bytes, got {actual}")]
    Length { expected: u64, actual: usize },
    #[error("serialised tree: leaf counts overflow")]
    Overflow,
}

/// An append-only Merkle tree whose signed prefix can be dropped.
///
/// Leaf indices are positions in append order, starting at 0. Sizes are
/// leaf counts: the tree "of size `s`" is the tree over leaves `0..s`.
#[derive(Clone, Default)]
pub struct MerkleTree {
    /// Leaves ever appended (and not removed by [`truncate`](Self::truncate)).
    len: u64,
    /// Leaves below this index have been dropped.
    flushed: u64,
    /// `levels[h]` holds the hashes of complete subtrees of `2^h` leaves,
    /// node indices `first_kept(h) .. len >> h`, in order. Invariant:
    /// `levels[h].len() == (len >> h) - first_kept(h)` for every stored
    /// level, and levels beyond the vector are empty.
    levels: Vec<VecDeque<Hash>>,
}

impl fmt::Debug for MerkleTree {
    /// A summary: a tree can hold millions of hashes.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MerkleTree")
            .field("len", &self.len)
            .field("flushed", &self.flushed)
            .field("root", &hex::encode(self.root()))
            .finish()
    }
}

impl MerkleTree {
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of leaves ever appended, flushed ones included. The next
    /// appended leaf gets this index.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Index of the first retained leaf: leaves below it were flushed.
    pub fn flushed(&self) -> u64 {
        self.flushed
    }

    /// Appends a leaf. Amortised one interior hash per call.
    pub fn append(&mut self, leaf: Hash) {
        let mut node = leaf;
        let mut index = self.len;
        let mut level = 0;
        loop {
            if self.levels.len() == level {
                self.levels.push(VecDeque::new());
            }
            self.levels[level].push_back(node);
            // An even index starts a pair: nothing above completes yet.
            if index & 1 == 0 {
                break;
            }
            // An odd index completes its parent, whose left child is the
            // previous node of this level (always kept, see `first_kept`).
            node = node_hash(self.stored(level, index - 1), &node);
            index >>= 1;
            level += 1;
        }
        self.len += 1;
    }

    /// The root over all leaves ever appended, flushed ones included.
    /// Costs `popcount(len) - 1` hashes.
    ///
    /// An empty tree has no root (merklecpp refuses to give one); this
    /// returns 32 zero bytes for it rather than an error, since a signature
    /// is never taken over an empty tree. Use [`is_empty`](Self::is_empty)
    /// to tell the cases apart.
    pub fn root(&self) -> Hash {
        self.root_of(self.len)
    }

    /// The root the tree had when it held `size` leaves, for any size from
    /// [`flushed`](Self::flushed) to [`len`](Self::len) (e.g. the root a
    /// signature covered).
    pub fn root_at(&self, size: u64) -> Result<Hash, MerkleError> {
        self.check_size(size)?;
        Ok(self.root_of(size))
    }

    /// A retained leaf.
    pub fn leaf(&self, index: u64) -> Result<Hash, MerkleError> {
        self.check_leaf(index, self.len)?;
        Ok(*self.stored(0, index))
    }

    /// Inclusion path of retained leaf `index` against the current root.
    pub fn path(&self, index: u64) -> Result<Vec<ProofStep>, MerkleError> {
        self.path_to(index, self.len)
    }

    /// Inclusion path of retained leaf `index` against the root of the tree
    /// of `size` leaves (`index < size`, `flushed <= size <= len`): the
    /// proof for a receipt whose signature covers leaves `0..size`.
    pub fn path_to(&self, index: u64, size: u64) -> Result<Vec<ProofStep>, MerkleError> {
        self.check_size(size)?;
        self.check_leaf(index, size)?;
        // The leaf lies in the peak of `size` at the highest bit where
        // `index` and `size` differ (there `size` has a 1 and `index` a 0;
        // above it they agree, which selects the peaks to the left).
        let diff = index ^ size;
        let peak_level = (u64::BITS - 1 - diff.leading_zeros()) as usize;
        let mut steps = Vec::with_capacity(u64::BITS as usize);

        // Inside the peak the subtree is perfect: one sibling per level.
        for level in 0..peak_level {
            let node = index >> level;
            steps.push(if node & 1 == 1 {
                ProofStep::Left(*self.stored(level, node - 1))
            } else {
                ProofStep::Right(*self.stored(level, node + 1))
            });
        }
        // Everything right of the peak (smaller peaks) folds into one right
        // sibling; a lone rightmost peak has none: it was promoted.
        if let Some(right) = self.fold_peaks(size, 0..peak_level) {
            steps.push(ProofStep::Right(right));
        }
        // Each larger peak to the left is a left sibling, smallest first.
        for level in peak_level + 1..u64::BITS as usize {
            if (size >> level) & 1 == 1 {
                steps.push(ProofStep::Left(*self.stored(level, (size >> level) - 1)));
            }
        }
        Ok(steps)
    }

    /// Drops the leaves below `index` (and the interior nodes only they
    /// needed). The root and the paths of leaves `index..` keep working.
    /// Flushing to at most the current flushed count does nothing; past the
    /// end is an error. Flushing everything (`index == len`) is allowed:
    /// what remains is the frontier (one hash per set bit of `len`).
    pub fn flush_to(&mut self, index: u64) -> Result<(), MerkleError> {
        if index > self.len {
            return Err(MerkleError::FlushBeyondEnd {
                index,
                len: self.len,
            });
        }
        if index <= self.flushed {
            return Ok(());
        }
        let old = self.flushed;
        for (h, level) in self.levels.iter_mut().enumerate() {
            let drop = first_kept(index, h) - first_kept(old, h);
            // `drop` never exceeds the level's length by the invariant; min
            // keeps a broken invariant from panicking here.
            let drop = usize::try_from(drop).map_or(level.len(), |d| d.min(level.len()));
            level.drain(..drop);
            // Give memory back after a large flush, without thrashing when
            // flushes and appends alternate.
            if level.capacity() > 64 && level.capacity() > 4 * level.len() {
                level.shrink_to_fit();
            }
        }
        self.flushed = index;
        Ok(())
    }

    /// Removes the leaves from `size` on, as if they had never been
    /// appended (e.g. uncommitted entries rolled back). `size` must be at
    /// least the flushed count.
    pub fn truncate(&mut self, size: u64) -> Result<(), MerkleError> {
        self.check_size(size)?;
        for (h, level) in self.levels.iter_mut().enumerate() {
            let keep = shr(size, h) - first_kept(self.flushed, h);
            let keep = usize::try_from(keep).unwrap_or(usize::MAX);
            level.truncate(keep);
        }
        self.len = size;
        Ok(())
    }

    /// Serialises the tree for a snapshot. Layout (integers big-endian, as
    /// in ledger entries):
    ///
    /// ```text
    /// u8       format version (1)
    /// u64      F: flushed leaf count
    /// u64      R: retained leaf count (len = F + R)
    /// 32 × p   the peaks of the tree of the first F leaves, p = popcount(F),
    ///          leftmost (largest) first: the subtree over leaves
    ///          [0, 2^a), then the next power of two, and so on
    /// 32 × R   the retained leaves F .. F+R, in order
    /// ```
    ///
    /// Interior nodes above the retained leaves are not stored: they are
    /// recomputed on load. To store only the frontier, `flush_to(len())`
    /// first (then R = 0 and the bytes are 17 + 32·popcount(len)).
    pub fn to_bytes(&self) -> Vec<u8> {
        let retained = self.len - self.flushed;
        let peaks = self.flushed.count_ones() as usize;
        let leaves = self.levels.first().map_or(0, |l| l.len());
        let mut out = Vec::with_capacity(HEADER_LEN + 32 * (peaks + leaves));
        out.push(TREE_FORMAT_VERSION);
        out.extend_from_slice(&self.flushed.to_be_bytes());
        out.extend_from_slice(&retained.to_be_bytes());
        for level in (0..u64::BITS as usize).rev() {
            if (shr(self.flushed, level)) & 1 == 1 {
                out.extend_from_slice(self.stored(level, shr(self.flushed, level) - 1));
            }
        }
        for index in self.flushed..self.len {
            out.extend_from_slice(self.stored(0, index));
        }
        out
    }

    /// Parses [`to_bytes`](Self::to_bytes) output. Any error in the input
    /// (version, length, counts) is reported, never a panic; the length is
    /// checked before anything is allocated.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, MerkleError> {
        let header = bytes.get(..HEADER_LEN).ok_or(MerkleError::Length {
            expected: HEADER_LEN as u64,
            actual: bytes.len(),
        })?;
        if header[0] != TREE_FORMAT_VERSION {
            return Err(MerkleError::Version(header[0]));
        }
        let flushed = be_u64(&header[1..9]);
        let retained = be_u64(&header[9..17]);
        flushed.checked_add(retained).ok_or(MerkleError::Overflow)?;
        let peaks = u64::from(flushed.count_ones());
        let expected = peaks
            .checked_add(retained)
            .and_then(|hashes| hashes.checked_mul(32))
            .and_then(|body| body.checked_add(HEADER_LEN as u64))
            .ok_or(MerkleError::Overflow)?;
        if u64::try_from(bytes.len()).ok() != Some(expected) {
            return Err(MerkleError::Length {
                expected,
                actual: bytes.len(),
            });
        }

        let mut hashes = bytes[HEADER_LEN..].chunks_exact(32).map(|chunk| {
            let mut h = [0u8; 32];
            h.copy_from_slice(chunk);
            h
        });
        // The frontier of F leaves: level h holds exactly its peak when bit
        // h of F is set (first_kept(F, h) == (F >> h) - 1) and nothing
        // otherwise, which is the storage invariant with len == flushed == F.
        let height = (u64::BITS - flushed.leading_zeros()) as usize;
        let mut levels = vec![VecDeque::new(); height];
        for level in (0..height).rev() {
            if (flushed >> level) & 1 == 1 {
                let peak = hashes.next().ok_or(MerkleError::Length {
                    expected,
                    actual: bytes.len(),
                })?;
                levels[level].push_back(peak);
            }
        }
        let mut tree = MerkleTree {
            len: flushed,
            flushed,
            levels,
        };
        for leaf in hashes {
            tree.append(leaf);
        }
        Ok(tree)
    }

    /// Hashes held in memory (for tests of the memory bound).
    #[cfg(test)]
    fn stored_hashes(&self) -> usize {
        self.levels.iter().map(VecDeque::len).sum()
    }

    fn check_size(&self, size: u64) -> Result<(), MerkleError> {
        if size < self.flushed || size > self.len {
            return Err(MerkleError::BadSize {
                size,
                flushed: self.flushed,
                len: self.len,
            });
        }
        Ok(())
    }

    fn check_leaf(&self, index: u64, size: u64) -> Result<(), MerkleError> {
        if index >= size {
            return Err(MerkleError::NoSuchLeaf { index, size });
        }
        if index < self.flushed {
            return Err(MerkleError::Flushed {
                index,
                flushed: self.flushed,
            });
        }
        Ok(())
    }

    /// Root of the tree of `size` leaves; `flushed <= size <= len`.
    fn root_of(&self, size: u64) -> Hash {
        self.fold_peaks(size, 0..u64::BITS as usize)
            .unwrap_or([0; 32])
    }

    /// Folds the peaks of the tree of `size` leaves whose levels lie in
    /// `levels`, from the right: `H(p_a ‖ H(p_b ‖ ... p_z))`.
    fn fold_peaks(&self, size: u64, levels: std::ops::Range<usize>) -> Option<Hash> {
        let mut acc: Option<Hash> = None;
        for level in levels {
            if (shr(size, level)) & 1 == 1 {
                let peak = self.stored(level, shr(size, level) - 1);
                acc = Some(match acc {
                    None => *peak,
                    Some(right) => node_hash(peak, &right),
                });
            }
        }
        acc
    }

    /// Node `index` of `level`. Callers only ask for nodes the storage
    /// invariant guarantees (complete in the current tree and at or after
    /// `first_kept`), so a miss is a bug in this module, not bad input.
    fn stored(&self, level: usize, index: u64) -> &Hash {
        let offset = index - first_kept(self.flushed, level);
        &self.levels[level][offset as usize]
    }
}

/// First node index kept on `level` once leaves below `flushed` are gone:
/// `flushed >> level`, rounded down to even so that a retained node's left
/// sibling is kept too.
fn first_kept(flushed: u64, level: usize) -> u64 {
    shr(flushed, level) & !1
}

/// A big-endian u64 from the first 8 bytes of `bytes` (callers pass
/// exactly 8 bytes cut from a length-checked header).
fn be_u64(bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .take(8)
        .fold(0, |acc, &b| (acc << 8) | u64::from(b))
}

/// `x >> bits`, 0 once every bit is shifted out (plain `>>` panics at 64).
fn shr(x: u64, bits: usize) -> u64 {
    u32::try_from(bits)
        .ok()
        .and_then(|b| x.checked_shr(b))
        .unwrap_or(0)
}

/// Serde for a 32-byte hash as a hex string (CCF's receipt encoding).
mod hex32 {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(hash: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(hash))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let text = String::deserialize(d)?;
        let mut out = [0u8; 32];
        hex::decode_to_slice(&text, &mut out).map_err(|e| {
            serde::de::Error::custom(format!("expected 64 hex digits (a SHA-256 digest): {e}"))
        })?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn h(i: u8) -> Hash {
        Sha256::digest([i]).into()
    }

    fn unhex(s: &str) -> Hash {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).unwrap();
        out
    }

    fn tree_of(n: u8) -> MerkleTree {
        let mut t = MerkleTree::new();
        for i in 0..n {
            t.append(h(i));
        }
        t
    }

    /// A port of merklecpp's node structure and insertion (a new leaf walks
    /// down the right edge to the first full subtree `s` and replaces it
    /// with `node(s, leaf)`), used as the naive reference.
    mod model {
        use super::*;

        pub struct Node {
            pub hash: Hash,
            children: Option<(Box<Node>, Box<Node>)>,
            /// Nodes in this subtree (merklecpp's `size`).
            size: u64,
            height: u32,
            pub leaves: u64,
        }

        impl Node {
            fn leaf(hash: Hash) -> Box<Node> {
                Box::new(Node {
                    hash,
                    children: None,
                    size: 1,
                    height: 1,
                    leaves: 1,
                })
            }

            fn join(l: Box<Node>, r: Box<Node>) -> Box<Node> {
                Box::new(Node {
                    hash: node_hash(&l.hash, &r.hash),
                    size: l.size + r.size + 1,
                    height: l.height.max(r.height) + 1,
                    leaves: l.leaves + r.leaves,
                    children: Some((l, r)),
                })
            }

            fn is_full(&self) -> bool {
                self.size == (1u64 << self.height) - 1
            }
        }

        fn insert(root: Box<Node>, leaf: Hash) -> Box<Node> {
            if root.is_full() {
                return Node::join(root, Node::leaf(leaf));
            }
            let (l, r) = root.children.expect("a non-full node has children");
            if !l.is_full() {
                Node::join(insert(l, leaf), r)
            } else {
                Node::join(l, insert(r, leaf))
            }
        }

        pub fn build(leaves: &[Hash]) -> Option<Box<Node>> {
            let mut root: Option<Box<Node>> = None;
            for &leaf in leaves {
                root = Some(match root {
                    None => Node::leaf(leaf),
                    Some(r) => insert(r, leaf),
                });
            }
            root
        }

        pub fn root(leaves: &[Hash]) -> Hash {
            build(leaves).map_or([0; 32], |n| n.hash)
        }

        pub fn path(node: &Node, index: u64) -> Vec<ProofStep> {
            match &node.children {
                None => vec![],
                Some((l, r)) if index < l.leaves => {
                    let mut p = path(l, index);
                    p.push(ProofStep::Right(r.hash));
                    p
                }
                Some((l, r)) => {
                    let mut p = path(r, index - l.leaves);
                    p.push(ProofStep::Left(l.hash));
                    p
                }
            }
        }
    }

    #[test]
    fn small_trees_have_the_merklecpp_shape() {
        let n = |a: &Hash, b: &Hash| node_hash(a, b);
        let l: Vec<Hash> = (0..8).map(h).collect();
        assert_eq!(tree_of(1).root(), l[0]);
        assert_eq!(tree_of(2).root(), n(&l[0], &l[1]));
        assert_eq!(tree_of(3).root(), n(&n(&l[0], &l[1]), &l[2]));
        let n0123 = n(&n(&l[0], &l[1]), &n(&l[2], &l[3]));
        assert_eq!(tree_of(4).root(), n0123);
        assert_eq!(tree_of(5).root(), n(&n0123, &l[4]));
        assert_eq!(tree_of(6).root(), n(&n0123, &n(&l[4], &l[5])));
        assert_eq!(tree_of(7).root(), n(&n0123, &n(&n(&l[4], &l[5]), &l[6])));
        assert_eq!(MerkleTree::new().root(), [0; 32]);
    }

    /// Constants from a line-by-line Python port of merklecpp's
    /// `insert_leaf`/`continue_insertion_stack` and `path()` (hashlib only),
    /// leaves `SHA-256([i])`.
    #[test]
    fn roots_and_paths_match_merklecpp_port() {
        let roots = [
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "30e1867424e66e8b6d159246db94e3486778136f7e386ff5f001859d6b8484ab",
            "773a93ac37ea78b3f14ac31872c83886b0a0f1fec562c4e848e023c889c2ce9f",
            "9675e04b4ba9dc81b06e81731e2d21caa2c95557a85dcfa3fff70c9ff0f30b2e",
            "5174b138f822e56503c04bce38e368672593b4a2694466c2e60f1216caf234be",
            "ee37905f0a834b1739e269f72dc98fe64b4b8975ed85414e8261097cf49d9e38",
            "7269be49c490af17ec87be84f3dc791c5f9923b4c557fefd83204f0c0f40b5ae",
            "0727b310f87099c1ba2ec0ba408def82c308237c8577f0bdfd2643e9cc6b7578",
            "943bf86ed24b99e20365bc590627f440fc854d8ecc85e9fbf1d8ebe662c24169",
            "0a59ced5dbf9e654a6c754592a01efe0664efb1dcfbfa94b6a8ac5a4565f3fd5",
            "4ad5d2ded1c519bd3e2701cc82f21df48ae8d15aed7ab8e9f78017543d368d86",
        ];
        let mut t = MerkleTree::new();
        for (i, root) in roots.iter().enumerate() {
            t.append(h(i as u8));
            assert_eq!(hex::encode(t.root()), *root, "root of {} leaves", i + 1);
        }
        let t7 = tree_of(7);
        let n0123 = "9675e04b4ba9dc81b06e81731e2d21caa2c95557a85dcfa3fff70c9ff0f30b2e";
        let expected = [
            (
                2,
                vec![
                    ProofStep::Right(h(3)),
                    ProofStep::Left(unhex(
                        "30e1867424e66e8b6d159246db94e3486778136f7e386ff5f001859d6b8484ab",
                    )),
                    ProofStep::Right(unhex(
                        "b1f6ce01ca9c2e2357ae7a091c470cf81f8593a9d93740d794aed8bde21b92d6",
                    )),
                ],
            ),
            (
                4,
                vec![
                    ProofStep::Right(h(5)),
                    ProofStep::Right(h(6)),
                    ProofStep::Left(unhex(n0123)),
                ],
            ),
            // The last leaf skips a level: its ancestor there was promoted.
            (
                6,
                vec![
                    ProofStep::Left(unhex(
                        "f03808f5b8088c61286d505e8e93aa378991d9889ae2d874433ca06acabcd493",
                    )),
                    ProofStep::Left(unhex(n0123)),
                ],
            ),
        ];
        for (index, path) in expected {
            assert_eq!(t7.path(index).unwrap(), path, "path of leaf {index}");
            assert_eq!(verify_path(h(index as u8), &path), t7.root());
        }
    }

    /// Computed independently with Python's hashlib.
    #[test]
    fn leaf_hash_matches_ccf_formula() {
        let wsd = unhex("d0c521504ce2be6b4c22db8e99b14fc475b51bc91224181c75c64aa2cef72b83");
        let ce = "ce:2.643:55dbbbf04b71c6dcc01dd9d1c0012a6a959aef907398f7e183cc8913c82468d8";
        assert_eq!(
            hex::encode(leaf_hash(&wsd, ce, &[0; 32])),
            "7f7490748ab5e7983a600dc59c026b05f2708a0b63889a16844003b0b38116ff"
        );
        let mut manual = Vec::new();
        manual.extend_from_slice(&wsd);
        manual.extend_from_slice(&Sha256::digest(ce.as_bytes()));
        manual.extend_from_slice(&[7; 32]);
        let manual: Hash = Sha256::digest(&manual).into();
        assert_eq!(leaf_hash(&wsd, ce, &[7; 32]), manual);
    }

    #[test]
    fn proof_steps_use_ccf_json() {
        let steps = vec![ProofStep::Left([0xab; 32]), ProofStep::Right([0x01; 32])];
        let json = serde_json::to_string(&steps).unwrap();
        assert_eq!(
            json,
            format!(
                r#"[{{"left":"{}"}},{{"right":"{}"}}]"#,
                "ab".repeat(32),
                "01".repeat(32)
            )
        );
        let back: Vec<ProofStep> = serde_json::from_str(&json).unwrap();
        assert_eq!(back, steps);
        // Upper-case hex is accepted (hex is case-insensitive).
        let upper = format!(r#"{{"left":"{}"}}"#, "AB".repeat(32));
        assert_eq!(
            serde_json::from_str::<ProofStep>(&upper).unwrap(),
            ProofStep::Left([0xab; 32])
        );
        for bad in [
            r#"{"left":"abcd"}"#.to_string(),
            format!(r#"{{"up":"{}"}}"#, "ab".repeat(32)),
            format!(r#"{{"left":"{}"}}"#, "zz".repeat(32)),
            format!(r#"{{"left":"{0}","right":"{0}"}}"#, "ab".repeat(32)),
            r#"{"left":7}"#.to_string(),
        ] {
            assert!(serde_json::from_str::<ProofStep>(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn errors_for_flushed_missing_and_out_of_range() {
        let mut t = tree_of(10);
        assert_eq!(
            t.path(10),
            Err(MerkleError::NoSuchLeaf {
                index: 10,
                size: 10
            })
        );
        assert_eq!(
            t.path_to(5, 5),
            Err(MerkleError::NoSuchLeaf { index: 5, size: 5 })
        );
        assert_eq!(
            t.path_to(1, 11),
            Err(MerkleError::BadSize {
                size: 11,
                flushed: 0,
                len: 10
            })
        );
        t.flush_to(4).unwrap();
        assert_eq!(
            t.path(3),
            Err(MerkleError::Flushed {
                index: 3,
                flushed: 4
            })
        );
        assert_eq!(
            t.leaf(3),
            Err(MerkleError::Flushed {
                index: 3,
                flushed: 4
            })
        );
        assert_eq!(
            t.root_at(3),
            Err(MerkleError::BadSize {
                size: 3,
                flushed: 4,
                len: 10
            })
        );
        assert_eq!(
            t.flush_to(11),
            Err(MerkleError::FlushBeyondEnd { index: 11, len: 10 })
        );
        // Flushing backwards is a no-op, not an error.
        t.flush_to(2).unwrap();
        assert_eq!(t.flushed(), 4);
        assert!(t.truncate(3).is_err());
        assert_eq!(t.root(), tree_of(10).root());
    }

    #[test]
    fn flushing_everything_keeps_only_the_frontier() {
        let mut t = tree_of(13);
        let root = t.root();
        t.flush_to(13).unwrap();
        assert_eq!(t.root(), root);
        assert_eq!(t.stored_hashes(), 3); // 13 = 8 + 4 + 1
        assert_eq!(t.to_bytes().len(), HEADER_LEN + 3 * 32);
        for i in 13..40 {
            t.append(h(i));
        }
        assert_eq!(t.root(), tree_of(40).root());
        assert_eq!(t.path(20).unwrap(), tree_of(40).path(20).unwrap());
    }

    #[test]
    fn from_bytes_rejects_bad_input() {
        let bytes = tree_of(5).to_bytes();
        assert!(MerkleTree::from_bytes(&bytes).is_ok());
        for n in 0..bytes.len() {
            assert!(MerkleTree::from_bytes(&bytes[..n]).is_err(), "prefix {n}");
        }
        let mut long = bytes.clone();
        long.push(0);
        assert!(MerkleTree::from_bytes(&long).is_err());
        let mut version = bytes.clone();
        version[0] = 2;
        assert_eq!(
            MerkleTree::from_bytes(&version).unwrap_err(),
            MerkleError::Version(2)
        );
        // Counts that would overflow, or claim far more than is there.
        let mut huge = vec![TREE_FORMAT_VERSION];
        huge.extend_from_slice(&u64::MAX.to_be_bytes());
        huge.extend_from_slice(&1u64.to_be_bytes());
        assert_eq!(
            MerkleTree::from_bytes(&huge).unwrap_err(),
            MerkleError::Overflow
        );
        let mut big = vec![TREE_FORMAT_VERSION];
        big.extend_from_slice(&0u64.to_be_bytes());
        big.extend_from_slice(&(u64::MAX / 32).to_be_bytes());
        assert!(matches!(
            MerkleTree::from_bytes(&big),
            Err(MerkleError::Length { .. } | MerkleError::Overflow)
        ));
    }

    /// Leaf value for the `n`-th append overall (not the index), so that a
    /// leaf re-appended after a truncation differs from the one removed.
    fn leaf_for(counter: u64) -> Hash {
        Sha256::digest(counter.to_be_bytes()).into()
    }

    #[derive(Debug, Clone)]
    enum Op {
        Append(u8),
        /// Flush to `flushed + x % (retained + 1)`.
        Flush(u16),
        /// Truncate to `flushed + x % (retained + 1)`.
        Truncate(u16),
        /// Replace the tree by `from_bytes(to_bytes())`.
        Reload,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (1u8..16).prop_map(Op::Append),
            2 => any::<u16>().prop_map(Op::Flush),
            1 => any::<u16>().prop_map(Op::Truncate),
            1 => Just(Op::Reload),
        ]
    }

    /// Checks the tree against the reference over all leaves ever appended.
    fn check(t: &MerkleTree, all: &[Hash]) -> Result<(), TestCaseError> {
        prop_assert_eq!(t.len(), all.len() as u64);
        prop_assert_eq!(t.root(), model::root(all));
        let len = all.len() as u64;
        let retained = len - t.flushed();
        // Memory: two hashes per retained leaf plus two per level.
        prop_assert!(t.stored_hashes() as u64 <= 2 * retained + 2 * 64);
        if let Some(reference) = model::build(all) {
            for i in t.flushed()..len {
                prop_assert_eq!(t.leaf(i)?, all[i as usize]);
                let path = t.path(i)?;
                prop_assert_eq!(verify_path(all[i as usize], &path), t.root());
                prop_assert_eq!(&path, &model::path(&reference, i));
            }
        }
        Ok(())
    }

    proptest! {
        #[test]
        fn appends_and_flushes_match_naive_tree(ops in proptest::collection::vec(op(), 1..32)) {
            let mut t = MerkleTree::new();
            let mut all: Vec<Hash> = Vec::new();
            let mut counter = 0u64;
            for op in ops {
                let span = t.len() - t.flushed() + 1;
                match op {
                    Op::Append(n) => {
                        for _ in 0..n {
                            counter += 1;
                            let leaf = leaf_for(counter);
                            t.append(leaf);
                            all.push(leaf);
                        }
                    }
                    Op::Flush(x) => t.flush_to(t.flushed() + u64::from(x) % span)?,
                    Op::Truncate(x) => {
                        let size = t.flushed() + u64::from(x) % span;
                        t.truncate(size)?;
                        all.truncate(size as usize);
                    }
                    Op::Reload => {
                        let bytes = t.to_bytes();
                        let reloaded = MerkleTree::from_bytes(&bytes)?;
                        prop_assert_eq!(reloaded.to_bytes(), bytes);
                        prop_assert_eq!(reloaded.flushed(), t.flushed());
                        t = reloaded;
                    }
                }
                check(&t, &all)?;
            }
        }

        #[test]
        fn past_paths_match_naive_prefix_trees(
            n in 1u64..70,
            flush in any::<u16>(),
        ) {
            let all: Vec<Hash> = (0..n).map(leaf_for).collect();
            let mut t = MerkleTree::new();
            for &leaf in &all {
                t.append(leaf);
            }
            t.flush_to(u64::from(flush) % (n + 1))?;
            for size in t.flushed()..=n {
                let prefix = &all[..size as usize];
                prop_assert_eq!(t.root_at(size)?, model::root(prefix));
                if let Some(reference) = model::build(prefix) {
                    for i in t.flushed()..size {
                        let path = t.path_to(i, size)?;
                        prop_assert_eq!(&path, &model::path(&reference, i));
                        prop_assert_eq!(verify_path(all[i as usize], &path), reference.hash);
                    }
                }
            }
        }

        #[test]
        fn serialisation_round_trips(n in 0u64..200, flush in any::<u16>(), more in 0u64..40) {
            let mut t = MerkleTree::new();
            for i in 0..n {
                t.append(leaf_for(i));
            }
            t.flush_to(u64::from(flush) % (n + 1))?;
            let mut back = MerkleTree::from_bytes(&t.to_bytes())?;
            prop_assert_eq!(back.len(), t.len());
            prop_assert_eq!(back.flushed(), t.flushed());
            prop_assert_eq!(back.root(), t.root());
            prop_assert_eq!(back.to_bytes(), t.to_bytes());
            // Both keep growing identically.
            for i in n..n + more {
                t.append(leaf_for(i));
                back.append(leaf_for(i));
            }
            prop_assert_eq!(back.root(), t.root());
            for i in back.flushed()..back.len() {
                prop_assert_eq!(back.path(i)?, t.path(i)?);
            }
        }

        #[test]
        fn from_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = MerkleTree::from_bytes(&bytes);
        }

        #[test]
        fn from_bytes_never_panics_on_well_framed_garbage(
            flushed in any::<u64>(),
            retained in 0u64..8,
            body in proptest::collection::vec(any::<u8>(), 0..(32 * 80)),
        ) {
            let mut bytes = vec![TREE_FORMAT_VERSION];
            bytes.extend_from_slice(&flushed.to_be_bytes());
            bytes.extend_from_slice(&retained.to_be_bytes());
            bytes.extend_from_slice(&body);
            if let Ok(t) = MerkleTree::from_bytes(&bytes) {
                prop_assert_eq!(t.to_bytes(), bytes);
                let _ = t.root();
            }
        }

        #[test]
        fn well_framed_random_frontier_loads_and_grows(
            flushed in any::<u64>().prop_map(|x| x >> 2),
            seed in any::<u8>(),
        ) {
            // Any F and any peak values form a valid frontier.
            let peaks = flushed.count_ones() as usize;
            let mut bytes = vec![TREE_FORMAT_VERSION];
            bytes.extend_from_slice(&flushed.to_be_bytes());
            bytes.extend_from_slice(&0u64.to_be_bytes());
            for i in 0..peaks {
                bytes.extend_from_slice(&h(seed.wrapping_add(i as u8)));
            }
            let mut t = MerkleTree::from_bytes(&bytes)?;
            prop_assert_eq!(t.to_bytes(), bytes);
            for i in 0..20 {
                t.append(leaf_for(i));
                let last = t.len() - 1;
                prop_assert_eq!(verify_path(leaf_for(i), &t.path(last)?), t.root());
                prop_assert_eq!(verify_path(leaf_for(0), &t.path(flushed)?), t.root());
            }
        }
    }
}
