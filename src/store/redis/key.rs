//! [`RedisKey`]: how a rate-limit key becomes part of a Redis key name.

use std::fmt::Write as _;
use std::net::IpAddr;

use bytes::Bytes;
use http::HeaderValue;
use sha2::{Digest, Sha256};

/// A rate-limit key that can name state in Redis.
///
/// [`write_key`](RedisKey::write_key) appends the key's bytes. They need not be safe: the
/// store writes them into the Redis key as they are only when they are short printable
/// ASCII without `{`, `}` or a leading `#` (and not empty outside a namespace, which would
/// leave the hash tag empty), and otherwise (and always for a
/// [secret](RedisKey::is_secret)) writes `#` and their SHA-256 in hex instead. So no key can
/// move its state to another Cluster slot, collide with another key or grow Redis's memory
/// by its length.
///
/// ```
/// use tower_ratelimit::store::RedisKey;
///
/// /// A tenant and a user, keyed together.
/// #[derive(Clone, PartialEq, Eq, Hash)]
/// struct Account { tenant: u32, user: u64 }
///
/// impl RedisKey for Account {
///     fn write_key(&self, out: &mut Vec<u8>) {
///         out.extend_from_slice(format!("{}/{}", self.tenant, self.user).as_bytes());
///     }
/// }
/// ```
pub trait RedisKey {
    /// Appends the key's bytes to `out`.
    fn write_key(&self, out: &mut Vec<u8>);

    /// Whether the key may be a secret (an API key, a token, an e-mail) that must not
    /// appear in Redis as it is: then it is hashed. Defaults to `true`, so a value that
    /// came from a header is hashed whatever type carries it; keys that are no secret (IP
    /// addresses, numbers, the global key) say `false` and are written plainly.
    fn is_secret(&self) -> bool {
        true
    }
}

/// The text form, written plainly; IPv4-mapped IPv6 addresses are written as the IPv4
/// address.
impl RedisKey for IpAddr {
    fn write_key(&self, out: &mut Vec<u8>) {
        // Writing to a `Vec` cannot fail.
        let _ = write!(VecWriter(out), "{}", self.to_canonical());
    }

    fn is_secret(&self) -> bool {
        false
    }
}

/// A header value, such as an API key: hashed.
impl RedisKey for HeaderValue {
    fn write_key(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.as_bytes());
    }
}

/// The single key of a global limit: empty.
impl RedisKey for () {
    fn write_key(&self, _out: &mut Vec<u8>) {}

    fn is_secret(&self) -> bool {
        false
    }
}

impl RedisKey for String {
    fn write_key(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.as_bytes());
    }
}

impl RedisKey for &'static str {
    fn write_key(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.as_bytes());
    }
}

impl RedisKey for Vec<u8> {
    fn write_key(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self);
    }
}

impl RedisKey for Bytes {
    fn write_key(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self);
    }
}

/// The decimal form, written plainly.
impl RedisKey for u64 {
    fn write_key(&self, out: &mut Vec<u8>) {
        let _ = write!(VecWriter(out), "{self}");
    }

    fn is_secret(&self) -> bool {
        false
    }
}

/// Keys longer than this are hashed.
const MAX_RAW_LEN: usize = 128;

/// `<prefix>:{<namespace>:<key>}:<policy fingerprint in hex>` (without a namespace,
/// `<prefix>:{<key>}:...`): the braces make the key the hash tag, so every quota of one
/// key lands in one Cluster slot and keys spread over the slots. A secret, long or unsafe
/// key is written `#` and the SHA-256 of the namespace and key.
/// The part of a Redis key that picks its Cluster slot: what lies between its first `{`
/// and the first `}` after it, if that is not empty, else the whole key.
pub(super) fn hash_tag(key: &[u8]) -> &[u8] {
    let Some(open) = key.iter().position(|&b| b == b'{') else {
        return key;
    };
    match key[open + 1..].iter().position(|&b| b == b'}') {
        Some(0) | None => key,
        Some(len) => &key[open + 1..open + 1 + len],
    }
}

