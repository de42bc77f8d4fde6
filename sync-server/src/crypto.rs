//! Small cryptographic helpers over `ring`: opaque tokens, SHA-256, HMAC, AES-256-GCM.

use ring::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey};
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};

use crate::error::{Error, Result};

/// `n` random bytes from the operating system.
pub fn random_bytes(n: usize) -> Result<Vec<u8>> {
    let mut buf = vec![0u8; n];
    SystemRandom::new()
        .fill(&mut buf)
        .map_err(|_| Error::Crypto("system random source failed"))?;
    Ok(buf)
}

/// A new opaque bearer or email token: 32 random bytes, hex (64 characters).
pub fn new_token() -> Result<String> {
    Ok(hex::encode(random_bytes(32)?))
}

/// SHA-256, hex. Tokens are stored only as this.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, data).as_ref())
}

/// A keyed hash with domain separation; the parts are length-prefixed so they cannot be shifted.
pub fn hmac_parts(key: &[u8], domain: &str, parts: &[&[u8]]) -> [u8; 32] {
    let k = hmac::Key::new(hmac::HMAC_SHA256, key);
    let mut ctx = hmac::Context::with_key(&k);
    ctx.update(&(domain.len() as u64).to_be_bytes());
    ctx.update(domain.as_bytes());
    for p in parts {
        ctx.update(&(p.len() as u64).to_be_bytes());
        ctx.update(p);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.sign().as_ref());
    out
}

/// AES-256-GCM; the output is nonce || ciphertext || tag.
pub fn seal(key: &[u8; 32], plaintext: &[u8]) -> Result<Vec<u8>> {
    seal_with_aad(key, plaintext, &[])
}

/// Reverses [`seal`]; `None` when the key is wrong or the data was altered.
pub fn open(key: &[u8; 32], sealed: &[u8]) -> Option<Vec<u8>> {
    open_with_aad(key, sealed, &[])
}

/// [`seal`] bound to `aad`: the result opens only with the same associated data, so a sealed
/// value copied to another context (another account) is refused instead of accepted.
pub fn seal_with_aad(key: &[u8; 32], plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>> {
    let k = LessSafeKey::new(
        UnboundKey::new(&aead::AES_256_GCM, key).map_err(|_| Error::Crypto("bad AEAD key"))?,
    );
    let nonce_bytes = random_bytes(aead::NONCE_LEN)?;
    let mut nonce = [0u8; aead::NONCE_LEN];
    nonce.copy_from_slice(&nonce_bytes);
    let mut buf = plaintext.to_vec();
    k.seal_in_place_append_tag(
        Nonce::assume_unique_for_key(nonce),
        Aad::from(aad),
        &mut buf,
    )
    .map_err(|_| Error::Crypto("encryption failed"))?;
    let mut out = nonce.to_vec();
    out.extend_from_slice(&buf);
    Ok(out)
}

/// Reverses [`seal_with_aad`]; `None` when the key or `aad` is wrong or the data was altered.
pub fn open_with_aad(key: &[u8; 32], sealed: &[u8], aad: &[u8]) -> Option<Vec<u8>> {
    if sealed.len() < aead::NONCE_LEN + aead::AES_256_GCM.tag_len() {
        return None;
    }
    let k = LessSafeKey::new(UnboundKey::new(&aead::AES_256_GCM, key).ok()?);
    let (n, ct) = sealed.split_at(aead::NONCE_LEN);
    let nonce = Nonce::try_assume_unique_for_key(n).ok()?;
    let mut buf = ct.to_vec();
    let plain = k.open_in_place(nonce, Aad::from(aad), &mut buf).ok()?;
    Some(plain.to_vec())
}

/// Constant-time equality for secrets.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_round_trip_and_tamper() {
        let key = [7u8; 32];
        let s = seal(&key, b"hello").unwrap();
        assert_eq!(open(&key, &s).unwrap(), b"hello");
        let mut t = s.clone();
        let last = t.len() - 1;
        t[last] ^= 1;
        assert!(open(&key, &t).is_none());
        assert!(open(&[8u8; 32], &s).is_none());
        assert!(open(&key, &[1, 2, 3]).is_none());
    }

    #[test]
    fn associated_data_must_match() {
        let key = [7u8; 32];
        let s = seal_with_aad(&key, b"secret", b"user-a").unwrap();
        assert_eq!(open_with_aad(&key, &s, b"user-a").unwrap(), b"secret");
        assert!(open_with_aad(&key, &s, b"user-b").is_none());
        assert!(
            open(&key, &s).is_none(),
            "empty associated data is another context"
        );
    }

    #[test]
    fn hmac_parts_are_not_shiftable() {
        assert_ne!(
            hmac_parts(b"k", "d", &[b"ab", b"c"]),
            hmac_parts(b"k", "d", &[b"a", b"bc"])
        );
    }

    #[test]
    fn tokens_are_long_and_distinct() {
        let a = new_token().unwrap();
        assert_eq!(a.len(), 64);
        assert_ne!(a, new_token().unwrap());
    }
}
