//! TLS for the Redis stores (feature `redis-tls`): the CA that signs the servers'
//! certificates, and the store's own certificate for servers that ask for one.

use std::fmt;
use std::path::{Path, PathBuf};

use redis::{ClientTlsConfig, TlsCertificates};

use super::RedisStoreBuilder;
use crate::store::{StoreError, StoreErrorKind};

/// PEM data, or the file holding it (read when the store connects).
///
/// ```
/// use std::path::Path;
/// use tower_ratelimit::store::Pem;
///
/// let from_file = Pem::from(Path::new("/etc/redis/ca.crt"));
/// let inline = Pem::from(b"-----BEGIN CERTIFICATE-----\n...".to_vec());
/// ```
#[derive(Clone)]
#[cfg_attr(docsrs, doc(cfg(feature = "redis-tls")))]
pub enum Pem {
    /// A file of PEM blocks.
    File(PathBuf),
    /// PEM blocks.
    Bytes(Vec<u8>),
}

impl Pem {
    /// The PEM data; `what` names it in the error.
    fn read(&self, what: &str) -> Result<Vec<u8>, StoreError> {
        match self {
            Self::Bytes(bytes) => Ok(bytes.clone()),
            Self::File(path) => std::fs::read(path).map_err(|e| {
                let message = format!("cannot read the TLS {what} {}", path.display());
                StoreError::new(StoreErrorKind::Misconfigured, message).with_source(e)
            }),
        }
    }
}

impl From<&Path> for Pem {
    fn from(path: &Path) -> Self {
        Self::File(path.to_owned())
    }
}

impl From<PathBuf> for Pem {
    fn from(path: PathBuf) -> Self {
        Self::File(path)
    }
}

impl From<Vec<u8>> for Pem {
    fn from(bytes: Vec<u8>) -> Self {
        Self::Bytes(bytes)
    }
}

impl From<&[u8]> for Pem {
    fn from(bytes: &[u8]) -> Self {
        Self::Bytes(bytes.to_vec())
    }
}

/// Never prints the bytes: they may be a private key.
impl fmt::Debug for Pem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::File(path) => f.debug_tuple("File").field(path).finish(),
            Self::Bytes(bytes) => write!(f, "Bytes({} bytes)", bytes.len()),
        }
    }
}

/// The certificates a store's TLS connections use.
#[derive(Clone, Debug, Default)]
pub(super) struct Tls {
    ca: Option<Pem>,
    client: Option<(Pem, Pem)>,
}

impl Tls {
    /// The certificates, read; `None` when none was set (the system's roots then).
    pub(super) fn certificates(&self) -> Result<Option<TlsCertificates>, StoreError> {
        if self.ca.is_none() && self.client.is_none() {
            return Ok(None);
        }
        let root_cert = self.ca.as_ref().map(|ca| ca.read("CA")).transpose()?;
        let client_tls = match &self.client {
            Some((cert, key)) => Some(ClientTlsConfig {
                client_cert: cert.read("client certificate")?,
                client_key: key.read("client key")?,
            }),
            None => None,
        };
        Ok(Some(TlsCertificates {
            client_tls,
            root_cert,
        }))
    }
}

#[cfg_attr(docsrs, doc(cfg(feature = "redis-tls")))]
impl RedisStoreBuilder {
    /// Trusts the servers' certificates signed by this CA (PEM), instead of the system's
    /// roots, on `rediss://` URLs.
    ///
    /// ```no_run
    /// use std::path::Path;
    /// use tower_ratelimit::store::RedisStore;
    ///
    /// # async fn run() -> Result<(), tower_ratelimit::store::StoreError> {
    /// let store = RedisStore::builder("rediss://app:secret@redis.internal:6380")
    ///     .tls_ca(Path::new("/etc/redis/ca.crt"))
    ///     .tls_client_cert(Path::new("/etc/redis/app.crt"), Path::new("/etc/redis/app.key"))
    ///     .connect()
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn tls_ca(mut self, ca: impl Into<Pem>) -> Self {
        self.tls.ca = Some(ca.into());
        self
    }

    /// Presents this certificate (PEM, with its chain) and private key (PEM) to servers
    /// that ask for one (mutual TLS, `tls-auth-clients yes`).
    pub fn tls_client_cert(mut self, cert: impl Into<Pem>, key: impl Into<Pem>) -> Self {
        self.tls.client = Some((cert.into(), key.into()));
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_prints_the_bytes() {
        let key = Pem::from(b"-----BEGIN PRIVATE KEY-----\nsecret".as_slice());
        assert_eq!(format!("{key:?}"), "Bytes(34 bytes)");
    }

    #[test]
    fn a_file_that_cannot_be_read_is_misconfigured() {
        let error = Pem::from(Path::new("/nonexistent/ca.crt")).read("CA");
        let error = error.unwrap_err();
        assert_eq!(error.kind(), StoreErrorKind::Misconfigured);
        assert!(
            error.to_string().contains("TLS CA /nonexistent/ca.crt"),
            "{error}"
        );
    }
}
