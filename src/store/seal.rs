//! Sealing secrets at rest with XChaCha20-Poly1305.
//!
//! Sealed format, version 1: `0x01 | key id (8 bytes) | nonce (24 bytes) | ciphertext + tag`.
//! The key id lets a store hold values sealed under two keys while a rotation is finishing, and
//! the version byte lets the algorithm change later. The associated data binds a value to the row
//! and column it was written for, so a sealed value copied to another row does not open.

use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

const VERSION: u8 = 1;
const KEY_ID_LEN: usize = 8;
const NONCE_LEN: usize = 24;
const HEADER_LEN: usize = 1 + KEY_ID_LEN + NONCE_LEN;

#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error(
        "the secret key must be 32 bytes encoded in base64 (generate one with `openssl rand -base64 32`)"
    )]
    BadKey,
    #[error("a sealed value is damaged or too short")]
    Malformed,
    #[error("a sealed value uses format version {0}, which this Postern does not know")]
    UnknownVersion(u8),
    #[error(
        "a sealed value was sealed with another key (id {0}): is POSTERN_SECRET_KEY or the key file the one this data directory was created with?"
    )]
    UnknownKey(String),
    #[error(
        "a sealed value failed authentication: it was altered, moved to another row, or the key is wrong"
    )]
    Tampered,
}

/// One data key. Its id is the first 8 bytes of SHA-256 of the key.
pub struct DataKey {
    id: [u8; KEY_ID_LEN],
    bytes: Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DataKey({})", self.id_hex())
    }
}

impl DataKey {
    pub fn generate() -> Self {
        let mut bytes = Zeroizing::new([0u8; 32]);
        rand::rngs::OsRng.fill_bytes(bytes.as_mut());
        Self::from_bytes(bytes)
    }

    fn from_bytes(bytes: Zeroizing<[u8; 32]>) -> Self {
        let digest = Sha256::digest(bytes.as_ref());
        let mut id = [0u8; KEY_ID_LEN];
        id.copy_from_slice(&digest[..KEY_ID_LEN]);
        Self { id, bytes }
    }

    pub fn from_base64(text: &str) -> Result<Self, SealError> {
        let decoded = Zeroizing::new(
            base64::engine::general_purpose::STANDARD
                .decode(text.trim())
                .map_err(|_| SealError::BadKey)?,
        );
        let arr: [u8; 32] = decoded
            .as_slice()
            .try_into()
            .map_err(|_| SealError::BadKey)?;
        Ok(Self::from_bytes(Zeroizing::new(arr)))
    }

    /// The key as base64, for writing the key file only.
    pub fn to_base64(&self) -> Zeroizing<String> {
        Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(self.bytes.as_ref()))
    }

    pub fn id_hex(&self) -> String {
        self.id.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// A subkey for another purpose (e.g. keyed password hashes), so one key never serves two algorithms.
    pub fn derive(&self, purpose: &str) -> Zeroizing<[u8; 32]> {
        use hmac::{Hmac, Mac};
        let mut mac =
            <Hmac<Sha256> as Mac>::new_from_slice(self.bytes.as_ref()).expect("any key length");
        mac.update(purpose.as_bytes());
        let mut out = Zeroizing::new([0u8; 32]);
        out.copy_from_slice(&mac.finalize().into_bytes());
        out
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new(self.bytes.as_ref().into())
    }
}

/// The keys a store can open values with; new values are sealed with the first.
#[derive(Debug)]
pub struct Sealer {
    current: DataKey,
    older: Vec<DataKey>,
}

impl Sealer {
    pub fn new(current: DataKey) -> Self {
        Self {
            current,
            older: Vec::new(),
        }
    }

    /// Also open values sealed under `key` (a rotation in progress).
    pub fn with_older(mut self, key: DataKey) -> Self {
        if key.id != self.current.id {
            self.older.push(key);
        }
        self
    }

    pub fn current_key(&self) -> &DataKey {
        &self.current
    }

