//! Server TLS from files: a certificate and key, and optionally a client CA
//! that client certificates must chain to (mutual TLS).

use std::path::PathBuf;

use tonic::transport::{Certificate, Identity, ServerTlsConfig};

#[derive(Debug, Clone, Default)]
pub struct TlsFiles {
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    /// Client certificates must be signed by this CA.
    pub client_ca_file: Option<PathBuf>,
    /// Under mutual TLS, accept connections that present no client
    /// certificate (a certificate that is presented must still verify).
    /// Health and reflection are then open to them, while the interceptor of
    /// our services asks for a certificate or a bearer token. When false,
    /// the handshake fails without a client certificate.
    pub client_certificate_optional: bool,
}

impl TlsFiles {
    /// The tonic TLS configuration, or None when TLS is off.
    pub fn server_config(&self) -> anyhow::Result<Option<ServerTlsConfig>> {
        let (cert, key) = match (&self.cert_file, &self.key_file) {
            (None, None) => {
                anyhow::ensure!(self.client_ca_file.is_none(), "a client CA needs --tls-cert-file and --tls-key-file");
                return Ok(None);
            }
            (Some(cert), Some(key)) => (read(cert)?, read(key)?),
            _ => anyhow::bail!("--tls-cert-file and --tls-key-file go together"),
        };
        let mut config = ServerTlsConfig::new().identity(Identity::from_pem(cert, key));
        if let Some(ca) = &self.client_ca_file {
            config = config
                .client_ca_root(Certificate::from_pem(read(ca)?))
                .client_auth_optional(self.client_certificate_optional);
        }
        Ok(Some(config))
    }
}

fn read(path: &PathBuf) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))
}
