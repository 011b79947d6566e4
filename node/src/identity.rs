//! Keys and certificates: the service identity (created by the first node),
//! each node's identity (endorsed by the service key), and user/member
//! identities (self-signed; registered in governance tables).
//!
//! All keys are Ed25519. Ids of users, members and nodes are the hex
//! SHA-256 of their DER certificate, as in CCF.

use std::path::Path;

use anyhow::{anyhow, Context};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, IsCa, KeyPair, KeyUsagePurpose, PKCS_ED25519,
};
use sha2::{Digest, Sha256};

pub const SERVICE_CN: &str = "Charter service";

/// A key and its certificate, both PEM.
#[derive(Clone)]
pub struct Identity {
    pub key_pem: String,
    pub cert_pem: String,
}

fn dn(cn: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    dn
}

/// A new service identity: an Ed25519 key and a self-signed CA certificate.
/// Clients trust this certificate and nothing else.
pub fn new_service_identity() -> anyhow::Result<Identity> {
    let key = KeyPair::generate_for(&PKCS_ED25519)?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name = dn(SERVICE_CN);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let cert = params.self_signed(&key)?;
    Ok(Identity {
        key_pem: key.serialize_pem(),
        cert_pem: cert.pem(),
    })
}

/// A self-signed identity for a user or member (`charter sandbox` and
/// `charter gov keygen` create these).
pub fn new_client_identity(name: &str) -> anyhow::Result<Identity> {
    let key = KeyPair::generate_for(&PKCS_ED25519)?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name = dn(name);
    let cert = params.self_signed(&key)?;
    Ok(Identity {
        key_pem: pkcs8_v1_pem(&key)?,
        cert_pem: cert.pem(),
    })
}

/// The Ed25519 key as a PKCS#8 v1 PEM (RFC 8410: the seed only). rcgen
/// writes v2 (with the public key), which OpenSSL 3.0, and so curl and
/// Python's `ssl`, cannot load; users and members hand their key to those.
fn pkcs8_v1_pem(key: &KeyPair) -> anyhow::Result<String> {
    use base64::Engine;
    use ed25519_dalek::pkcs8::DecodePrivateKey;
    let signing = ed25519_dalek::SigningKey::from_pkcs8_der(&key.serialize_der())
        .map_err(|e| anyhow!("re-encoding the Ed25519 key: {e}"))?;
    // SEQUENCE { INTEGER 0, SEQUENCE { OID 1.3.101.112 }, OCTET STRING { OCTET STRING seed } }
    let mut der = vec![
        0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04,
        0x20,
    ];
    der.extend_from_slice(&signing.to_bytes());
    let b64 = base64::engine::general_purpose::STANDARD.encode(&der);
    Ok(format!(
        "-----BEGIN PRIVATE KEY-----\n{b64}\n-----END PRIVATE KEY-----\n"
    ))
}

/// A fresh node key and a certificate signing request for it. The names
/// are those a peer or client dials: loopback names plus the given hosts.
pub fn new_node_key_and_csr(hosts: &[String]) -> anyhow::Result<(String, String)> {
    let key = KeyPair::generate_for(&PKCS_ED25519)?;
    let mut sans = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    for h in hosts {
        if !sans.contains(h) {
            sans.push(h.clone());
        }
    }
    let mut params = CertificateParams::new(sans)?;
    params.distinguished_name = dn("Charter node");
    let csr = params.serialize_request(&key)?.pem()?;
    Ok((key.serialize_pem(), csr))
}

/// The service endorses a node: signs the node's CSR with the service key.
pub fn endorse_node(csr_pem: &str, service: &Identity) -> anyhow::Result<String> {
    let csr =
        CertificateSigningRequestParams::from_pem(csr_pem).map_err(|e| anyhow!("bad CSR: {e}"))?;
    let service_key = KeyPair::from_pem(&service.key_pem).context("service key")?;
    let issuer = CertificateParams::from_ca_cert_pem(&service.cert_pem)
        .context("service certificate")?
        .self_signed(&service_key)?;
    let cert = csr.signed_by(&issuer, &service_key)?;
    Ok(cert.pem())
}

