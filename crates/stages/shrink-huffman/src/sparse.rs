//! Deep Compression's sparse relative indices: each non-zero is stored as the
//! gap to the previous entry in `bits` bits. A gap that does not fit is bridged
//! by filler entries (whose value is zero) placed `2^bits` positions apart;
//! fillers are also appended until fewer than `2^bits` positions are left
//! after the last entry, so the entries always cover the tensor (which bounds
//! the size a file can declare for a tensor by the entries it holds).
//!
//! Entry `k` sits at `p_k = p_{k-1} + gap_k + 1`, with `p_{-1} = -1`.

/// One entry: its gap symbol and, for a real non-zero, its rank among the non-zeros.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    pub gap: u16,
    /// `None` for a filler.
    pub nonzero: Option<u32>,
}

/// Entries for the strictly increasing `positions` of the non-zeros of a
/// tensor of `len` elements, with `bits`-bit gaps (1 ≤ bits ≤ 16).
pub fn encode(positions: &[u32], len: u64, bits: u8) -> Vec<Entry> {
    let span = 1u64 << bits; // a filler advances this far
    let mut out = Vec::with_capacity(positions.len());
    let mut prev: i64 = -1;
    for (k, &p) in positions.iter().enumerate() {
        while (p as i64 - prev - 1) as u64 >= span {
            out.push(Entry { gap: (span - 1) as u16, nonzero: None });
            prev += span as i64;
        }
        out.push(Entry { gap: (p as i64 - prev - 1) as u16, nonzero: Some(k as u32) });
        prev = p as i64;
    }
    while (len as i64 - 1 - prev) as u64 >= span {
        out.push(Entry { gap: (span - 1) as u16, nonzero: None });
        prev += span as i64;
    }
    out
}

/// The most elements a tensor covered by `entries` entries of `bits`-bit gaps can have.
pub fn max_len(entries: u64, bits: u8) -> u64 {
    entries.saturating_add(1).saturating_mul(1u64 << bits).saturating_sub(1)
}

/// Positions of `gaps`, or why they do not fit a tensor of `len` elements
/// (an entry past the end, or entries that stop short of covering it).
pub fn positions(gaps: &[u16], len: u64, bits: u8) -> Result<Vec<u64>, String> {
    let mut out = Vec::with_capacity(gaps.len());
    let mut prev: i64 = -1;
    for (k, &g) in gaps.iter().enumerate() {
        let p = prev + g as i64 + 1;
        if p as u64 >= len {
            return Err(format!("entry {k} points at index {p}, past the tensor's end ({len} elements)"));
        }
        out.push(p as u64);
        prev = p;
    }
    let tail = len as i64 - 1 - prev;
    if tail as u64 >= 1u64 << bits {
        return Err(format!("the entries stop {tail} elements before the tensor's end (fillers missing)"));
    }
    Ok(out)
}
