//! The host side of the governance `ccf` object: KV access through a write
//! buffer, buffers and strings, certificates, SHA-256 and logging.
//!
//! The JS-facing shape is built in `prelude.js`; this file provides the
//! `native` object it is given. Every function here checks its own
//! arguments and throws a JS error on bad input: nothing a script passes
//! can make Rust panic.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

use charter_ledger::{CommitError, Tx};
use rquickjs::{Array, ArrayBuffer, Ctx, Exception, Function, Object, Value};
use sha2::{Digest, Sha256};

/// Fixed cost charged per KV call on top of the bytes it moves, so that a
/// loop of tiny reads also runs into the budget.
const CALL_COST: usize = 64;

/// One map's buffered changes.
#[derive(Debug, Default)]
struct MapOverlay {
    /// `clear()` was called: keys not in `writes` read as absent.
    cleared: bool,
    /// `Some` writes the value, `None` removes the key.
    writes: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
}

/// Writes a script makes, kept apart from the transaction until the script
/// has finished without error. Reads see the buffer first, then the
/// transaction.
#[derive(Debug, Default)]
pub(super) struct Overlay {
    maps: BTreeMap<String, MapOverlay>,
}

impl Overlay {
    fn get(&self, tx: &mut Tx, map: &str, key: &[u8]) -> Option<Vec<u8>> {
        if let Some(m) = self.maps.get(map) {
            if let Some(w) = m.writes.get(key) {
                return w.clone();
            }
            if m.cleared {
                return None;
            }
        }
        tx.get(map, key)
    }

    fn entries(&self, tx: &mut Tx, map: &str) -> BTreeMap<Vec<u8>, Vec<u8>> {
        let m = self.maps.get(map);
        let mut out = if m.is_some_and(|m| m.cleared) {
            BTreeMap::new()
        } else {
            tx.entries(map)
        };
        if let Some(m) = m {
            for (k, w) in &m.writes {
                match w {
                    Some(v) => {
                        out.insert(k.clone(), v.clone());
                    }
                    None => {
                        out.remove(k);
                    }
                }
            }
        }
        out
    }

    fn put(&mut self, map: &str, key: Vec<u8>, value: Option<Vec<u8>>) {
        self.maps
            .entry(map.to_string())
            .or_default()
            .writes
            .insert(key, value);
    }

    fn clear(&mut self, map: &str) {
        let m = self.maps.entry(map.to_string()).or_default();
        m.cleared = true;
        m.writes.clear();
    }

    /// The value the buffer would leave at `map`/`key`, if it touches it.
    pub(super) fn written(&self, map: &str, key: &[u8]) -> Option<Option<&[u8]>> {
        let m = self.maps.get(map)?;
        match m.writes.get(key) {
            Some(w) => Some(w.as_deref()),
            None if m.cleared => Some(None),
            None => None,
        }
    }

    /// Moves the buffered writes into the transaction.
    pub(super) fn flush(self, tx: &mut Tx) -> Result<(), CommitError> {
        for (map, m) in self.maps {
            if m.cleared {
                tx.clear(&map)?;
            }
            for (key, w) in m.writes {
                match w {
                    Some(v) => tx.set(&map, &key, &v)?,
                    None => tx.delete(&map, &key)?,
                }
            }
        }
        Ok(())
    }
}

/// What the native functions share: the transaction (moved in for the
/// duration of the call), the write buffer and the budget.
pub(super) struct Host {
    pub(super) tx: Option<Tx>,
    pub(super) overlay: Overlay,
    writable: bool,
    /// Bytes of KV traffic still allowed. The JS heap limit does not see
    /// memory held on the Rust side (the write buffer, the transaction's
    /// read set), so it is bounded here, by the same number.
    budget: usize,
}

impl Host {
    pub(super) fn new(tx: Tx, writable: bool, budget: usize) -> Self {
        Host {
            tx: Some(tx),
            overlay: Overlay::default(),
            writable,
            budget,
        }
    }

    fn charge<'js>(&mut self, ctx: &Ctx<'js>, bytes: usize) -> rquickjs::Result<()> {
        let cost = bytes.saturating_add(CALL_COST);
        if cost > self.budget {
            self.budget = 0;
            return Err(Exception::throw_range(
                ctx,
                "governance KV traffic exceeds the max_heap_bytes budget of this call",
            ));
        }
        self.budget -= cost;
        Ok(())
    }

    fn check_writable<'js>(&self, ctx: &Ctx<'js>, map: &str) -> rquickjs::Result<()> {
        if self.writable {
            Ok(())
        } else {
            Err(Exception::throw_message(
                ctx,
                &format!(
                    "{map} is read-only here: only the constitution's apply may write to the KV"
                ),
            ))
        }
    }

    fn tx<'js>(&mut self, ctx: &Ctx<'js>) -> rquickjs::Result<(&mut Tx, &mut Overlay)> {
        match self.tx.as_mut() {
            Some(tx) => Ok((tx, &mut self.overlay)),
            None => Err(Exception::throw_internal(
                ctx,
                "the KV store is not available outside a governance call",
            )),
        }
    }
}

