//! Certificates the test makes (with the `openssl` command line) in a temporary directory,
//! and a `redis-server` of the test's own that speaks TLS with them.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::redis_server::{free_port, temp_dir, RedisServer};

/// In a temporary directory, removed on drop: `ca.crt`, which signed `server.crt` (for
/// 127.0.0.1 and localhost, server and client authentication) and `client.crt` (client
/// authentication), their `.key`s, and
/// `other-ca.crt`, a CA that signed nothing here.
pub struct Certificates {
    dir: PathBuf,
}

impl Certificates {
    pub fn generate() -> Self {
        let certificates = Self { dir: temp_dir() };
        let ca = ["-x509", "-addext", "basicConstraints=critical,CA:TRUE"];
        certificates.request("ca", "crt", &ca);
        certificates.request("other-ca", "crt", &ca);
        certificates.signed(
            "server",
            // Cluster nodes present it to each other as clients too.
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth",
        );
        certificates.signed("client", "extendedKeyUsage=clientAuth");
        certificates
    }

    /// A TLS server's settings with these certificates (all but its port).
    pub fn server_settings(&self, auth: ClientAuth) -> Vec<String> {
        let file = |name: &str| self.path(name).display().to_string();
        let auth = match auth {
            ClientAuth::No => "no",
            ClientAuth::Required => "yes",
        };
        [
            "--tls-cert-file",
            &file("server.crt"),
            "--tls-key-file",
            &file("server.key"),
            "--tls-ca-cert-file",
            &file("ca.crt"),
            "--tls-auth-clients",
            auth,
        ]
        .map(str::to_owned)
        .into()
    }

    /// The file `name` (`ca.crt`, `client.key`...).
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// `openssl req` for subject `name`: a new P-256 key in `name.key` and `name.<out>`.
    fn request(&self, name: &str, out: &str, extra: &[&str]) {
        let (subject, key, out) = (
            format!("/CN={name}"),
            format!("{name}.key"),
            format!("{name}.{out}"),
        );
        let mut args = vec!["req", "-days", "2", "-subj", &subject, "-nodes"];
        args.extend(["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"]);
        args.extend(["-keyout", &key, "-out", &out]);
        args.extend(extra);
        self.openssl(&args);
    }

    /// `name.crt`, signed by `ca.crt`, with these extensions.
    fn signed(&self, name: &str, extensions: &str) {
        let (ext, csr, crt) = (
            format!("{name}.ext"),
            format!("{name}.csr"),
            format!("{name}.crt"),
        );
        std::fs::write(self.path(&ext), extensions).expect("write extensions");
        self.request(name, "csr", &[]);
        self.openssl(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-set_serial",
            "2",
            "-days",
            "2",
            "-extfile",
            &ext,
            "-out",
            &crt,
        ]);
    }

    fn openssl(&self, args: &[&str]) {
        let status = Command::new("openssl")
            .args(args)
            .current_dir(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("openssl is installed (apt-get install openssl)");
        assert!(status.success(), "openssl {args:?} failed");
    }
}

impl Drop for Certificates {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Whether a TLS server asks its clients for a certificate.
#[derive(Clone, Copy)]
pub enum ClientAuth {
    No,
    Required,
}

/// A `redis-server` with TLS on one port (for the stores), plain TCP on another (for the
/// test's own setup), killed on drop.
pub struct TlsServer {
    server: RedisServer,
    tls_port: u16,
}

impl TlsServer {
    pub fn start(certificates: &Certificates, auth: ClientAuth) -> Self {
        let tls_port = free_port();
        let mut settings = vec!["--tls-port".to_owned(), tls_port.to_string()];
        settings.extend(certificates.server_settings(auth));
        Self {
            server: RedisServer::start_with(&settings),
            tls_port,
        }
    }

    /// `rediss://[user:password@]127.0.0.1:<TLS port>`.
    pub fn url(&self, user: Option<(&str, &str)>) -> String {
        let user = user.map_or(String::new(), |(name, password)| {
            format!("{name}:{password}@")
        });
        format!("rediss://{user}127.0.0.1:{}", self.tls_port)
    }

    /// The plain-TCP URL, for the test's own commands.
    pub fn plain_url(&self) -> &str {
        self.server.url()
    }
}

/// `path`'s contents.
pub fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).expect("read a certificate")
}

/// A cluster whose nodes speak TLS to clients and to each other (each also listens in
/// plain TCP, for the test's own setup), and the nodes' `rediss://` URLs.
#[cfg(feature = "redis-cluster")]
pub fn tls_cluster(
    certificates: &Certificates,
) -> (super::redis_cluster::RedisCluster, Vec<String>) {
    let settings = || {
        let mut settings = vec!["--tls-port".to_owned(), free_port().to_string()];
        settings.extend(["--tls-cluster", "yes", "--tls-replication", "yes"].map(str::to_owned));
        settings.extend(certificates.server_settings(ClientAuth::No));
        settings
    };
    let cluster = super::redis_cluster::RedisCluster::start_with(3, 0, &settings, None);
    let urls = cluster
        .urls()
        .iter()
        .map(|url| {
            let port: Vec<String> =
                super::redis_server::query(url, &[b"CONFIG", b"GET", b"tls-port"])
                    .expect("tls-port");
            format!("rediss://127.0.0.1:{}", port[1])
        })
        .collect();
    (cluster, urls)
}
