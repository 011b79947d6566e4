//! The V8 host functions behind `ccf.crypto`: thin bindings of
//! [`crate::crypto`]. The prelude unpacks CCF's argument shapes (algorithm
//! objects, optional `kid`) and parses the JSON text the key pair and JWK
//! functions return; here each native checks its arguments' types (a wrong
//! type is a `TypeError`) and turns a crypto failure into a `RangeError`
//! with the message of [`crate::crypto`], as CCF does.

use crate::crypto::{self, CryptoResult, SigningAlgorithm};
use crate::v8_engine::host::{
    array_buffer, bytes_arg, new_string, string_arg, throw_range_error, throw_type_error,
};

/// A string argument that may also be `undefined` or `null` (`hash`, `kid`).
fn optional_string_arg(
    scope: &mut v8::HandleScope,
    args: &v8::FunctionCallbackArguments,
    i: i32,
    what: &str,
) -> Option<Option<String>> {
    let value = args.get(i);
    if value.is_null_or_undefined() {
        Some(None)
    } else if value.is_string() {
        Some(Some(value.to_rust_string_lossy(scope)))
    } else {
        throw_type_error(scope, &format!("{what} must be a string"));
        None
    }
}

fn ok<T>(scope: &mut v8::HandleScope, result: CryptoResult<T>) -> Option<T> {
    match result {
        Ok(v) => Some(v),
        Err(message) => {
            throw_range_error(scope, &message);
            None
        }
    }
}

fn set_bytes(scope: &mut v8::HandleScope, rv: &mut v8::ReturnValue, bytes: Vec<u8>) {
    let ab = array_buffer(scope, bytes);
    rv.set(ab.into());
}

fn set_string(scope: &mut v8::HandleScope, rv: &mut v8::ReturnValue, s: &str) {
    if let Some(s) = new_string(scope, s) {
        rv.set(s.into());
    }
}

/// `(name, hash)` of an algorithm object, unpacked by the prelude.
fn algorithm_args(
    scope: &mut v8::HandleScope,
    args: &v8::FunctionCallbackArguments,
) -> Option<SigningAlgorithm> {
    let name = string_arg(scope, args, 0, "algorithm.name")?;
    let hash = optional_string_arg(scope, args, 1, "algorithm.hash")?;
    ok(scope, SigningAlgorithm::parse(&name, hash.as_deref()))
}

fn digest(
    scope: &mut v8::HandleScope,
    args: v8::FunctionCallbackArguments,
    mut rv: v8::ReturnValue,
) {
    let Some(algorithm) = string_arg(scope, &args, 0, "the digest algorithm") else {
        return;
    };
    let Some(data) = bytes_arg(scope, &args, 1, "data") else {
        return;
    };
    if let Some(h) = ok(scope, crypto::digest(&algorithm, &data)) {
        set_bytes(scope, &mut rv, h);
    }
}

/// `(name, hash, privateKeyPem, data)`.
fn sign(scope: &mut v8::HandleScope, args: v8::FunctionCallbackArguments, mut rv: v8::ReturnValue) {
    let Some(algorithm) = algorithm_args(scope, &args) else {
        return;
    };
    let Some(pem) = string_arg(scope, &args, 2, "the private key (PEM)") else {
        return;
    };
    let Some(data) = bytes_arg(scope, &args, 3, "data") else {
        return;
    };
    if let Some(sig) = ok(scope, crypto::sign(algorithm, &pem, &data)) {
        set_bytes(scope, &mut rv, sig);
    }
}

/// `(name, hash, keyPem, signature, data)`.
fn verify(
    scope: &mut v8::HandleScope,
    args: v8::FunctionCallbackArguments,
    mut rv: v8::ReturnValue,
) {
    let Some(algorithm) = algorithm_args(scope, &args) else {
        return;
    };
    let Some(pem) = string_arg(scope, &args, 2, "the public key or certificate (PEM)") else {
        return;
    };
    let Some(signature) = bytes_arg(scope, &args, 3, "signature") else {
        return;
    };
    let Some(data) = bytes_arg(scope, &args, 4, "data") else {
        return;
    };
    if let Some(valid) = ok(
        scope,
        crypto::verify_signature(algorithm, &pem, &signature, &data),
    ) {
        rv.set_bool(valid);
    }
}

/// Returns the pair as JSON text, which the prelude parses.
fn generate_eddsa_key_pair(
    scope: &mut v8::HandleScope,
    args: v8::FunctionCallbackArguments,
    mut rv: v8::ReturnValue,
) {
    let Some(curve) = string_arg(scope, &args, 0, "the curve") else {
        return;
    };
    if let Some(pair) = ok(scope, crypto::generate_eddsa_key_pair(&curve)) {
        let json = serde_json::to_string(&pair).unwrap_or_default();
        set_string(scope, &mut rv, &json);
    }
}

fn generate_ecdsa_key_pair(
    scope: &mut v8::HandleScope,
    args: v8::FunctionCallbackArguments,
    mut rv: v8::ReturnValue,
) {
    let Some(curve) = string_arg(scope, &args, 0, "the curve") else {
        return;
    };
    if let Some(pair) = ok(scope, crypto::generate_ecdsa_key_pair(&curve)) {
        let json = serde_json::to_string(&pair).unwrap_or_default();
        set_string(scope, &mut rv, &json);
    }
}