type Shared = Rc<RefCell<Host>>;

fn borrow<'a, 'js>(
    ctx: &Ctx<'js>,
    host: &'a Shared,
) -> rquickjs::Result<std::cell::RefMut<'a, Host>> {
    host.try_borrow_mut()
        .map_err(|_| Exception::throw_internal(ctx, "the KV store is busy"))
}

fn string_arg<'js>(ctx: &Ctx<'js>, value: &Value<'js>, what: &str) -> rquickjs::Result<String> {
    match value.as_string() {
        Some(s) => s.to_string(),
        None => Err(Exception::throw_type(
            ctx,
            &format!("{what} must be a string"),
        )),
    }
}

fn bytes_arg<'js>(ctx: &Ctx<'js>, value: &Value<'js>, what: &str) -> rquickjs::Result<Vec<u8>> {
    let buf = ArrayBuffer::from_value(value.clone());
    match buf.as_ref().and_then(|b| b.as_bytes()) {
        Some(b) => Ok(b.to_vec()),
        None => Err(Exception::throw_type(
            ctx,
            &format!("{what} must be an ArrayBuffer that is not detached"),
        )),
    }
}

fn buffer<'js>(ctx: &Ctx<'js>, bytes: &[u8]) -> rquickjs::Result<Value<'js>> {
    Ok(ArrayBuffer::new_copy(ctx.clone(), bytes)?.into_value())
}

/// True if `pem` holds one or more PEM blocks, all certificates that parse
/// as X.509, and nothing else but whitespace around them.
pub(super) fn is_valid_cert_bundle(pem: &str) -> bool {
    let mut count = 0usize;
    for block in x509_parser::pem::Pem::iter_from_buffer(pem.as_bytes()) {
        let Ok(block) = block else {
            return false;
        };
        if block.label != "CERTIFICATE" || block.parse_x509().is_err() {
            return false;
        }
        count += 1;
    }
    count > 0
}

