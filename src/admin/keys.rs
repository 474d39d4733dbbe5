//! [`AdminKey`]: keys as operators type and read them, and their hashes.

use std::fmt::{self, Write as _};
use std::net::IpAddr;

use http::HeaderValue;
use sha2::{Digest, Sha256};

/// The longest key the admin API accepts, in bytes (as the header keys).
pub const MAX_KEY_LEN: usize = 256;

/// A rate-limit key as the admin API reads and shows it: parsed from what an operator
/// types, written back as text.
///
/// ```
/// use std::net::IpAddr;
/// use tower_ratelimit::admin::AdminKey;
///
/// let ip = IpAddr::parse_key("::ffff:192.0.2.1").unwrap();
/// assert_eq!(ip.to_key_text(), "192.0.2.1");
/// assert!(IpAddr::parse_key("not an address").is_err());
/// ```
pub trait AdminKey: Sized {
    /// The key an operator typed, or why it is none.
    fn parse_key(text: &str) -> Result<Self, KeyParseError>;

    /// Appends the key as an operator would type it (bytes that are not printable text as
    /// `\xNN`).
    fn write_key_text(&self, out: &mut String);

    /// The key as text.
    fn to_key_text(&self) -> String {
        let mut out = String::new();
        self.write_key_text(&mut out);
        out
    }
}

/// Why a key typed into the admin API is none.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyParseError(String);

impl KeyParseError {
    /// A malformed key, and why.
    pub fn new(reason: impl Into<String>) -> Self {
        Self(reason.into())
    }
}

impl fmt::Display for KeyParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "malformed key: {}", self.0)
    }
}

impl std::error::Error for KeyParseError {}

/// `\xNN` for bytes that are not printable ASCII.
fn write_escaped(bytes: &[u8], out: &mut String) {
    match std::str::from_utf8(bytes) {
        Ok(text) if !text.chars().any(char::is_control) => out.push_str(text),
        _ => bytes.iter().for_each(|&byte| match byte {
            b' '..=b'~' if byte != b'\\' => out.push(byte as char),
            _ => {
                let _ = write!(out, "\\x{byte:02x}");
            }
        }),
    }
}

/// The text's bytes, within [`MAX_KEY_LEN`].
fn bounded(text: &str) -> Result<&str, KeyParseError> {
    match text.len() {
        0 => Err(KeyParseError::new("empty")),
        len if len > MAX_KEY_LEN => Err(KeyParseError::new(format!(
            "{len} bytes, more than {MAX_KEY_LEN}"
        ))),
        _ => Ok(text),
    }
}

/// An address; IPv4-mapped IPv6 addresses are read as IPv4, as the key extractors key them.
impl AdminKey for IpAddr {
    fn parse_key(text: &str) -> Result<Self, KeyParseError> {
        let ip: IpAddr = text
            .parse()
            .map_err(|_| KeyParseError::new(format!("{text:?} is not an IP address")))?;
        Ok(ip.to_canonical())
    }

    fn write_key_text(&self, out: &mut String) {
        let _ = write!(out, "{self}");
    }
}

/// A header value, such as an API key.
impl AdminKey for HeaderValue {
    fn parse_key(text: &str) -> Result<Self, KeyParseError> {
        HeaderValue::from_str(bounded(text)?).map_err(|_| KeyParseError::new("not a header value"))
    }

    fn write_key_text(&self, out: &mut String) {
        write_escaped(self.as_bytes(), out);
    }
}

/// The global key, written as an empty string.
impl AdminKey for () {
    fn parse_key(text: &str) -> Result<Self, KeyParseError> {
        match text {
            "" => Ok(()),
            _ => Err(KeyParseError::new("the global key is the empty string")),
        }
    }

    fn write_key_text(&self, _: &mut String) {}
}

impl AdminKey for String {
    fn parse_key(text: &str) -> Result<Self, KeyParseError> {
        bounded(text).map(str::to_owned)
    }

    fn write_key_text(&self, out: &mut String) {
        write_escaped(self.as_bytes(), out);
    }
}

/// The bytes of the text typed.
impl AdminKey for Vec<u8> {
    fn parse_key(text: &str) -> Result<Self, KeyParseError> {
        bounded(text).map(|text| text.as_bytes().to_vec())
    }

    fn write_key_text(&self, out: &mut String) {
        write_escaped(self, out);
    }
}

impl AdminKey for u64 {
    fn parse_key(text: &str) -> Result<Self, KeyParseError> {
        text.parse()
            .map_err(|_| KeyParseError::new(format!("{text:?} is not a number")))
    }

    fn write_key_text(&self, out: &mut String) {
        let _ = write!(out, "{self}");
    }
}

/// Hashes keys for answers and logs: the first 64 bits of SHA-256 over a secret derived
/// from the admin tokens, the namespace and the key's text. Stable across app servers with
/// the same tokens, and not to be inverted by someone who reads logs without a token, even
/// for keys as guessable as an IP address.
#[derive(Clone)]
pub(crate) struct KeyHasher {
    secret: [u8; 32],
    namespace: String,
}

impl KeyHasher {
    pub(crate) fn new<'a>(tokens: impl IntoIterator<Item = &'a [u8; 32]>, namespace: &str) -> Self {
        let mut tokens: Vec<&[u8; 32]> = tokens.into_iter().collect();
        tokens.sort();
        let mut secret = Sha256::new_with_prefix(b"tower-ratelimit admin key hash\0");
        tokens.into_iter().for_each(|token| secret.update(token));
        Self {
            secret: secret.finalize().into(),
            namespace: namespace.to_owned(),
        }
    }

    /// The hash of `key`, 16 hex digits.
    pub(crate) fn hash<K: AdminKey>(&self, key: &K) -> String {
        let digest = Sha256::new_with_prefix(self.secret)
            .chain_update(self.namespace.as_bytes())
            .chain_update([0])
            .chain_update(key.to_key_text().as_bytes())
            .finalize();
        digest[..8]
            .iter()
            .fold(String::with_capacity(16), |mut out, byte| {
                let _ = write!(out, "{byte:02x}");
                out
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_read_as_typed_and_shown_as_text() {
        assert_eq!(u64::parse_key("42"), Ok(42));
        assert!(u64::parse_key("-1").is_err());
        assert_eq!(<()>::parse_key(""), Ok(()));
        assert!(<()>::parse_key("x").is_err());
        assert!(String::parse_key(&"a".repeat(MAX_KEY_LEN + 1)).is_err());
        assert!(String::parse_key("").is_err());
        assert!(HeaderValue::parse_key("line\nbreak").is_err());
        assert_eq!(b"a\xff\\".to_vec().to_key_text(), r"a\xff\x5c");
        assert_eq!("caf\u{e9}".to_owned().to_key_text(), "caf\u{e9}");
    }

    #[test]
    fn hashes_depend_on_the_tokens_and_the_namespace() {
        let (one, two) = ([1; 32], [2; 32]);
        let hasher = KeyHasher::new([&one, &two], "ip");
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let hash = hasher.hash(&ip);
        assert_eq!(hash.len(), 16);
        assert_eq!(
            hash,
            KeyHasher::new([&two, &one], "ip").hash(&ip),
            "order of tokens"
        );
        assert_ne!(hash, KeyHasher::new([&one], "ip").hash(&ip));
        assert_ne!(hash, KeyHasher::new([&one, &two], "header:x").hash(&ip));
        assert_ne!(hash, hasher.hash(&"192.0.2.2".parse::<IpAddr>().unwrap()));
    }
}
