//! The QuickJS host functions behind `ccf.crypto`: thin bindings of
//! [`crate::crypto`], the twins of `v8_engine/crypto_bindings.rs` (same
//! names, arguments, results, error types and messages). The prelude
//! unpacks CCF's argument shapes and parses the JSON text the key pair and
//! JWK functions return; here each native checks its arguments' types (a
//! wrong type is a `TypeError`) and turns a crypto failure into a
//! `RangeError` with the message of [`crate::crypto`].

use rquickjs::{Ctx, Exception, Object, Value};

use super::host::{arg, array_buffer, bytes_arg, string_arg, Args};
use crate::crypto::{self, CryptoResult, SigningAlgorithm};

/// A string argument that may also be `undefined` or `null` (`hash`, `kid`).
fn optional_string_arg<'js>(
    ctx: &Ctx<'js>,
    value: &Value<'js>,
    what: &str,
) -> rquickjs::Result<Option<String>> {
    if value.is_null() || value.is_undefined() {
        Ok(None)
    } else {
        string_arg(ctx, value, what).map(Some)
    }
}

fn ok<T>(ctx: &Ctx<'_>, result: CryptoResult<T>) -> rquickjs::Result<T> {
    result.map_err(|message| Exception::throw_range(ctx, &message))
}

/// `(name, hash)` of an algorithm object, unpacked by the prelude.
fn algorithm_args<'js>(ctx: &Ctx<'js>, args: &Args<'js>) -> rquickjs::Result<SigningAlgorithm> {
    let name = string_arg(ctx, &arg(ctx, args, 0), "algorithm.name")?;
    let hash = optional_string_arg(ctx, &arg(ctx, args, 1), "algorithm.hash")?;
    ok(ctx, SigningAlgorithm::parse(&name, hash.as_deref()))
}

fn digest<'js>(ctx: Ctx<'js>, args: Args<'js>) -> rquickjs::Result<Value<'js>> {
    let algorithm = string_arg(&ctx, &arg(&ctx, &args, 0), "the digest algorithm")?;
    let data = bytes_arg(&ctx, &arg(&ctx, &args, 1), "data")?;
    let h = ok(&ctx, crypto::digest(&algorithm, &data))?;
    array_buffer(&ctx, &h)
}

/// `(name, hash, privateKeyPem, data)`.
fn sign<'js>(ctx: Ctx<'js>, args: Args<'js>) -> rquickjs::Result<Value<'js>> {
    let algorithm = algorithm_args(&ctx, &args)?;
    let pem = string_arg(&ctx, &arg(&ctx, &args, 2), "the private key (PEM)")?;
    let data = bytes_arg(&ctx, &arg(&ctx, &args, 3), "data")?;
    let sig = ok(&ctx, crypto::sign(algorithm, &pem, &data))?;
    array_buffer(&ctx, &sig)
}

/// `(name, hash, keyPem, signature, data)`.
fn verify<'js>(ctx: Ctx<'js>, args: Args<'js>) -> rquickjs::Result<bool> {
    let algorithm = algorithm_args(&ctx, &args)?;
    let pem = string_arg(
        &ctx,
        &arg(&ctx, &args, 2),
        "the public key or certificate (PEM)",
    )?;
    let signature = bytes_arg(&ctx, &arg(&ctx, &args, 3), "signature")?;
    let data = bytes_arg(&ctx, &arg(&ctx, &args, 4), "data")?;
    ok(
        &ctx,
        crypto::verify_signature(algorithm, &pem, &signature, &data),
    )
}

/// Returns the pair as JSON text, which the prelude parses.
fn generate_eddsa_key_pair<'js>(ctx: Ctx<'js>, args: Args<'js>) -> rquickjs::Result<String> {
    let curve = string_arg(&ctx, &arg(&ctx, &args, 0), "the curve")?;
    let pair = ok(&ctx, crypto::generate_eddsa_key_pair(&curve))?;
    Ok(serde_json::to_string(&pair).unwrap_or_default())
}

fn generate_ecdsa_key_pair<'js>(ctx: Ctx<'js>, args: Args<'js>) -> rquickjs::Result<String> {
    let curve = string_arg(&ctx, &arg(&ctx, &args, 0), "the curve")?;
    let pair = ok(&ctx, crypto::generate_ecdsa_key_pair(&curve))?;
    Ok(serde_json::to_string(&pair).unwrap_or_default())
}

