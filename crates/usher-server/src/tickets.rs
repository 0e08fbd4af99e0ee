//! Ticket codes: one per booked unit, shown on the confirmation email and the booking.
//! A code is derived (HMAC-SHA256 of booking and unit under a server secret kept in the
//! database), so it needs no storage, cannot be guessed, and the door can check it.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use uuid::Uuid;

/// `XXXX-XXXX-XXXX` from an unambiguous alphabet (no 0/O, 1/I).
pub fn code(secret: &[u8], booking_id: Uuid, unit_id: Uuid) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(booking_id.as_bytes());
    mac.update(unit_id.as_bytes());
    let digest = mac.finalize().into_bytes();
    let mut out = String::with_capacity(14);
    for (i, byte) in digest.iter().take(12).enumerate() {
        if i > 0 && i % 4 == 0 {
            out.push('-');
        }
        out.push(ALPHABET[(*byte % 32) as usize] as char);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_stable_distinct_and_keyed() {
        let (b, u1, u2) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        assert_eq!(code(b"k", b, u1), code(b"k", b, u1));
        assert_ne!(code(b"k", b, u1), code(b"k", b, u2));
        assert_ne!(code(b"k", b, u1), code(b"other", b, u1));
        assert_eq!(code(b"k", b, u1).len(), 14);
    }
}
