//! Ticket codes: one per booked unit, shown on the confirmation email, my bookings and
//! as a QR code, and checked at the door.
//!
//! A ticket is numbered (its `serial`) in the transaction that confirms its booking. The
//! code is the serial plus a MAC of (serial, booking, unit) under a server key kept in
//! the database: `SSSS-SSSS-MMMM-MMMM`, 16 characters from an alphabet without 0/O and
//! 1/I. The door looks the serial up and checks the MAC, so a code cannot be guessed
//! from another (40 bits of MAC per serial) and needs no list of codes to be stored.

use hmac::{Hmac, Mac};
use qrcode::QrCode;
use qrcode::render::svg;
use sha2::Sha256;
use uuid::Uuid;

const ALPHABET: &[u8; 32] = b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789";
/// Serials fit in 40 bits (eight characters).
const SERIAL_BITS: u32 = 40;

fn mac(secret: &[u8], serial: i64, booking_id: Uuid, unit_id: Uuid) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(b"usher ticket v2");
    mac.update(&serial.to_be_bytes());
    mac.update(booking_id.as_bytes());
    mac.update(unit_id.as_bytes());
    mac
}

/// Eight characters for 40 bits, most significant first.
fn encode40(value: u64, out: &mut String) {
    for i in (0..8).rev() {
        out.push(ALPHABET[((value >> (i * 5)) & 31) as usize] as char);
    }
}

/// The code of the ticket with this serial, for this booking's unit.
pub fn code(secret: &[u8], serial: i64, booking_id: Uuid, unit_id: Uuid) -> String {
    let digest = mac(secret, serial, booking_id, unit_id)
        .finalize()
        .into_bytes();
    let tag = digest[..5]
        .iter()
        .fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
    let mut raw = String::with_capacity(16);
    encode40(serial as u64 & ((1 << SERIAL_BITS) - 1), &mut raw);
    encode40(tag, &mut raw);
    let mut out = String::with_capacity(19);
    for (i, c) in raw.chars().enumerate() {
        if i > 0 && i % 4 == 0 {
            out.push('-');
        }
        out.push(c);
    }
    out
}

/// A code as presented: its serial and MAC. Case, dashes and spaces do not matter
/// (scanners and people type them differently).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Presented {
    pub serial: i64,
    tag: [u8; 5],
}

impl Presented {
    pub fn parse(raw: &str) -> Option<Self> {
        let mut values = Vec::with_capacity(16);
        for c in raw.chars() {
            if c == '-' || c.is_whitespace() {
                continue;
            }
            let c = c.to_ascii_uppercase();
            let value = ALPHABET.iter().position(|a| *a as char == c)?;
            values.push(value as u64);
            if values.len() > 16 {
                return None;
            }
        }
        if values.len() != 16 {
            return None;
        }
        let serial = values[..8].iter().fold(0u64, |acc, v| (acc << 5) | v);
        let tag = values[8..].iter().fold(0u64, |acc, v| (acc << 5) | v);
        let bytes = tag.to_be_bytes();
        Some(Self {
            serial: serial as i64,
            tag: [bytes[3], bytes[4], bytes[5], bytes[6], bytes[7]],
        })
    }

    /// Whether the code was made for this booking's unit (in constant time).
    pub fn signs(&self, secret: &[u8], booking_id: Uuid, unit_id: Uuid) -> bool {
        mac(secret, self.serial, booking_id, unit_id)
            .verify_truncated_left(&self.tag)
            .is_ok()
    }
}

/// Where a ticket's unit is, as buyers and door staff read it: `Stalls, row A, seat 5`,
/// or `General admission`.
pub fn place(unit: &usher_core::BookedUnit) -> String {
    match (&unit.section, &unit.row, &unit.label) {
        (Some(section), Some(row), Some(seat)) => format!("{section}, row {row}, seat {seat}"),
        _ => "General admission".to_owned(),
    }
}

/// Where the code's QR image is served (relative to the server).
pub fn qr_url(code: &str) -> String {
    format!("/v1/tickets/{code}/qr.svg")
}

/// The code as a QR image (SVG), quiet zone included, scaled for a phone screen.
pub fn qr_svg(code: &str) -> String {
    match QrCode::new(code.as_bytes()) {
        Ok(qr) => qr
            .render::<svg::Color<'_>>()
            .min_dimensions(200, 200)
            .quiet_zone(true)
            .build(),
        // Sixteen characters always fit; an empty image rather than a panic.
        Err(_) => String::from(r#"<svg xmlns="http://www.w3.org/2000/svg"/>"#),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_stable_distinct_keyed_and_read_back() {
        let (b, u1, u2) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        let one = code(b"k", 7, b, u1);
        assert_eq!(one, code(b"k", 7, b, u1));
        assert_ne!(one, code(b"k", 8, b, u2));
        assert_ne!(one, code(b"k", 7, b, u2));
        assert_ne!(one, code(b"other", 7, b, u1));
        assert_eq!(one.len(), 19);
        let presented = Presented::parse(&one).unwrap();
        assert_eq!(presented.serial, 7);
        assert!(presented.signs(b"k", b, u1));
        assert!(!presented.signs(b"k", b, u2));
        assert!(!presented.signs(b"other", b, u1));
        // However it is typed.
        let typed = one.to_lowercase().replace('-', " ");
        assert_eq!(Presented::parse(&typed), Some(presented));
        let big = code(b"k", (1 << 40) - 1, b, u1);
        assert_eq!(Presented::parse(&big).unwrap().serial, (1 << 40) - 1);
    }

    #[test]
    fn malformed_codes_are_refused() {
        for raw in [
            "",
            "ABCD",
            "ABCD-EFGH-JKLM-NPQR-S",
            "ABCD-EFGH-JKLM-NPQ0",
            "ÄBCD-EFGH-JKLM-NPQR",
        ] {
            assert_eq!(Presented::parse(raw), None, "{raw}");
        }
    }

    #[test]
    fn a_forged_tag_does_not_sign() {
        let (b, u) = (Uuid::now_v7(), Uuid::now_v7());
        let real = code(b"k", 42, b, u);
        let mut forged: Vec<char> = real.chars().collect();
        let last = forged.len() - 1;
        forged[last] = if forged[last] == 'A' { 'B' } else { 'A' };
        let forged: String = forged.into_iter().collect();
        assert!(!Presented::parse(&forged).unwrap().signs(b"k", b, u));
    }

    #[test]
    fn the_qr_is_an_svg() {
        let svg = qr_svg("ABCD-EFGH-JKLM-NPQR");
        assert!(svg.contains("<svg"), "{svg}");
        assert!(svg.contains("</svg>") || svg.ends_with("/>"));
    }
}
