//! Property tests for `Stripe-Signature` verification: what Stripe signs is accepted
//! within the tolerance, anything changed is refused, and no header makes it panic.

use proptest::prelude::*;

use usher_payments::webhook::{SignatureError, sign, verify};

const NOW: i64 = 1_790_000_000;

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn a_signed_payload_verifies_and_any_change_is_refused(
        payload in prop::collection::vec(any::<u8>(), 0..512),
        secret in "[A-Za-z0-9_]{1,40}",
        other_secret in "[A-Za-z0-9_]{1,40}",
        age in 0i64..=60,
        flip in any::<prop::sample::Index>(),
    ) {
        let header = sign(&payload, &secret, NOW - age);
        prop_assert!(verify(&payload, &header, &secret, NOW).is_ok());
        if other_secret != secret {
            prop_assert_eq!(verify(&payload, &header, &other_secret, NOW), Err(SignatureError::Mismatch));
        }
        if !payload.is_empty() {
            let mut changed = payload.clone();
            let i = flip.index(changed.len());
            changed[i] ^= 0x01;
            prop_assert_eq!(verify(&changed, &header, &secret, NOW), Err(SignatureError::Mismatch));
        }
        // Long after it was signed, a replay is stale.
        prop_assert_eq!(verify(&payload, &header, &secret, NOW + 3_600), Err(SignatureError::Stale));
    }

    #[test]
    fn no_header_makes_verification_panic_or_pass_by_accident(
        header in ".{0,200}|t=[0-9]{1,12},v1=[0-9a-f]{0,64}(,v1=[0-9a-f]{64})?",
        payload in prop::collection::vec(any::<u8>(), 0..64),
    ) {
        prop_assert!(verify(&payload, &header, "whsec_test", NOW).is_err());
    }
}
