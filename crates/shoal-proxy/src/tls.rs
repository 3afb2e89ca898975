//! TLS termination with rustls: load PEM certificate chains and keys, and
//! pick one per connection by SNI (a certificate with no `server_names` is the
//! default for unknown or missing names).

use std::collections::HashMap;
use std::fs::File;
use std::io::BufReader;
use std::sync::Arc;

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio_rustls::TlsAcceptor;

use crate::config::CertificateConfig;
use crate::error::{ProxyError, Result};

/// Chooses a certificate by SNI name.
#[derive(Debug)]
struct SniResolver {
    by_name: HashMap<String, Arc<CertifiedKey>>,
    default: Option<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        hello
            .server_name()
            .and_then(|n| self.by_name.get(&n.to_ascii_lowercase()))
            .or(self.default.as_ref())
            .cloned()
    }
}

fn load_one(c: &CertificateConfig) -> Result<Arc<CertifiedKey>> {
    let open = |p: &std::path::Path| {
        File::open(p)
            .map(BufReader::new)
            .map_err(|e| ProxyError::Tls(format!("{}: {e}", p.display())))
    };
    let certs: Vec<_> = rustls_pemfile::certs(&mut open(&c.cert)?)
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| ProxyError::Tls(format!("{}: {e}", c.cert.display())))?;
    if certs.is_empty() {
        return Err(ProxyError::Tls(format!(
            "{}: no certificate found",
            c.cert.display()
        )));
    }
    let key = rustls_pemfile::private_key(&mut open(&c.key)?)
        .map_err(|e| ProxyError::Tls(format!("{}: {e}", c.key.display())))?
        .ok_or_else(|| ProxyError::Tls(format!("{}: no private key found", c.key.display())))?;
    let signer = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|e| ProxyError::Tls(format!("{}: {e}", c.key.display())))?;
    Ok(Arc::new(CertifiedKey::new(certs, signer)))
}

/// Build an acceptor for a listener's certificates, advertising `alpn`.
pub fn acceptor(certs: &[CertificateConfig], alpn: &[&[u8]]) -> Result<TlsAcceptor> {
    let mut resolver = SniResolver {
        by_name: HashMap::new(),
        default: None,
    };
    for c in certs {
        let key = load_one(c)?;
        if c.server_names.is_empty() || resolver.default.is_none() {
            resolver.default = Some(key.clone());
        }
        for n in &c.server_names {
            resolver.by_name.insert(n.clone(), key.clone());
        }
    }
    let mut cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| ProxyError::Tls(e.to_string()))?
    .with_no_client_auth()
    .with_cert_resolver(Arc::new(resolver));
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(TlsAcceptor::from(Arc::new(cfg)))
}