    pub fn seal(&self, plaintext: &[u8], aad: &str) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let ciphertext = self
            .current
            .cipher()
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: aad.as_bytes(),
                },
            )
            .expect("XChaCha20-Poly1305 encryption does not fail for in-memory buffers");
        let mut out = Vec::with_capacity(HEADER_LEN + ciphertext.len());
        out.push(VERSION);
        out.extend_from_slice(&self.current.id);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ciphertext);
        out
    }

    pub fn seal_secret(&self, secret: &SecretString, aad: &str) -> Vec<u8> {
        self.seal(secret.expose_secret().as_bytes(), aad)
    }

    /// The id of the key that sealed `sealed`, if the header is readable.
    pub fn key_id_of(sealed: &[u8]) -> Option<String> {
        (sealed.len() > HEADER_LEN).then(|| {
            sealed[1..1 + KEY_ID_LEN]
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect()
        })
    }

    pub fn open(&self, sealed: &[u8], aad: &str) -> Result<Zeroizing<Vec<u8>>, SealError> {
        if sealed.len() < HEADER_LEN + 16 {
            return Err(SealError::Malformed);
        }
        if sealed[0] != VERSION {
            return Err(SealError::UnknownVersion(sealed[0]));
        }
        let id = &sealed[1..1 + KEY_ID_LEN];
        let key = std::iter::once(&self.current)
            .chain(&self.older)
            .find(|k| k.id == id)
            .ok_or_else(|| SealError::UnknownKey(Self::key_id_of(sealed).unwrap_or_default()))?;
        let nonce = XNonce::from_slice(&sealed[1 + KEY_ID_LEN..HEADER_LEN]);
        key.cipher()
            .decrypt(
                nonce,
                Payload {
                    msg: &sealed[HEADER_LEN..],
                    aad: aad.as_bytes(),
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| SealError::Tampered)
    }

    pub fn open_secret(&self, sealed: &[u8], aad: &str) -> Result<SecretString, SealError> {
        let bytes = self.open(sealed, aad)?;
        let text = String::from_utf8(bytes.to_vec()).map_err(|_| SealError::Malformed)?;
        Ok(SecretString::from(text))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let s = Sealer::new(DataKey::generate());
        let sealed = s.seal(b"client-secret-value", "connection:1:client_secret");
        assert!(
            !sealed.windows(6).any(|w| w == b"client"),
            "plaintext visible"
        );
        assert_eq!(
            &s.open(&sealed, "connection:1:client_secret").unwrap()[..],
            b"client-secret-value"
        );
        // Two seals of one value differ (random nonce).
        assert_ne!(
            sealed,
            s.seal(b"client-secret-value", "connection:1:client_secret")
        );
    }

    #[test]
    fn tampered_moved_or_wrong_key_is_rejected() {
        let s = Sealer::new(DataKey::generate());
        let mut sealed = s.seal(b"refresh-token", "connection:1:refresh_token");
        assert!(matches!(
            s.open(&sealed, "connection:2:refresh_token"),
            Err(SealError::Tampered)
        ));
        let last = sealed.len() - 1;
        sealed[last] ^= 1;
        assert!(matches!(
            s.open(&sealed, "connection:1:refresh_token"),
            Err(SealError::Tampered)
        ));
        let other = Sealer::new(DataKey::generate());
        let sealed = s.seal(b"x", "a");
        assert!(matches!(
            other.open(&sealed, "a"),
            Err(SealError::UnknownKey(_))
        ));
        assert!(matches!(
            s.open(&sealed[..10], "a"),
            Err(SealError::Malformed)
        ));
        let mut v2 = sealed.clone();
        v2[0] = 2;
        assert!(matches!(
            s.open(&v2, "a"),
            Err(SealError::UnknownVersion(2))
        ));
    }

    #[test]
    fn older_keys_still_open_during_rotation() {
        let old = DataKey::generate();
        let old_copy = DataKey::from_base64(&old.to_base64()).unwrap();
        let sealed = Sealer::new(old).seal(b"v", "a");
        let rotated = Sealer::new(DataKey::generate()).with_older(old_copy);
        assert_eq!(&rotated.open(&sealed, "a").unwrap()[..], b"v");
    }

    #[test]
    fn keys_parse_from_base64_only_at_32_bytes() {
        assert!(matches!(
            DataKey::from_base64("c2hvcnQ="),
            Err(SealError::BadKey)
        ));
        assert!(matches!(
            DataKey::from_base64("not base64!"),
            Err(SealError::BadKey)
        ));
        let k = DataKey::generate();
        assert_eq!(
            DataKey::from_base64(&k.to_base64()).unwrap().id_hex(),
            k.id_hex()
        );
        assert!(!format!("{k:?}").contains(&*k.to_base64()));
    }
}
