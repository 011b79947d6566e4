//! A minimal, strict CBOR (RFC 8949) encoder and decoder: enough for COSE
//! (RFC 9052) and COSE receipts, and nothing more.
//!
//! Supported: integers that fit in an `i64`, byte strings, text strings,
//! arrays, maps, `true`, `false`, `null` and tags.
//!
//! The encoder writes definite lengths and the shortest head for every
//! argument (RFC 8949 §4.2.1 "preferred serialization"), and keeps map
//! entries in the order given, so one [`Value`] always has one encoding.
//!
//! The decoder reads exactly one data item and rejects:
//! - trailing bytes after it, and truncated input;
//! - indefinite lengths, floats, `undefined` and other simple values;
//! - heads that are not in their shortest form;
//! - integers outside `i64`, text that is not UTF-8, duplicate map keys;
//! - arrays, maps and tags nested deeper than [`MAX_DEPTH`].
//!
//! Every length is checked against the remaining input before anything is
//! allocated, and no input makes it panic.

/// How deep arrays, maps and tags may nest.
pub const MAX_DEPTH: usize = 64;

/// A CBOR data item.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Int(i64),
    Bytes(Vec<u8>),
    Text(String),
    Array(Vec<Value>),
    /// Entries in encoding order.
    Map(Vec<(Value, Value)>),
    Bool(bool),
    Null,
    Tag(u64, Box<Value>),
}

/// Why bytes are not a CBOR item this decoder accepts. `at` is the byte
/// offset where the problem was found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CborError {
    #[error("CBOR: input ends early at byte {at}")]
    Truncated { at: usize },
    #[error("CBOR: {count} trailing byte(s) after the item, at byte {at}")]
    TrailingBytes { at: usize, count: usize },
    #[error("CBOR: indefinite-length items are not supported (byte {at})")]
    Indefinite { at: usize },
    #[error("CBOR: floating-point values are not supported (byte {at})")]
    Float { at: usize },
    #[error("CBOR: simple value {value} is not supported (byte {at})")]
    UnsupportedSimple { at: usize, value: u64 },
    #[error("CBOR: reserved additional information {info} (byte {at})")]
    Reserved { at: usize, info: u8 },
    #[error("CBOR: head at byte {at} is not in its shortest form")]
    NonCanonical { at: usize },
    #[error("CBOR: integer at byte {at} does not fit in 64 signed bits")]
    IntegerOutOfRange { at: usize },
    #[error("CBOR: length {len} at byte {at} exceeds the {remaining} byte(s) left")]
    TooLong {
        at: usize,
        len: u64,
        remaining: usize,
    },
    #[error("CBOR: text string at byte {at} is not UTF-8")]
    InvalidUtf8 { at: usize },
    #[error("CBOR: map at byte {at} has a duplicate key")]
    DuplicateKey { at: usize },
    #[error("CBOR: nesting deeper than {MAX_DEPTH} levels at byte {at}")]
    TooDeep { at: usize },
}

impl Value {
    /// A text value.
    pub fn text(s: &str) -> Value {
        Value::Text(s.to_string())
    }

    /// The value of `key` in a map (`None` for other kinds or a missing key).
    pub fn map_get(&self, key: &Value) -> Option<&Value> {
        self.as_map()?
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v)
    }

    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }

    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Value::Bytes(b) => Some(b),
            _ => None,
        }
    }

    pub fn as_text(&self) -> Option<&str> {
        match self {
            Value::Text(t) => Some(t),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }

    pub fn as_map(&self) -> Option<&[(Value, Value)]> {
        match self {
            Value::Map(m) => Some(m),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Value::Bool(b) => Some(*b),
            _ => None,
        }
    }
}

// Major types.
const UINT: u8 = 0;
const NINT: u8 = 1;
const BYTES: u8 = 2;
const TEXT: u8 = 3;
const ARRAY: u8 = 4;
const MAP: u8 = 5;
const TAG: u8 = 6;
const SIMPLE: u8 = 7;

/// Writes a head: major type and argument, in the shortest form.
fn head(out: &mut Vec<u8>, major: u8, arg: u64) {
    let m = major << 5;
    if arg < 24 {
        out.push(m | arg as u8);
    } else if let Ok(a) = u8::try_from(arg) {
        out.push(m | 24);
        out.push(a);
    } else if let Ok(a) = u16::try_from(arg) {
        out.push(m | 25);
        out.extend_from_slice(&a.to_be_bytes());
    } else if let Ok(a) = u32::try_from(arg) {
        out.push(m | 26);
        out.extend_from_slice(&a.to_be_bytes());
    } else {
        out.push(m | 27);
        out.extend_from_slice(&arg.to_be_bytes());
    }
}

