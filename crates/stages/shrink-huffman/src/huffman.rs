//! Canonical, length-limited Huffman codes, written by hand: no kept crate
//! offers canonical codes with a length limit and stored code lengths (rather
//! than a stored tree or a whole deflate stream), and the coder is small.
//!
//! The encoder counts symbols, builds a Huffman tree with a binary heap and
//! reads off each symbol's depth. If a depth exceeds [`MAX_CODE_LEN`], the
//! counts are halved (each kept ≥ 1) and the tree rebuilt until it fits: with
//! at most 2^15 symbols in use this ends, at worst with a balanced tree. Codes
//! are canonical (deflate's rule: shorter codes first, ties by symbol), so only
//! the lengths are stored. One used symbol gets a 1-bit code, so every coded
//! symbol costs at least one bit (the decoder relies on it to bound counts).
//!
//! The decoder is puff's counting decoder: per length, how many codes, and
//! the symbols in canonical order; it reads one bit at a time. It refuses
//! lengths above the limit and over-subscribed length sets (Kraft sum > 1);
//! an incomplete set is allowed, and reading an unassigned code is an error.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use crate::bits::{BitReader, BitWriter};

/// The longest code; decoding tables stay a few hundred bytes.
pub const MAX_CODE_LEN: u8 = 15;

/// Code lengths for symbols seen `freqs[s]` times (0: unused, length 0),
/// none longer than `max_len`. `None` when more symbols are used than
/// `2^max_len` codes can hold.
pub fn code_lengths(freqs: &[u64], max_len: u8) -> Option<Vec<u8>> {
    let used: Vec<usize> = (0..freqs.len()).filter(|&s| freqs[s] > 0).collect();
    let mut lens = vec![0u8; freqs.len()];
    match used.len() {
        0 => return Some(lens),
        1 => {
            lens[used[0]] = 1;
            return Some(lens);
        }
        n if max_len >= 63 || n as u64 > 1u64 << max_len => return None,
        _ => {}
    }
    let mut f: Vec<u64> = used.iter().map(|&s| freqs[s]).collect();
    loop {
        let depths = tree_depths(&f);
        if depths.iter().all(|&d| d <= max_len as u32) {
            for (i, &s) in used.iter().enumerate() {
                lens[s] = depths[i] as u8;
            }
            return Some(lens);
        }
        f = f.iter().map(|&x| (x >> 1).max(1)).collect();
    }
}

/// Depth of each leaf in a Huffman tree over `weights` (≥ 2 leaves).
fn tree_depths(weights: &[u64]) -> Vec<u32> {
    let n = weights.len();
    let mut parent = vec![usize::MAX; 2 * n - 1];
    let mut heap: BinaryHeap<Reverse<(u64, usize)>> =
        weights.iter().enumerate().map(|(i, &w)| Reverse((w, i))).collect();
    let mut next = n;
    while let (Some(Reverse((wa, a))), Some(Reverse((wb, b)))) = (heap.pop(), heap.pop()) {
        parent[a] = next;
        parent[b] = next;
        heap.push(Reverse((wa.saturating_add(wb), next)));
        next += 1;
    }
    let root = next - 1;
    // parents are numbered after their children: walk from the root down
    let mut depth = vec![0u32; 2 * n - 1];
    for i in (0..root).rev() {
        depth[i] = depth[parent[i]] + 1;
    }
    depth.truncate(n);
    depth
}

/// Canonical codes for `lens` (deflate's assignment); unused symbols get 0.
pub fn canonical_codes(lens: &[u8]) -> Vec<u32> {
    let mut count = [0u32; 64];
    for &l in lens {
        count[l as usize] += 1;
    }
    count[0] = 0;
    let mut next = [0u32; 64];
    let mut code = 0u32;
    for len in 1..64 {
        code = (code + count[len - 1]) << 1;
        next[len] = code;
    }
    lens.iter()
        .map(|&l| {
            if l == 0 {
                return 0;
            }
            let c = next[l as usize];
            next[l as usize] += 1;
            c
        })
        .collect()
}

/// Encodes `symbols` with `lens` (each symbol must have a non-zero length).
pub fn encode(symbols: &[u16], lens: &[u8], out: &mut BitWriter) {
    let codes = canonical_codes(lens);
    for &s in symbols {
        out.write(codes[s as usize], lens[s as usize]);
    }
}

/// Total bits `encode` would write.
pub fn encoded_bits(freqs: &[u64], lens: &[u8]) -> u64 {
    freqs.iter().zip(lens).map(|(&f, &l)| f * l as u64).sum()
}

/// A canonical decoder built from code lengths.
#[derive(Debug, Clone)]
pub struct Decoder {
    /// Codes of each length.
    count: [u16; MAX_CODE_LEN as usize + 1],
    /// Symbols in canonical order (by length, then symbol).
    symbols: Vec<u16>,
}

impl Decoder {
    /// Checks `lens` (each ≤ [`MAX_CODE_LEN`], Kraft sum ≤ 1) and builds the tables.
    pub fn new(lens: &[u8]) -> Result<Decoder, String> {
        if lens.len() > u16::MAX as usize + 1 {
            return Err(format!("{} symbols is more than a code can hold", lens.len()));
        }
        let mut count = [0u16; MAX_CODE_LEN as usize + 1];
        for (s, &l) in lens.iter().enumerate() {
            if l > MAX_CODE_LEN {
                return Err(format!("symbol {s} has code length {l}, the limit is {MAX_CODE_LEN}"));
            }
            count[l as usize] += 1;
        }
        count[0] = 0;
        let mut left: i64 = 1;
        for &c in &count[1..] {
            left = (left << 1) - c as i64;
            if left < 0 {
                return Err("code lengths are over-subscribed (Kraft sum above 1): not a prefix code".into());
            }
        }
        let mut offs = [0usize; MAX_CODE_LEN as usize + 2];
        for len in 1..=MAX_CODE_LEN as usize {
            offs[len + 1] = offs[len] + count[len] as usize;
        }
        let mut symbols = vec![0u16; offs[MAX_CODE_LEN as usize + 1]];
        for (s, &l) in lens.iter().enumerate() {
            if l != 0 {
                symbols[offs[l as usize]] = s as u16;
                offs[l as usize] += 1;
            }
        }
        Ok(Decoder { count, symbols })
    }

    /// Reads one symbol.
    pub fn decode(&self, r: &mut BitReader<'_>) -> Result<u16, String> {
        let (mut code, mut first, mut index) = (0i64, 0i64, 0i64);
        for len in 1..=MAX_CODE_LEN as usize {
            code |= r.bit().ok_or("the stream ends inside a code")? as i64;
            let count = self.count[len] as i64;
            if code - first < count {
                return Ok(self.symbols[(index + code - first) as usize]);
            }
            index += count;
            first = (first + count) << 1;
            code <<= 1;
        }
        Err("a code that the code lengths do not assign".into())
    }
}
