//! The one pseudo-random step the crate's randomized tests share: xorshift64 (Marsaglia), so
//! their inputs are the same on every run and a failure can be replayed from its seed.

/// The state after `state` (never 0 for a non-zero seed).
pub fn xorshift64(mut state: u64) -> u64 {
    state ^= state << 13;
    state ^= state >> 7;
    state ^= state << 17;
    state
}

/// A number of `pieces` in `counts`, picked at random and joined: the shape most randomized tests
/// build their inputs in. Advances `state` once for the count and once per piece.
pub fn joined_pieces<S: AsRef<str>>(
    state: &mut u64,
    pieces: &[S],
    counts: std::ops::Range<u64>,
) -> String {
    *state = xorshift64(*state);
    let count = counts.start + *state % (counts.end - counts.start);
    let mut joined = String::new();
    for _ in 0..count {
        *state = xorshift64(*state);
        joined.push_str(pieces[(*state % pieces.len() as u64) as usize].as_ref());
    }
    joined
}