fn encode_into(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::Int(i) if *i >= 0 => head(out, UINT, *i as u64),
        // -1 - n for n >= 0: the argument is !i as unsigned.
        Value::Int(i) => head(out, NINT, !*i as u64),
        Value::Bytes(b) => {
            head(out, BYTES, b.len() as u64);
            out.extend_from_slice(b);
        }
        Value::Text(t) => {
            head(out, TEXT, t.len() as u64);
            out.extend_from_slice(t.as_bytes());
        }
        Value::Array(items) => {
            head(out, ARRAY, items.len() as u64);
            for item in items {
                encode_into(out, item);
            }
        }
        Value::Map(entries) => {
            head(out, MAP, entries.len() as u64);
            for (k, v) in entries {
                encode_into(out, k);
                encode_into(out, v);
            }
        }
        Value::Bool(false) => out.push(0xf4),
        Value::Bool(true) => out.push(0xf5),
        Value::Null => out.push(0xf6),
        Value::Tag(tag, inner) => {
            head(out, TAG, *tag);
            encode_into(out, inner);
        }
    }
}

/// The deterministic encoding of `v`: definite lengths, shortest heads, map
/// entries in the order given.
pub fn encode(v: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    encode_into(&mut out, v);
    out
}

/// Decodes exactly one CBOR item occupying all of `bytes`.
pub fn decode(bytes: &[u8]) -> Result<Value, CborError> {
    let mut d = Decoder { bytes, pos: 0 };
    let v = d.item(1)?;
    if d.pos != bytes.len() {
        return Err(CborError::TrailingBytes {
            at: d.pos,
            count: bytes.len() - d.pos,
        });
    }
    Ok(v)
}

