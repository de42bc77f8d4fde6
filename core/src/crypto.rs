//! Encryption of health data at rest: AES-256-GCM (through `ring`) under a 32-byte key that
//! the host app supplies (on phones it lives in the platform keystore, never in the database).
//!
//! Each sealed blob is `nonce (12 random bytes) || ciphertext || tag (16 bytes)`. The associated
//! data binds a blob to where it belongs (workout, channel, sequence), so a chunk copied into
//! another slot fails to open instead of showing the wrong data. A wrong key fails
//! authentication: it gives an error, never garbage.

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    #[error("the storage key must be 32 bytes, got {0}")]
    KeyLength(usize),
    #[error("health data cannot be decrypted: wrong storage key, or the data was altered")]
    Authentication,
    #[error("sealed data too short")]
    Truncated,
    #[error("no secure random source available")]
    Random,
}

/// The 32-byte storage key.
pub struct StorageKey {
    key: LessSafeKey,
    rng: SystemRandom,
}

impl std::fmt::Debug for StorageKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        f.write_str("StorageKey(..)")
    }
}

impl StorageKey {
    pub fn new(bytes: &[u8]) -> Result<Self, CryptoError> {
        if bytes.len() != 32 {
            return Err(CryptoError::KeyLength(bytes.len()));
        }
        let unbound = UnboundKey::new(&AES_256_GCM, bytes)
            .map_err(|_| CryptoError::KeyLength(bytes.len()))?;
        Ok(Self {
            key: LessSafeKey::new(unbound),
            rng: SystemRandom::new(),
        })
    }

    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let mut nonce = [0u8; NONCE_LEN];
        self.rng.fill(&mut nonce).map_err(|_| CryptoError::Random)?;
        let mut buf = Vec::with_capacity(NONCE_LEN + plaintext.len() + 16);
        buf.extend_from_slice(&nonce);
        buf.extend_from_slice(plaintext);
        let (head, body) = buf.split_at_mut(NONCE_LEN);
        let tag = self
            .key
            .seal_in_place_separate_tag(Nonce::assume_unique_for_key(nonce), Aad::from(aad), body)
            .map_err(|_| CryptoError::Authentication)?;
        let _ = head;
        buf.extend_from_slice(tag.as_ref());
        Ok(buf)
    }

    pub fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, CryptoError> {
        if sealed.len() < NONCE_LEN + 16 {
            return Err(CryptoError::Truncated);
        }
        let (nonce, body) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| CryptoError::Truncated)?;
        let mut body = body.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(aad), &mut body)
            .map_err(|_| CryptoError::Authentication)?;
        Ok(plain.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_and_refusals() {
        let k = StorageKey::new(&[7u8; 32]).unwrap();
        let sealed = k.seal(b"w1/hr/0", b"120,121,122").unwrap();
        assert_eq!(k.open(b"w1/hr/0", &sealed).unwrap(), b"120,121,122");
        // Another slot, another key, a flipped bit, a short blob: all refused.
        assert_eq!(
            k.open(b"w1/hr/1", &sealed),
            Err(CryptoError::Authentication)
        );
        let other = StorageKey::new(&[8u8; 32]).unwrap();
        assert_eq!(
            other.open(b"w1/hr/0", &sealed),
            Err(CryptoError::Authentication)
        );
        let mut bad = sealed.clone();
        bad[15] ^= 1;
        assert_eq!(k.open(b"w1/hr/0", &bad), Err(CryptoError::Authentication));
        assert_eq!(k.open(b"", &sealed[..20]), Err(CryptoError::Truncated));
        // Two seals of the same data differ (fresh nonce).
        assert_ne!(k.seal(b"a", b"x").unwrap(), k.seal(b"a", b"x").unwrap());
    }

    #[test]
    fn key_must_be_32_bytes() {
        assert_eq!(
            StorageKey::new(&[0u8; 31]).unwrap_err(),
            CryptoError::KeyLength(31)
        );
        assert_eq!(
            StorageKey::new(&[0u8; 33]).unwrap_err(),
            CryptoError::KeyLength(33)
        );
        assert!(format!("{:?}", StorageKey::new(&[1u8; 32]).unwrap()).contains(".."));
    }
}
