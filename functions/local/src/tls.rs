//! The HTTPS listener's server certificate: the one given, or a self-signed one for
//! `localhost` and loopback, made at first start and kept in `<data-dir>/tls/`.

use crate::Config;
use anyhow::Context;
use std::sync::Arc;

pub fn server_config(config: &Config) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let (cert, key) = certificate_pem(config)?;
    drogue_shared::runtime::tls::server_config(&cert, &key)
}

/// The server certificate chain and key (PEM): the given ones, or the self-signed ones;
/// the CoAP over DTLS listener uses them too.
pub fn certificate_pem(config: &Config) -> anyhow::Result<(Vec<u8>, Vec<u8>)> {
    Ok(match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) => (
            std::fs::read(cert).with_context(|| format!("cannot read {}", cert.display()))?,
            std::fs::read(key).with_context(|| format!("cannot read {}", key.display()))?,
        ),
        _ => generated(&config.data_dir)?,
    })
}

fn generated(data_dir: &std::path::Path) -> anyhow::Result<(Vec<u8>, Vec<u8>)> {
    let dir = data_dir.join("tls");
    let (cert_path, key_path) = (dir.join("server.pem"), dir.join("server-key.pem"));
    if let (Ok(cert), Ok(key)) = (std::fs::read(&cert_path), std::fs::read(&key_path)) {
        return Ok((cert, key));
    }
    std::fs::create_dir_all(&dir)?;
    let names = ["localhost", "127.0.0.1", "::1"].map(String::from);
    let (cert, key) = drogue_shared::runtime::tls::self_signed(&names)?;
    std::fs::write(&cert_path, &cert)?;
    crate::bootstrap::write_private(&key_path, &key)?;
    tracing::info!(certificate = %cert_path.display(), "made a self-signed HTTPS certificate");
    Ok((cert.into_bytes(), key.into_bytes()))
}
