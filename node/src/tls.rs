//! rustls configurations. Two servers, two kinds of client:
//!
//! - the client-facing server asks for a client certificate but accepts
//!   any (or none): *who* the caller is gets decided per endpoint by
//!   looking the certificate up in the governance tables;
//! - the node-to-node server requires a certificate endorsed by the
//!   service key, and nodes dial each other presenting theirs;
//! - a joining node (or any client) trusts only the service certificate.

use std::sync::Arc;

use anyhow::{anyhow, Context};
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{
    ClientConfig, DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig,
    SignatureScheme,
};

use crate::identity::{pem_to_der, Identity};

pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn key_der(pem: &str) -> anyhow::Result<PrivateKeyDer<'static>> {
    rustls_pemfile::private_key(&mut pem.as_bytes())
        .context("reading private key PEM")?
        .ok_or_else(|| anyhow!("no private key in PEM"))
}

fn roots(service_cert_pem: &str) -> anyhow::Result<Arc<RootCertStore>> {
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from(pem_to_der(service_cert_pem)?))
        .context("service certificate")?;
    Ok(Arc::new(roots))
}

fn chain(node: &Identity, service_cert_pem: &str) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    Ok(vec![
        CertificateDer::from(pem_to_der(&node.cert_pem)?),
        CertificateDer::from(pem_to_der(service_cert_pem)?),
    ])
}

/// Accepts any client certificate that proves possession of its key; the
/// application decides what the certificate is worth.
#[derive(Debug)]
struct AnyClientCert {
    provider: Arc<CryptoProvider>,
}

impl ClientCertVerifier for AnyClientCert {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

pub fn client_api_server(node: &Identity, service_cert_pem: &str) -> anyhow::Result<ServerConfig> {
    let provider = provider();
    let mut config = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(Arc::new(AnyClientCert { provider }))
        .with_single_cert(chain(node, service_cert_pem)?, key_der(&node.key_pem)?)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

pub fn node_to_node_server(
    node: &Identity,
    service_cert_pem: &str,
) -> anyhow::Result<ServerConfig> {
    let provider = provider();
    let verifier =
        WebPkiClientVerifier::builder_with_provider(roots(service_cert_pem)?, provider.clone())
            .build()?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain(node, service_cert_pem)?, key_der(&node.key_pem)?)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// A client presenting the node's certificate, trusting the service's.
pub fn node_to_node_client(
    node: &Identity,
    service_cert_pem: &str,
) -> anyhow::Result<ClientConfig> {
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots(service_cert_pem)?)
        .with_client_auth_cert(chain(node, service_cert_pem)?, key_der(&node.key_pem)?)?;
    Ok(config)
}

/// A client trusting the service certificate, optionally presenting a
/// user's or member's identity.
pub fn service_client(
    service_cert_pem: &str,
    identity: Option<&Identity>,
) -> anyhow::Result<ClientConfig> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots(service_cert_pem)?);
    Ok(match identity {
        Some(id) => builder.with_client_auth_cert(
            vec![CertificateDer::from(pem_to_der(&id.cert_pem)?)],
            key_der(&id.key_pem)?,
        )?,
        None => builder.with_no_client_auth(),
    })
}

pub fn reqwest_client(
    config: ClientConfig,
    timeout: std::time::Duration,
) -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .use_preconfigured_tls(config)
        .timeout(timeout)
        .pool_max_idle_per_host(64)
        .build()?)
}