fn generate_aes_key(
    scope: &mut v8::HandleScope,
    args: v8::FunctionCallbackArguments,
    mut rv: v8::ReturnValue,
) {
    let value = args.get(0);
    if !value.is_number() {
        throw_type_error(scope, "the AES key size must be a number of bits");
        return;
    }
    let bits = value.number_value(scope).unwrap_or(f64::NAN);
    // Anything but 128, 192 or 256 is refused by `generate_aes_key`.
    let bits = if bits.fract() == 0.0 && (0.0..=f64::from(u32::MAX)).contains(&bits) {
        bits as u32
    } else {
        throw_range_error(
            scope,
            &format!("invalid AES key size {bits}, supported: 128, 192, 256"),
        );
        return;
    };
    if let Some(key) = ok(scope, crypto::generate_aes_key(bits)) {
        set_bytes(scope, &mut rv, key);
    }
}

/// [`crypto::wrap_key`] or [`crypto::unwrap_key`].
type KeyWrapOp = fn(&[u8], &[u8], &str) -> CryptoResult<Vec<u8>>;

/// `(key, wrappingKey, algorithmName)`; also unwrap, with the same shape.
fn key_wrap(
    scope: &mut v8::HandleScope,
    args: &v8::FunctionCallbackArguments,
    rv: &mut v8::ReturnValue,
    op: KeyWrapOp,
) {
    let Some(key) = bytes_arg(scope, args, 0, "key") else {
        return;
    };
    let Some(wrapping_key) = bytes_arg(scope, args, 1, "wrapping key") else {
        return;
    };
    let Some(name) = string_arg(scope, args, 2, "algorithm.name") else {
        return;
    };
    if let Some(out) = ok(scope, op(&key, &wrapping_key, &name)) {
        set_bytes(scope, rv, out);
    }
}

fn wrap_key(
    scope: &mut v8::HandleScope,
    args: v8::FunctionCallbackArguments,
    mut rv: v8::ReturnValue,
) {
    key_wrap(scope, &args, &mut rv, crypto::wrap_key);
}

fn unwrap_key(
    scope: &mut v8::HandleScope,
    args: v8::FunctionCallbackArguments,
    mut rv: v8::ReturnValue,
) {
    key_wrap(scope, &args, &mut rv, crypto::unwrap_key);
}

fn is_valid_x509_cert_bundle(
    scope: &mut v8::HandleScope,
    args: v8::FunctionCallbackArguments,
    mut rv: v8::ReturnValue,
) {
    let Some(pem) = string_arg(scope, &args, 0, "the certificate bundle (PEM)") else {
        return;
    };
    rv.set_bool(crypto::is_valid_x509_cert_bundle(&pem));
}

/// `(pem, kid?)` → JWK as JSON text, for `f` the public or private form.
fn to_jwk(
    scope: &mut v8::HandleScope,
    args: &v8::FunctionCallbackArguments,
    rv: &mut v8::ReturnValue,
    f: fn(&str, Option<&str>) -> CryptoResult<crypto::Jwk>,
) {
    let Some(pem) = string_arg(scope, args, 0, "the key (PEM)") else {
        return;
    };
    let Some(kid) = optional_string_arg(scope, args, 1, "kid") else {
        return;
    };
    if let Some(jwk) = ok(scope, f(&pem, kid.as_deref())) {
        set_string(scope, rv, &jwk.to_json());
    }
}

fn pub_pem_to_jwk(
    scope: &mut v8::HandleScope,
    args: v8::FunctionCallbackArguments,
    mut rv: v8::ReturnValue,
) {
    to_jwk(scope, &args, &mut rv, crypto::pub_pem_to_jwk);
}

fn pem_to_jwk(
    scope: &mut v8::HandleScope,
    args: v8::FunctionCallbackArguments,
    mut rv: v8::ReturnValue,
) {
    to_jwk(scope, &args, &mut rv, crypto::pem_to_jwk);
}

/// Adds the crypto natives to the prelude's `native` object.
pub(super) fn register(scope: &mut v8::HandleScope, obj: v8::Local<v8::Object>) -> Option<()> {
    macro_rules! add {
        ($name:literal, $f:expr) => {{
            let f = v8::Function::new(scope, $f)?;
            let k = v8::String::new(scope, $name)?;
            obj.set(scope, k.into(), f.into())?;
        }};
    }
    add!("cryptoDigest", digest);
    add!("cryptoSign", sign);
    add!("cryptoVerify", verify);
    add!("cryptoGenerateEddsaKeyPair", generate_eddsa_key_pair);
    add!("cryptoGenerateEcdsaKeyPair", generate_ecdsa_key_pair);
    add!("cryptoGenerateAesKey", generate_aes_key);
    add!("cryptoWrapKey", wrap_key);
    add!("cryptoUnwrapKey", unwrap_key);
    add!("cryptoIsValidX509CertBundle", is_valid_x509_cert_bundle);
    add!("cryptoPubPemToJwk", pub_pem_to_jwk);
    add!("cryptoPemToJwk", pem_to_jwk);
    Some(())
}
