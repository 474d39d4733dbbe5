//! How a store makes its Redis clients: from a URL (or a node's address) and, with feature
//! `redis-tls`, the TLS certificates it was given.

use redis::{Client, IntoConnectionInfo, RedisResult};

/// Makes the clients of one store, all with the same TLS certificates.
#[derive(Clone, Default)]
pub(super) struct Clients {
    /// The CA and client certificate set on the builder; `None`: the system's roots.
    #[cfg(feature = "redis-tls")]
    pub(super) certificates: Option<redis::TlsCertificates>,
}

impl Clients {
    /// A client for `target` (`rediss://` for TLS).
    pub(super) fn open(&self, target: impl IntoConnectionInfo) -> RedisResult<Client> {
        #[cfg(feature = "redis-tls")]
        {
            install_crypto_provider();
            if let Some(certificates) = &self.certificates {
                return Client::build_with_tls(target, certificates.clone());
            }
        }
        Client::open(target)
    }

    /// `builder` with the certificates.
    #[cfg(feature = "redis-cluster")]
    pub(super) fn cluster(
        &self,
        builder: redis::cluster::ClusterClientBuilder,
    ) -> redis::cluster::ClusterClientBuilder {
        #[cfg(feature = "redis-tls")]
        {
            install_crypto_provider();
            if let Some(certificates) = &self.certificates {
                return builder.certs(certificates.clone());
            }
        }
        builder
    }
}

/// rustls needs a process-wide crypto provider: `ring`'s, unless the application
/// installed one already.
#[cfg(feature = "redis-tls")]
fn install_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Fails only if another thread installed one meanwhile: that one is used.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}
