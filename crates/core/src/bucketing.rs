//! Deterministic bucketing: the same salt and unit id give the same bucket
//! in every process and every language.
//!
//! `bucket(salt, unit_id)` is SipHash-2-4 with the all-zero 128-bit key
//! over the bytes `UTF-8(salt) || 0xFF || UTF-8(unit_id)` (0xFF never
//! occurs in UTF-8, so no two pairs give the same bytes), read as an
//! unsigned 64-bit integer, modulo [`BUCKETS`]. `testdata/bucketing.json`
//! publishes vectors that any client can check itself against.

use std::hash::Hasher;

use siphasher::sip::SipHasher24;

use crate::model::{BUCKETS, Variant};

/// The bucket, `0..BUCKETS`, of `unit_id` under `salt`.
pub fn bucket(salt: &str, unit_id: &str) -> u32 {
    let mut hasher = SipHasher24::new_with_keys(0, 0);
    hasher.write(salt.as_bytes());
    hasher.write(&[0xFF]);
    hasher.write(unit_id.as_bytes());
    (hasher.finish() % u64::from(BUCKETS)) as u32
}

/// The index of the variant that variant bucket `bucket` falls in: weights
/// (integer percent, summing to 100) take consecutive slices of the
/// buckets in variant order, 100 buckets per percent.
pub fn variant_index(variants: &[Variant], bucket: u32) -> Option<usize> {
    let mut upper = 0;
    for (index, variant) in variants.iter().enumerate() {
        upper += variant.weight * (BUCKETS / 100);
        if bucket < upper {
            return Some(index);
        }
    }
    None
}
