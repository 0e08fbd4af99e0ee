//! Sealing stored answers: idempotent responses can carry secrets (a signup's tokens),
//! so they are kept encrypted (XChaCha20-Poly1305 under a key kept in the database's
//! settings), bound to their caller and key so that one row cannot stand in for another.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};

const NONCE_LEN: usize = 24;

pub struct Sealer {
    cipher: XChaCha20Poly1305,
}

impl Sealer {
    pub fn new(key: [u8; 32]) -> Self {
        Self {
            cipher: XChaCha20Poly1305::new(&key.into()),
        }
    }

    /// `nonce ‖ ciphertext`, authenticated together with `context`.
    pub fn seal(&self, plaintext: &[u8], context: &[u8]) -> Result<Vec<u8>, String> {
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).map_err(|e| format!("random source failed: {e}"))?;
        let sealed = self
            .cipher
            .encrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: plaintext,
                    aad: context,
                },
            )
            .map_err(|_| "sealing failed".to_owned())?;
        let mut out = Vec::with_capacity(NONCE_LEN + sealed.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    pub fn open(&self, sealed: &[u8], context: &[u8]) -> Result<Vec<u8>, String> {
        if sealed.len() < NONCE_LEN {
            return Err("sealed value too short".into());
        }
        let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| "bad nonce".to_owned())?;
        self.cipher
            .decrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: ciphertext,
                    aad: context,
                },
            )
            .map_err(|_| "sealed value does not open under this key and context".to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_only_with_their_key_and_context() {
        let sealer = Sealer::new([7; 32]);
        let sealed = sealer.seal(b"refresh_token=abc", b"user-1\0key-1").unwrap();
        assert!(!sealed.windows(3).any(|w| w == b"abc"));
        assert_eq!(
            sealer.open(&sealed, b"user-1\0key-1").unwrap(),
            b"refresh_token=abc"
        );
        assert!(sealer.open(&sealed, b"user-2\0key-1").is_err());
        assert!(
            Sealer::new([8; 32])
                .open(&sealed, b"user-1\0key-1")
                .is_err()
        );
        assert!(sealer.open(&sealed[..10], b"user-1\0key-1").is_err());
        assert_ne!(
            sealer.seal(b"x", b"c").unwrap(),
            sealer.seal(b"x", b"c").unwrap()
        );
    }
}