/// The public key (SubjectPublicKeyInfo bits) a CSR asks to certify.
pub fn csr_public_key(csr_pem: &str) -> anyhow::Result<Vec<u8>> {
    use x509_parser::prelude::FromDer;
    let (_, pem) = x509_parser::pem::parse_x509_pem(csr_pem.as_bytes())
        .map_err(|e| anyhow!("bad CSR: {e}"))?;
    let (_, csr) =
        x509_parser::certification_request::X509CertificationRequest::from_der(&pem.contents)
            .map_err(|e| anyhow!("bad CSR: {e}"))?;
    Ok(csr
        .certification_request_info
        .subject_pki
        .subject_public_key
        .data
        .to_vec())
}

/// The public key (SubjectPublicKeyInfo bits) of a PEM certificate.
pub fn cert_public_key(cert_pem: &str) -> anyhow::Result<Vec<u8>> {
    let der = pem_to_der(cert_pem)?;
    let (_, cert) =
        x509_parser::parse_x509_certificate(&der).map_err(|e| anyhow!("bad certificate: {e}"))?;
    Ok(cert.public_key().subject_public_key.data.to_vec())
}

/// Hex SHA-256 of a DER certificate: the id of a user, member or node.
pub fn cert_id_der(der: &[u8]) -> String {
    hex::encode(Sha256::digest(der))
}

/// The first certificate of a PEM document, as DER.
pub fn pem_to_der(pem: &str) -> anyhow::Result<Vec<u8>> {
    let mut reader = pem.as_bytes();
    let cert = rustls_pemfile::certs(&mut reader)
        .next()
        .ok_or_else(|| anyhow!("no certificate in PEM"))??;
    Ok(cert.to_vec())
}

pub fn cert_id_pem(pem: &str) -> anyhow::Result<String> {
    Ok(cert_id_der(&pem_to_der(pem)?))
}

/// The DER certificate in PEM form.
pub fn der_to_pem(der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).expect("base64 is ASCII"));
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

/// Writes a file readable only by its owner (keys).
pub fn write_private(path: &Path, contents: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    f.write_all(contents.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// Writes a file atomically (write to a temporary name, then rename).
pub fn write_public(path: &Path, contents: &str) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, contents).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_endorses_a_node_and_ids_are_stable() {
        let service = new_service_identity().unwrap();
        let (_key, csr) = new_node_key_and_csr(&["10.0.0.1".to_string()]).unwrap();
        let node_cert = endorse_node(&csr, &service).unwrap();
        // The endorsed certificate chains to the service certificate.
        let roots = {
            let mut r = rustls::RootCertStore::empty();
            r.add(pem_to_der(&service.cert_pem).unwrap().into())
                .unwrap();
            r
        };
        let der = pem_to_der(&node_cert).unwrap();
        let cert = rustls::pki_types::CertificateDer::from(der.clone());
        let end = rustls::server::ParsedCertificate::try_from(&cert);
        assert!(end.is_ok());
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            roots.into(),
            rustls::crypto::ring::default_provider().into(),
        )
        .build()
        .unwrap();
        use rustls::client::danger::ServerCertVerifier;
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
        verifier
            .verify_server_cert(&cert, &[], &name, &[], rustls::pki_types::UnixTime::now())
            .expect("node cert verifies against the service cert");
        assert_eq!(cert_id_pem(&der_to_pem(&der)).unwrap(), cert_id_der(&der));
        // A certificate signed by another service does not verify.
        let other = new_service_identity().unwrap();
        let stranger = endorse_node(&csr, &other).unwrap();
        let stranger = rustls::pki_types::CertificateDer::from(pem_to_der(&stranger).unwrap());
        assert!(verifier
            .verify_server_cert(
                &stranger,
                &[],
                &name,
                &[],
                rustls::pki_types::UnixTime::now()
            )
            .is_err());
    }
}