pub(super) fn storage_key<K: RedisKey + ?Sized>(
    prefix: &str,
    namespace: &str,
    key: &K,
    fingerprint: u64,
) -> Vec<u8> {
    let mut raw = Vec::new();
    key.write_key(&mut raw);
    let mut out = Vec::with_capacity(prefix.len() + raw.len().min(MAX_RAW_LEN) + 96);
    out.extend_from_slice(prefix.as_bytes());
    out.extend_from_slice(b":{");
    let safe = |b: &u8| (b'!'..=b'~').contains(b) && *b != b'{' && *b != b'}';
    if key.is_secret()
        || raw.len() > MAX_RAW_LEN
        || raw.first() == Some(&b'#')
        // An empty hash tag would not pick the slot: Redis would hash the whole key, and
        // a key's policies would land in different slots.
        || (raw.is_empty() && namespace.is_empty())
        || !raw.iter().all(safe)
        || !namespace.as_bytes().iter().all(safe)
    {
        let mut digest = Sha256::new();
        if !namespace.is_empty() {
            digest.update(namespace.as_bytes());
            digest.update([0]);
        }
        digest.update(&raw);
        out.push(b'#');
        push_hex(&mut out, &digest.finalize());
    } else {
        if !namespace.is_empty() {
            out.extend_from_slice(namespace.as_bytes());
            out.push(b':');
        }
        out.extend_from_slice(&raw);
    }
    out.extend_from_slice(b"}:");
    push_hex(&mut out, &fingerprint.to_be_bytes());
    out
}

/// Appends `bytes` as lowercase hex digits (without `fmt`: every decision writes its keys).
fn push_hex(out: &mut Vec<u8>, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for &byte in bytes {
        out.extend_from_slice(&[
            DIGITS[usize::from(byte >> 4)],
            DIGITS[usize::from(byte & 15)],
        ]);
    }
}

/// `fmt::Write` into a byte vector.
struct VecWriter<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for VecWriter<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name<K: RedisKey>(key: K) -> String {
        String::from_utf8(storage_key("rl", "", &key, 0xab)).unwrap()
    }

    #[test]
    fn hash_tags_follow_the_cluster_rule() {
        assert_eq!(hash_tag(b"rl:{42}:ab"), b"42");
        assert_eq!(hash_tag(b"rl:{a}{b}"), b"a");
        assert_eq!(hash_tag(b"rl:{}:ab"), b"rl:{}:ab");
        assert_eq!(hash_tag(b"rl:{42:ab"), b"rl:{42:ab");
        assert_eq!(hash_tag(b"plain"), b"plain");
    }

    #[test]
    fn plain_keys_are_kept_and_tagged() {
        assert_eq!(name(42u64), "rl:{42}:00000000000000ab");
        // The global key with no namespace is hashed, so that its hash tag is not empty.
        let global = storage_key("rl", "", &(), 0xab);
        assert!(name(()).starts_with("rl:{#"), "{}", name(()));
        assert_eq!(hash_tag(&global).len(), 1 + 64);
        let in_namespace = storage_key("rl", "global", &(), 0xab);
        assert_eq!(in_namespace, b"rl:{global:}:00000000000000ab");
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        assert_eq!(name(mapped), "rl:{192.0.2.1}:00000000000000ab");
    }

    #[test]
    fn unsafe_and_secret_keys_are_hashed() {
        let hashed = |key: &str| key.starts_with("rl:{#") && key.len() == "rl:{#}:".len() + 64 + 16;
        assert!(hashed(&name("a}b{c")));
        assert!(hashed(&name("with space")));
        assert!(hashed(&name(vec![0u8, 255, b'\n'])));
        assert!(!hashed(&name(u64::MAX)));
        assert!(hashed(&name(HeaderValue::from_static("secret-token"))));
        // Strings and bytes may carry secrets (a header copied into a `Vec`): hashed.
        assert!(hashed(&name("alice")));
        assert!(hashed(&name(b"sk_live_secret".to_vec())));
        // A raw key can never look like a hashed one.
        let lookalike = format!("#{}", "0".repeat(64));
        assert!(hashed(&name(lookalike.clone())));
        assert_ne!(
            name(lookalike.clone()),
            format!("rl:{{{lookalike}}}:00000000000000ab")
        );
    }

    #[test]
    fn namespaces_keep_key_kinds_apart() {
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let plain = |namespace| String::from_utf8(storage_key("rl", namespace, &ip, 1)).unwrap();
        assert_eq!(plain("ip"), "rl:{ip:127.0.0.1}:0000000000000001");
        let header = HeaderValue::from_static("127.0.0.1");
        let secret = |namespace| storage_key("rl", namespace, &header, 1);
        assert_ne!(secret("header:x-user-id"), secret("header:x-tenant"));
        assert_ne!(secret("header:x-user-id"), plain("ip").into_bytes());
    }
}