/// The `native` object handed to the prelude.
pub(super) fn natives<'js>(ctx: &Ctx<'js>, host: &Shared) -> rquickjs::Result<Object<'js>> {
    let native = Object::new(ctx.clone())?;

    let h = host.clone();
    native.set(
        "kvGet",
        Function::new(
            ctx.clone(),
            move |ctx: Ctx<'js>,
                  map: Value<'js>,
                  key: Value<'js>|
                  -> rquickjs::Result<Value<'js>> {
                let map = string_arg(&ctx, &map, "map name")?;
                let key = bytes_arg(&ctx, &key, "key")?;
                let value = {
                    let mut host = borrow(&ctx, &h)?;
                    host.charge(&ctx, key.len())?;
                    let (tx, overlay) = host.tx(&ctx)?;
                    overlay.get(tx, &map, &key)
                };
                match value {
                    Some(v) => buffer(&ctx, &v),
                    None => Ok(Value::new_undefined(ctx.clone())),
                }
            },
        )?,
    )?;

    let h = host.clone();
    native.set(
        "kvHas",
        Function::new(
            ctx.clone(),
            move |ctx: Ctx<'js>, map: Value<'js>, key: Value<'js>| -> rquickjs::Result<bool> {
                let map = string_arg(&ctx, &map, "map name")?;
                let key = bytes_arg(&ctx, &key, "key")?;
                let mut host = borrow(&ctx, &h)?;
                host.charge(&ctx, key.len())?;
                let (tx, overlay) = host.tx(&ctx)?;
                Ok(overlay.get(tx, &map, &key).is_some())
            },
        )?,
    )?;

    let h = host.clone();
    native.set(
        "kvSet",
        Function::new(
            ctx.clone(),
            move |ctx: Ctx<'js>,
                  map: Value<'js>,
                  key: Value<'js>,
                  value: Value<'js>|
                  -> rquickjs::Result<()> {
                let map = string_arg(&ctx, &map, "map name")?;
                let key = bytes_arg(&ctx, &key, "key")?;
                let value = bytes_arg(&ctx, &value, "value")?;
                let mut host = borrow(&ctx, &h)?;
                host.check_writable(&ctx, &map)?;
                host.charge(&ctx, key.len().saturating_add(value.len()))?;
                host.overlay.put(&map, key, Some(value));
                Ok(())
            },
        )?,
    )?;

    let h = host.clone();
    native.set(
        "kvDelete",
        Function::new(
            ctx.clone(),
            move |ctx: Ctx<'js>, map: Value<'js>, key: Value<'js>| -> rquickjs::Result<bool> {
                let map = string_arg(&ctx, &map, "map name")?;
                let key = bytes_arg(&ctx, &key, "key")?;
                let mut host = borrow(&ctx, &h)?;
                host.check_writable(&ctx, &map)?;
                host.charge(&ctx, key.len())?;
                let (tx, overlay) = host.tx(&ctx)?;
                let existed = overlay.get(tx, &map, &key).is_some();
                overlay.put(&map, key, None);
                Ok(existed)
            },
        )?,
    )?;

    let h = host.clone();
    native.set(
        "kvClear",
        Function::new(
            ctx.clone(),
            move |ctx: Ctx<'js>, map: Value<'js>| -> rquickjs::Result<()> {
                let map = string_arg(&ctx, &map, "map name")?;
                let mut host = borrow(&ctx, &h)?;
                host.check_writable(&ctx, &map)?;
                host.charge(&ctx, map.len())?;
                host.overlay.clear(&map);
                Ok(())
            },
        )?,
    )?;

    let h = host.clone();
    native.set(
        "kvSize",
        Function::new(
            ctx.clone(),
            move |ctx: Ctx<'js>, map: Value<'js>| -> rquickjs::Result<f64> {
                let map = string_arg(&ctx, &map, "map name")?;
                let mut host = borrow(&ctx, &h)?;
                host.charge(&ctx, map.len())?;
                let (tx, overlay) = host.tx(&ctx)?;
                // Sizes are far below 2^53: the f64 is exact.
                Ok(overlay.entries(tx, &map).len() as f64)
            },
        )?,
    )?;

    let h = host.clone();
    native.set(
        "kvEntries",
        Function::new(
            ctx.clone(),
            move |ctx: Ctx<'js>, map: Value<'js>| -> rquickjs::Result<Array<'js>> {
                let map = string_arg(&ctx, &map, "map name")?;
                let entries = {
                    let mut host = borrow(&ctx, &h)?;
                    host.charge(&ctx, map.len())?;
                    let (tx, overlay) = host.tx(&ctx)?;
                    overlay.entries(tx, &map)
                };
                let out = Array::new(ctx.clone())?;
                for (i, (k, v)) in entries.iter().enumerate() {
                    let pair = Array::new(ctx.clone())?;
                    pair.set(0, buffer(&ctx, k)?)?;
                    pair.set(1, buffer(&ctx, v)?)?;
                    out.set(i, pair)?;
                }
                Ok(out)
            },
        )?,
    )?;

    native.set(
        "strToBuf",
        Function::new(
            ctx.clone(),
            |ctx: Ctx<'js>, s: Value<'js>| -> rquickjs::Result<Value<'js>> {
                let s = string_arg(&ctx, &s, "ccf.strToBuf's argument")?;
                buffer(&ctx, s.as_bytes())
            },
        )?,
    )?;

    native.set(
        "bufToStr",
        Function::new(
            ctx.clone(),
            |ctx: Ctx<'js>, b: Value<'js>| -> rquickjs::Result<String> {
                let b = bytes_arg(&ctx, &b, "ccf.bufToStr's argument")?;
                String::from_utf8(b).map_err(|e| {
                    Exception::throw_type(
                        &ctx,
                        &format!("ccf.bufToStr: the buffer is not UTF-8 text ({e})"),
                    )
                })
            },
        )?,
    )?;

    native.set(
        "pemToId",
        Function::new(
            ctx.clone(),
            |ctx: Ctx<'js>, pem: Value<'js>| -> rquickjs::Result<String> {
                let pem = string_arg(&ctx, &pem, "ccf.pemToId's argument")?;
                crate::cert_id_pem(&pem)
                    .map_err(|e| Exception::throw_type(&ctx, &format!("ccf.pemToId: {e}")))
            },
        )?,
    )?;

    native.set(
        "isValidX509CertBundle",
        Function::new(
            ctx.clone(),
            |ctx: Ctx<'js>, pem: Value<'js>| -> rquickjs::Result<bool> {
                let pem = string_arg(&ctx, &pem, "ccf.isValidX509CertBundle's argument")?;
                Ok(is_valid_cert_bundle(&pem))
            },
        )?,
    )?;

    native.set(
        "digest",
        Function::new(
            ctx.clone(),
            |ctx: Ctx<'js>, alg: Value<'js>, data: Value<'js>| -> rquickjs::Result<Value<'js>> {
                let alg = string_arg(&ctx, &alg, "algorithm")?;
                let data = bytes_arg(&ctx, &data, "data")?;
                if alg != "SHA-256" {
                    return Err(Exception::throw_type(
                        &ctx,
                        &format!(
                            "ccf.crypto.digest: unsupported algorithm {alg:?} (only \"SHA-256\")"
                        ),
                    ));
                }
                buffer(&ctx, &Sha256::digest(&data))
            },
        )?,
    )?;

    native.set(
        "log",
        Function::new(
            ctx.clone(),
            |ctx: Ctx<'js>, level: Value<'js>, message: Value<'js>| -> rquickjs::Result<()> {
                let level = string_arg(&ctx, &level, "level")?;
                let message = string_arg(&ctx, &message, "message")?;
                match level.as_str() {
                    "error" => tracing::error!(target: "charter::gov", "{message}"),
                    "warn" => tracing::warn!(target: "charter::gov", "{message}"),
                    "debug" => tracing::debug!(target: "charter::gov", "{message}"),
                    _ => tracing::info!(target: "charter::gov", "{message}"),
                }
                Ok(())
            },
        )?,
    )?;

    Ok(native)
}
