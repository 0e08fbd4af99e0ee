//! `Stripe-Signature` verification: `t=<unix time>,v1=<hex HMAC-SHA256>[,v1=…]` over
//! `"<t>.<raw body>"` with the endpoint's signing secret. Several `v1` signatures are
//! accepted (Stripe sends one per active secret while a secret is being rolled); the
//! comparison is constant-time, and a timestamp outside the tolerance is refused so a
//! captured delivery cannot be replayed later.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Stripe's default: five minutes either way.
pub const TOLERANCE_SECONDS: i64 = 300;
/// Longer headers are refused unread: Stripe sends one `v1` per active secret (two
/// while a secret is being rolled), nowhere near this.
pub const MAX_HEADER_BYTES: usize = 1024;
/// At most this many `v1` signatures are compared.
pub const MAX_SIGNATURES: usize = 8;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the Stripe-Signature header is missing or malformed")]
    Malformed,
    #[error("the signature's timestamp is outside the tolerance")]
    Stale,
    #[error("no signature matches")]
    Mismatch,
}

/// Checks `header` against `payload` at `now` (unix seconds). The MAC of the payload is
/// computed once, whatever the header holds, and the header's size is capped: a forged
/// header of thousands of entries costs no more than a real one.
pub fn verify(payload: &[u8], header: &str, secret: &str, now: i64) -> Result<(), SignatureError> {
    if header.len() > MAX_HEADER_BYTES {
        return Err(SignatureError::Malformed);
    }
    let mut timestamp: Option<i64> = None;
    let mut signatures: Vec<Vec<u8>> = Vec::new();
    for part in header.split(',') {
        let Some((key, value)) = part.trim().split_once('=') else {
            continue;
        };
        match key {
            "t" => timestamp = value.parse().ok(),
            "v1" if signatures.len() < MAX_SIGNATURES => {
                // A SHA-256 MAC is 32 bytes; anything else cannot match.
                if let Ok(bytes) = hex::decode(value)
                    && bytes.len() == 32
                {
                    signatures.push(bytes);
                }
            }
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or(SignatureError::Malformed)?;
    if signatures.is_empty() {
        return Err(SignatureError::Malformed);
    }
    if (now - timestamp).abs() > TOLERANCE_SECONDS {
        return Err(SignatureError::Stale);
    }
    // The payload is hashed once; each candidate costs only the MAC's finalisation on a
    // copy of that state. `verify_slice` compares in constant time.
    let state = mac(secret, timestamp, payload);
    if signatures
        .iter()
        .any(|signature| state.clone().verify_slice(signature).is_ok())
    {
        return Ok(());
    }
    Err(SignatureError::Mismatch)
}

/// The header Stripe would send for `payload` at `timestamp` (for tests and tools).
pub fn sign(payload: &[u8], secret: &str, timestamp: i64) -> String {
    let signature = mac(secret, timestamp, payload).finalize().into_bytes();
    format!("t={timestamp},v1={}", hex::encode(signature))
}

fn mac(secret: &str, timestamp: i64, payload: &[u8]) -> Hmac<Sha256> {
    // HMAC takes keys of any length; this cannot fail.
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(payload);
    mac
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_test_secret";

    #[test]
    fn a_fresh_correct_signature_verifies() {
        let header = sign(b"{\"id\":\"evt_1\"}", SECRET, 1_000_000);
        assert_eq!(
            verify(b"{\"id\":\"evt_1\"}", &header, SECRET, 1_000_100),
            Ok(())
        );
    }

    #[test]
    fn any_of_several_v1_signatures_may_match() {
        let good = sign(b"body", SECRET, 1_000_000);
        let header = format!("t=1000000,v1={},{}", "ab".repeat(32), &good[10..]);
        assert_eq!(verify(b"body", &header, SECRET, 1_000_000), Ok(()));
    }

    #[test]
    fn oversized_headers_and_extra_signatures_are_refused_without_work() {
        let good = sign(b"body", SECRET, 1_000_000);
        // Thousands of empty entries: refused by size before any MAC is computed.
        let flood = format!("{good}{}", ",v1=".repeat(5_000));
        assert_eq!(
            verify(b"body", &flood, SECRET, 1_000_000),
            Err(SignatureError::Malformed)
        );
        // The real signature after the first eight candidates is not looked at.
        let wrong = format!(",v1={}", "ab".repeat(32));
        let crowded = format!("t=1000000{}{}", wrong.repeat(8), &good[9..]);
        assert!(crowded.len() <= MAX_HEADER_BYTES);
        assert_eq!(
            verify(b"body", &crowded, SECRET, 1_000_000),
            Err(SignatureError::Mismatch)
        );
        let short = format!("t=1000000,v1=abcd{}", &good[9..]);
        assert_eq!(verify(b"body", &short, SECRET, 1_000_000), Ok(()));
    }

    #[test]
    fn tampered_body_wrong_secret_stale_or_malformed_is_refused() {
        let header = sign(b"body", SECRET, 1_000_000);
        assert_eq!(
            verify(b"body!", &header, SECRET, 1_000_000),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(b"body", &header, "whsec_other", 1_000_000),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(b"body", &header, SECRET, 1_000_301),
            Err(SignatureError::Stale)
        );
        assert_eq!(
            verify(b"body", &header, SECRET, 999_699),
            Err(SignatureError::Stale)
        );
        assert_eq!(
            verify(b"body", "v1=abcd", SECRET, 1_000_000),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            verify(b"body", "t=1000000", SECRET, 1_000_000),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            verify(b"body", "", SECRET, 1_000_000),
            Err(SignatureError::Malformed)
        );
    }
}
