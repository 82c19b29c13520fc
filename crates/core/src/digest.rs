//! Hash tables keyed by 128-bit SipHash digests: the low 64 bits of a
//! digest are already uniform, so such a table need not hash its keys
//! again (a cheaper lookup, and no hashing through SipHash again when it
//! grows or is rebuilt).

use std::hash::{BuildHasherDefault, Hasher};

/// A hasher for 128-bit digests: their low 64 bits are the hash.
#[derive(Debug, Default, Clone, Copy)]
pub struct DigestHasher(u64);

impl Hasher for DigestHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*byte);
        }
    }

    fn write_u128(&mut self, value: u128) {
        self.0 = value as u64;
    }
}

/// Builds [`DigestHasher`]s, for hash maps, sets and caches.
pub type BuildDigestHasher = BuildHasherDefault<DigestHasher>;

#[cfg(test)]
mod tests {
    use std::hash::BuildHasher;

    use super::*;

    #[test]
    fn a_digest_hashes_to_its_low_64_bits() {
        let digest: u128 = 0x0123_4567_89ab_cdef_fedc_ba98_7654_3210;
        assert_eq!(
            BuildDigestHasher::default().hash_one(digest),
            0xfedc_ba98_7654_3210
        );
    }
}
