//! Random names without another dependency: std's `RandomState` is seeded from the OS, and
//! a counter makes every draw in the process different.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};

/// `len` random lowercase letters and digits, the alphabet of a DNS label.
pub(crate) fn lower_alnum(len: usize) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    static DRAWS: AtomicU64 = AtomicU64::new(0);
    let mut out = String::with_capacity(len);
    while out.len() < len {
        let mut bits = RandomState::new().hash_one(DRAWS.fetch_add(1, Ordering::Relaxed));
        // 36^12 < 2^64: twelve characters per draw.
        for _ in 0..(len - out.len()).min(12) {
            out.push(char::from(ALPHABET[(bits % 36) as usize]));
            bits /= 36;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::lower_alnum;

    #[test]
    fn is_lowercase_alnum_of_the_asked_length_and_varies() {
        let a = lower_alnum(30);
        assert_eq!(a.len(), 30);
        assert!(
            a.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        );
        assert_ne!(lower_alnum(6), lower_alnum(6));
    }
}