fn generate_aes_key<'js>(ctx: Ctx<'js>, args: Args<'js>) -> rquickjs::Result<Value<'js>> {
    let Some(bits) = arg(&ctx, &args, 0).as_number() else {
        return Err(Exception::throw_type(
            &ctx,
            "the AES key size must be a number of bits",
        ));
    };
    // Anything but 128, 192 or 256 is refused by `generate_aes_key`.
    if bits.fract() != 0.0 || !(0.0..=f64::from(u32::MAX)).contains(&bits) {
        return Err(Exception::throw_range(
            &ctx,
            &format!("invalid AES key size {bits}, supported: 128, 192, 256"),
        ));
    }
    let key = ok(&ctx, crypto::generate_aes_key(bits as u32))?;
    array_buffer(&ctx, &key)
}

/// [`crypto::wrap_key`] or [`crypto::unwrap_key`].
type KeyWrapOp = fn(&[u8], &[u8], &str) -> CryptoResult<Vec<u8>>;

/// `(key, wrappingKey, algorithmName)`; also unwrap, with the same shape.
fn key_wrap<'js>(ctx: &Ctx<'js>, args: &Args<'js>, op: KeyWrapOp) -> rquickjs::Result<Value<'js>> {
    let key = bytes_arg(ctx, &arg(ctx, args, 0), "key")?;
    let wrapping_key = bytes_arg(ctx, &arg(ctx, args, 1), "wrapping key")?;
    let name = string_arg(ctx, &arg(ctx, args, 2), "algorithm.name")?;
    let out = ok(ctx, op(&key, &wrapping_key, &name))?;
    array_buffer(ctx, &out)
}

fn wrap_key<'js>(ctx: Ctx<'js>, args: Args<'js>) -> rquickjs::Result<Value<'js>> {
    key_wrap(&ctx, &args, crypto::wrap_key)
}

fn unwrap_key<'js>(ctx: Ctx<'js>, args: Args<'js>) -> rquickjs::Result<Value<'js>> {
    key_wrap(&ctx, &args, crypto::unwrap_key)
}

fn is_valid_x509_cert_bundle<'js>(ctx: Ctx<'js>, args: Args<'js>) -> rquickjs::Result<bool> {
    let pem = string_arg(&ctx, &arg(&ctx, &args, 0), "the certificate bundle (PEM)")?;
    Ok(crypto::is_valid_x509_cert_bundle(&pem))
}

/// `(pem, kid?)` → JWK as JSON text, for `f` the public or private form.
fn to_jwk<'js>(
    ctx: &Ctx<'js>,
    args: &Args<'js>,
    f: fn(&str, Option<&str>) -> CryptoResult<crypto::Jwk>,
) -> rquickjs::Result<String> {
    let pem = string_arg(ctx, &arg(ctx, args, 0), "the key (PEM)")?;
    let kid = optional_string_arg(ctx, &arg(ctx, args, 1), "kid")?;
    let jwk = ok(ctx, f(&pem, kid.as_deref()))?;
    Ok(jwk.to_json())
}

fn pub_pem_to_jwk<'js>(ctx: Ctx<'js>, args: Args<'js>) -> rquickjs::Result<String> {
    to_jwk(&ctx, &args, crypto::pub_pem_to_jwk)
}

fn pem_to_jwk<'js>(ctx: Ctx<'js>, args: Args<'js>) -> rquickjs::Result<String> {
    to_jwk(&ctx, &args, crypto::pem_to_jwk)
}

/// Adds the crypto natives to the prelude's `native` object.
pub(super) fn register<'js>(ctx: &Ctx<'js>, native: &Object<'js>) -> rquickjs::Result<()> {
    use rquickjs::Function;
    native.set("cryptoDigest", Function::new(ctx.clone(), digest)?)?;
    native.set("cryptoSign", Function::new(ctx.clone(), sign)?)?;
    native.set("cryptoVerify", Function::new(ctx.clone(), verify)?)?;
    native.set(
        "cryptoGenerateEddsaKeyPair",
        Function::new(ctx.clone(), generate_eddsa_key_pair)?,
    )?;
    native.set(
        "cryptoGenerateEcdsaKeyPair",
        Function::new(ctx.clone(), generate_ecdsa_key_pair)?,
    )?;
    native.set(
        "cryptoGenerateAesKey",
        Function::new(ctx.clone(), generate_aes_key)?,
    )?;
    native.set("cryptoWrapKey", Function::new(ctx.clone(), wrap_key)?)?;
    native.set("cryptoUnwrapKey", Function::new(ctx.clone(), unwrap_key)?)?;
    native.set(
        "cryptoIsValidX509CertBundle",
        Function::new(ctx.clone(), is_valid_x509_cert_bundle)?,
    )?;
    native.set(
        "cryptoPubPemToJwk",
        Function::new(ctx.clone(), pub_pem_to_jwk)?,
    )?;
    native.set("cryptoPemToJwk", Function::new(ctx.clone(), pem_to_jwk)?)?;
    Ok(())
}
