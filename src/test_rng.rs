//! The one pseudo-random step the crate's randomized tests share: xorshift64 (Marsaglia), so
//! their inputs are the same on every run and a failure can be replayed from its seed.

/// The state after `state` (never 0 for a non-zero seed).
pub fn xorshift64(mut state: u64) -> u64 {
    state ^= state << 13;
    state ^= state >> 7;
    state ^= state << 17;
    state
}