struct Decoder<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Decoder<'_> {
    fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    fn take(&mut self, n: usize) -> Result<&[u8], CborError> {
        if n > self.remaining() {
            return Err(CborError::Truncated {
                at: self.bytes.len(),
            });
        }
        let s = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    /// Reads a head: `(major, additional info, argument)`. The argument of
    /// additional info 24..=27 must need its width (shortest form).
    fn head(&mut self) -> Result<(u8, u8, u64), CborError> {
        let at = self.pos;
        let first = self.take(1)?[0];
        let major = first >> 5;
        let info = first & 0x1f;
        let arg = match info {
            0..=23 => u64::from(info),
            24 => {
                let a = u64::from(self.take(1)?[0]);
                // A one-byte argument below 24 belongs in the head; for
                // simple values, two-byte forms below 32 are not
                // well-formed (RFC 8949 §3.3).
                let min = if major == SIMPLE { 32 } else { 24 };
                if a < min {
                    return Err(CborError::NonCanonical { at });
                }
                a
            }
            25..=27 => {
                if major == SIMPLE {
                    return Err(CborError::Float { at });
                }
                let width = 1usize << (info - 24);
                let raw = self.take(width)?;
                let mut buf = [0u8; 8];
                buf[8 - width..].copy_from_slice(raw);
                let a = u64::from_be_bytes(buf);
                let min = match info {
                    25 => 1 << 8,
                    26 => 1 << 16,
                    _ => 1 << 32,
                };
                if a < min {
                    return Err(CborError::NonCanonical { at });
                }
                a
            }
            28..=30 => return Err(CborError::Reserved { at, info }),
            _ => return Err(CborError::Indefinite { at }),
        };
        Ok((major, info, arg))
    }

    /// Checks a length against what is left, so nothing is allocated for
    /// bytes that are not there. `min_item` is the smallest encoding of
    /// one counted element.
    fn check_len(&self, at: usize, len: u64, min_item: u64) -> Result<usize, CborError> {
        let remaining = self.remaining();
        match len.checked_mul(min_item) {
            Some(need) if need <= remaining as u64 => Ok(len as usize),
            _ => Err(CborError::TooLong { at, len, remaining }),
        }
    }

    fn item(&mut self, depth: usize) -> Result<Value, CborError> {
        let at = self.pos;
        let (major, _info, arg) = self.head()?;
        match major {
            UINT => i64::try_from(arg)
                .map(Value::Int)
                .map_err(|_| CborError::IntegerOutOfRange { at }),
            NINT => i64::try_from(arg)
                .map(|n| Value::Int(-1 - n))
                .map_err(|_| CborError::IntegerOutOfRange { at }),
            BYTES => {
                let len = self.check_len(at, arg, 1)?;
                Ok(Value::Bytes(self.take(len)?.to_vec()))
            }
            TEXT => {
                let len = self.check_len(at, arg, 1)?;
                let raw = self.take(len)?;
                std::str::from_utf8(raw)
                    .map(|s| Value::Text(s.to_string()))
                    .map_err(|_| CborError::InvalidUtf8 { at })
            }
            ARRAY => {
                if depth > MAX_DEPTH {
                    return Err(CborError::TooDeep { at });
                }
                let len = self.check_len(at, arg, 1)?;
                let mut items = Vec::with_capacity(len);
                for _ in 0..len {
                    items.push(self.item(depth + 1)?);
                }
                Ok(Value::Array(items))
            }
            MAP => {
                if depth > MAX_DEPTH {
                    return Err(CborError::TooDeep { at });
                }
                let len = self.check_len(at, arg, 2)?;
                let mut entries: Vec<(Value, Value)> = Vec::with_capacity(len);
                // Every accepted encoding is canonical, so equal keys have
                // equal bytes: compare those (linear, even for huge maps).
                let mut seen = std::collections::HashSet::with_capacity(len);
                for _ in 0..len {
                    let key_start = self.pos;
                    let k = self.item(depth + 1)?;
                    if !seen.insert(&self.bytes[key_start..self.pos]) {
                        return Err(CborError::DuplicateKey { at });
                    }
                    let v = self.item(depth + 1)?;
                    entries.push((k, v));
                }
                Ok(Value::Map(entries))
            }
            TAG => {
                if depth > MAX_DEPTH {
                    return Err(CborError::TooDeep { at });
                }
                let inner = self.item(depth + 1)?;
                Ok(Value::Tag(arg, Box::new(inner)))
            }
            _ => match arg {
                20 => Ok(Value::Bool(false)),
                21 => Ok(Value::Bool(true)),
                22 => Ok(Value::Null),
                value => Err(CborError::UnsupportedSimple { at, value }),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn hex(s: &str) -> Vec<u8> {
        hex::decode(s).unwrap()
    }

    fn int(i: i64) -> Value {
        Value::Int(i)
    }

    /// RFC 8949 Appendix A, the items this decoder supports: both
    /// directions.
    #[test]
    fn rfc8949_appendix_a_vectors() {
        let vectors: Vec<(Value, &str)> = vec![
            (int(0), "00"),
            (int(1), "01"),
            (int(10), "0a"),
            (int(23), "17"),
            (int(24), "1818"),
            (int(25), "1819"),
            (int(100), "1864"),
            (int(1000), "1903e8"),
            (int(1000000), "1a000f4240"),
            (int(1000000000000), "1b000000e8d4a51000"),
            (int(i64::MAX), "1b7fffffffffffffff"),
            (int(-1), "20"),
            (int(-10), "29"),
            (int(-100), "3863"),
            (int(-1000), "3903e7"),
            (int(i64::MIN), "3b7fffffffffffffff"),
            (Value::Bool(false), "f4"),
            (Value::Bool(true), "f5"),
            (Value::Null, "f6"),
            (Value::Tag(1, Box::new(int(1363896240))), "c11a514b67b0"),
            (
                Value::Tag(23, Box::new(Value::Bytes(hex("01020304")))),
                "d74401020304",
            ),
            (
                Value::Tag(32, Box::new(Value::text("http://www.example.com"))),
                "d82076687474703a2f2f7777772e6578616d706c652e636f6d",
            ),
            (Value::Bytes(vec![]), "40"),
            (Value::Bytes(hex("01020304")), "4401020304"),
            (Value::text(""), "60"),
            (Value::text("a"), "6161"),
            (Value::text("IETF"), "6449455446"),
            (Value::text("\"\\"), "62225c"),
            (Value::text("\u{00fc}"), "62c3bc"),
            (Value::text("\u{6c34}"), "63e6b0b4"),
            (Value::text("\u{10151}"), "64f0908591"),
            (Value::Array(vec![]), "80"),
            (Value::Array(vec![int(1), int(2), int(3)]), "83010203"),
            (
                Value::Array(vec![
                    int(1),
                    Value::Array(vec![int(2), int(3)]),
                    Value::Array(vec![int(4), int(5)]),
                ]),
                "8301820203820405",
            ),
            (
                Value::Array((1..=25).map(int).collect()),
                "98190102030405060708090a0b0c0d0e0f101112131415161718181819",
            ),
            (Value::Map(vec![]), "a0"),
            (
                Value::Map(vec![(int(1), int(2)), (int(3), int(4))]),
                "a201020304",
            ),
            (
                Value::Map(vec![
                    (Value::text("a"), int(1)),
                    (Value::text("b"), Value::Array(vec![int(2), int(3)])),
                ]),
                "a26161016162820203",
            ),
            (
                Value::Array(vec![
                    Value::text("a"),
                    Value::Map(vec![(Value::text("b"), Value::text("c"))]),
                ]),
                "826161a161626163",
            ),
            (
                Value::Map(
                    ["a", "b", "c", "d", "e"]
                        .iter()
                        .zip(["A", "B", "C", "D", "E"])
                        .map(|(k, v)| (Value::text(k), Value::text(v)))
                        .collect(),
                ),
                "a56161614161626142616361436164614461656145",
            ),
        ];
        for (value, h) in vectors {
            assert_eq!(hex::encode(encode(&value)), h, "encoding {value:?}");
            assert_eq!(decode(&hex(h)).unwrap(), value, "decoding {h}");
        }
    }

    #[test]
    fn what_is_not_supported_is_a_clear_error() {
        let cases: Vec<(&str, CborError)> = vec![
            // Integers beyond i64.
            ("1bffffffffffffffff", CborError::IntegerOutOfRange { at: 0 }),
            ("3bffffffffffffffff", CborError::IntegerOutOfRange { at: 0 }),
            ("3b8000000000000000", CborError::IntegerOutOfRange { at: 0 }),
            // Floats (RFC 8949 A: 0.0, 1.1, 1.0e+300 ...).
            ("f90000", CborError::Float { at: 0 }),
            ("fb3ff199999999999a", CborError::Float { at: 0 }),
            ("fa47c35000", CborError::Float { at: 0 }),
            // undefined, simple(16), simple(255).
            ("f7", CborError::UnsupportedSimple { at: 0, value: 23 }),
            ("f0", CborError::UnsupportedSimple { at: 0, value: 16 }),
            ("f8ff", CborError::UnsupportedSimple { at: 0, value: 255 }),
            // Indefinite lengths (A: (_ h'0102', h'030405'), [_ ], {_ }).
            ("5f42010243030405ff", CborError::Indefinite { at: 0 }),
            ("9fff", CborError::Indefinite { at: 0 }),
            ("bf61610161629f0203ffff", CborError::Indefinite { at: 0 }),
            ("ff", CborError::Indefinite { at: 0 }),
            // Reserved additional information.
            ("1c", CborError::Reserved { at: 0, info: 28 }),
            // Non-shortest heads.
            ("1817", CborError::NonCanonical { at: 0 }),
            ("190017", CborError::NonCanonical { at: 0 }),
            ("1a0000ffff", CborError::NonCanonical { at: 0 }),
            ("1b00000000ffffffff", CborError::NonCanonical { at: 0 }),
            ("5801ff", CborError::NonCanonical { at: 0 }),
            // Truncation and trailing bytes.
            ("", CborError::Truncated { at: 0 }),
            ("19", CborError::Truncated { at: 1 }),
            ("811901", CborError::Truncated { at: 3 }),
            ("f814", CborError::NonCanonical { at: 0 }),
            ("0000", CborError::TrailingBytes { at: 1, count: 1 }),
            // Lengths beyond the input, including huge ones.
            (
                "5b7fffffffffffffff",
                CborError::TooLong {
                    at: 0,
                    len: 0x7fff_ffff_ffff_ffff,
                    remaining: 0,
                },
            ),
            (
                "9bffffffffffffffff00",
                CborError::TooLong {
                    at: 0,
                    len: u64::MAX,
                    remaining: 1,
                },
            ),
            (
                "a20102",
                CborError::TooLong {
                    at: 0,
                    len: 2,
                    remaining: 2,
                },
            ),
            // Bad UTF-8 and duplicate keys.
            ("62c328", CborError::InvalidUtf8 { at: 0 }),
            ("a201020103", CborError::DuplicateKey { at: 0 }),
        ];
        for (h, want) in cases {
            assert_eq!(decode(&hex(h)), Err(want), "decoding {h:?}");
        }
    }

    #[test]
    fn nesting_is_limited() {
        // MAX_DEPTH nested arrays decode; one more does not.
        let mut ok = vec![0x81u8; MAX_DEPTH - 1];
        ok.push(0x80);
        assert!(decode(&ok).is_ok());
        let mut deep = vec![0x81u8; MAX_DEPTH];
        deep.push(0x80);
        assert_eq!(decode(&deep), Err(CborError::TooDeep { at: MAX_DEPTH }));
        // Deep tags and maps count too; a million levels is not a stack
        // overflow.
        let tags = vec![0xc1u8; 1_000_000];
        assert!(matches!(decode(&tags), Err(CborError::TooDeep { .. })));
        let mut maps = Vec::new();
        for _ in 0..100 {
            maps.extend_from_slice(&[0xa1, 0x00]);
        }
        maps.push(0x00);
        assert!(matches!(decode(&maps), Err(CborError::TooDeep { .. })));
    }

    #[test]
    fn duplicate_keys_are_found_in_linear_time() {
        // A map of 100,000 distinct keys decodes quickly; a duplicate at
        // the end is found.
        let mut big = vec![0xba, 0x00, 0x01, 0x86, 0xa0];
        for k in 0..100_000u32 {
            big.extend_from_slice(&[0x1a]);
            big.extend_from_slice(&(k + 65536).to_be_bytes());
            big.push(0xf6);
        }
        let start = std::time::Instant::now();
        assert_eq!(
            decode(&big).unwrap().as_map().map(<[_]>::len),
            Some(100_000)
        );
        assert!(start.elapsed() < std::time::Duration::from_secs(5));
        let n = big.len();
        big[n - 5..n - 1].copy_from_slice(&65536u32.to_be_bytes());
        assert_eq!(decode(&big), Err(CborError::DuplicateKey { at: 0 }));
    }

    #[test]
    fn accessors() {
        let m = Value::Map(vec![
            (int(1), int(-8)),
            (Value::text("t"), Value::Bytes(vec![1])),
            (int(2), Value::Array(vec![Value::Null])),
        ]);
        assert_eq!(m.map_get(&int(1)).and_then(Value::as_int), Some(-8));
        assert_eq!(
            m.map_get(&Value::text("t")).and_then(Value::as_bytes),
            Some(&[1u8][..])
        );
        assert_eq!(
            m.map_get(&int(2)).and_then(Value::as_array).map(<[_]>::len),
            Some(1)
        );
        assert_eq!(m.map_get(&int(3)), None);
        assert_eq!(int(1).map_get(&int(1)), None);
        assert_eq!(Value::text("x").as_text(), Some("x"));
        assert_eq!(Value::text("x").as_bytes(), None);
        assert_eq!(m.as_map().map(<[_]>::len), Some(3));
        assert_eq!(Value::Bool(true).as_bool(), Some(true));
    }

    fn arb_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            any::<i64>().prop_map(Value::Int),
            (-30i64..30).prop_map(Value::Int),
            proptest::collection::vec(any::<u8>(), 0..40).prop_map(Value::Bytes),
            ".{0,20}".prop_map(Value::Text),
            any::<bool>().prop_map(Value::Bool),
            Just(Value::Null),
        ];
        leaf.prop_recursive(6, 64, 8, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
                // Distinct keys: a map with duplicate keys is not valid CBOR.
                proptest::collection::btree_map(any::<i64>(), inner.clone(), 0..6).prop_map(|m| {
                    Value::Map(m.into_iter().map(|(k, v)| (Value::Int(k), v)).collect())
                }),
                (any::<u64>(), inner).prop_map(|(t, v)| Value::Tag(t, Box::new(v))),
            ]
        })
    }

    proptest! {
        #[test]
        fn roundtrip(v in arb_value()) {
            let bytes = encode(&v);
            prop_assert_eq!(decode(&bytes), Ok(v.clone()));
            // Deterministic: decoding and encoding again gives the same bytes.
            prop_assert_eq!(encode(&decode(&bytes).unwrap()), bytes);
        }

        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            if let Ok(v) = decode(&bytes) {
                // Whatever decodes is canonical: it re-encodes to the input.
                prop_assert_eq!(encode(&v), bytes);
            }
        }

        #[test]
        fn truncations_and_flips_never_panic(v in arb_value(), cut in any::<usize>(), flip in any::<(usize, u8)>()) {
            let bytes = encode(&v);
            let cut = cut % (bytes.len() + 1);
            let _ = decode(&bytes[..cut]);
            let mut flipped = bytes.clone();
            let i = flip.0 % flipped.len();
            flipped[i] ^= flip.1 | 1;
            let _ = decode(&flipped);
        }
    }
}
