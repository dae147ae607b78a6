//! Bit and byte streams: an MSB-first bit writer and reader (Huffman codes and
//! fixed-width fields), LEB128 varints, and a bounds-checked byte cursor whose
//! errors carry the byte offset and the name of the field being read.

use crate::error::HuffmanError;

/// Writes bits most-significant first into bytes; the last byte is padded with zeros.
#[derive(Debug, Default)]
pub struct BitWriter {
    bytes: Vec<u8>,
    /// Bits used in the last byte (0 when the next bit starts a new byte).
    used: u8,
}

impl BitWriter {
    pub fn new() -> BitWriter {
        BitWriter::default()
    }

    /// Writes the low `n` bits of `value` (n ≤ 32), highest first.
    pub fn write(&mut self, value: u32, n: u8) {
        for i in (0..n).rev() {
            if self.used == 0 {
                self.bytes.push(0);
            }
            let bit = ((value >> i) & 1) as u8;
            if let Some(last) = self.bytes.last_mut() {
                *last |= bit << (7 - self.used);
            }
            self.used = (self.used + 1) % 8;
        }
    }

    /// Bits written so far.
    pub fn bit_len(&self) -> u64 {
        let full = self.bytes.len() as u64 * 8;
        if self.used == 0 { full } else { full - 8 + self.used as u64 }
    }

    pub fn finish(self) -> Vec<u8> {
        self.bytes
    }
}

/// Reads bits most-significant first from a byte slice.
#[derive(Debug)]
pub struct BitReader<'a> {
    bytes: &'a [u8],
    pos: u64,
}

impl<'a> BitReader<'a> {
    pub fn new(bytes: &'a [u8]) -> BitReader<'a> {
        BitReader { bytes, pos: 0 }
    }

    /// The next bit, or `None` past the end.
    pub fn bit(&mut self) -> Option<u32> {
        let byte = *self.bytes.get((self.pos / 8) as usize)?;
        let bit = (byte >> (7 - (self.pos % 8))) & 1;
        self.pos += 1;
        Some(bit as u32)
    }

    /// The next `n` bits (n ≤ 32) as a number, or `None` past the end.
    pub fn read(&mut self, n: u8) -> Option<u32> {
        let mut v = 0u32;
        for _ in 0..n {
            v = (v << 1) | self.bit()?;
        }
        Some(v)
    }

    /// Whether the reader stopped in the last byte and every bit after it is zero
    /// (a stream must not carry bytes or set bits it does not use).
    pub fn ends_cleanly(&self) -> bool {
        let used_bytes = self.pos.div_ceil(8) as usize;
        if used_bytes != self.bytes.len() {
            return false;
        }
        let rem = (self.pos % 8) as u8;
        rem == 0 || self.bytes.last().is_none_or(|&b| b & (0xFFu8 >> rem) == 0)
    }
}

/// Appends `v` as an unsigned LEB128 varint.
pub fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    loop {
        let b = (v & 0x7F) as u8;
        v >>= 7;
        if v == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

/// Bytes a varint of `v` takes.
pub fn varint_len(v: u64) -> usize {
    let mut out = Vec::new();
    put_varint(&mut out, v);
    out.len()
}

/// A bounds-checked reader over the file's bytes. Every error names the
/// field and its absolute byte offset.
#[derive(Debug, Clone)]
pub struct Cursor<'a> {
    data: &'a [u8],
    pos: usize,
    /// Absolute offset of `data[0]` in the file.
    base: usize,
}

impl<'a> Cursor<'a> {
    pub fn new(data: &'a [u8], base: usize) -> Cursor<'a> {
        Cursor { data, pos: 0, base }
    }

    pub fn offset(&self) -> usize {
        self.base + self.pos
    }

    pub fn remaining(&self) -> usize {
        self.data.len() - self.pos
    }

    pub fn is_empty(&self) -> bool {
        self.remaining() == 0
    }

    pub fn err(&self, what: impl Into<String>) -> HuffmanError {
        HuffmanError::corrupt(self.offset(), what)
    }

    pub fn u8(&mut self, field: &str) -> Result<u8, HuffmanError> {
        let b = *self.data.get(self.pos).ok_or_else(|| self.err(format!("{field}: the file ends early")))?;
        self.pos += 1;
        Ok(b)
    }

    pub fn bytes(&mut self, n: u64, field: &str) -> Result<&'a [u8], HuffmanError> {
        if n > self.remaining() as u64 {
            return Err(self.err(format!("{field}: {n} bytes declared, only {} left", self.remaining())));
        }
        let s = &self.data[self.pos..self.pos + n as usize];
        self.pos += n as usize;
        Ok(s)
    }

    pub fn u32_le(&mut self, field: &str) -> Result<u32, HuffmanError> {
        let b = self.bytes(4, field)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// An unsigned LEB128 varint of at most 10 bytes that fits a u64.
    pub fn varint(&mut self, field: &str) -> Result<u64, HuffmanError> {
        let start = self.offset();
        let mut v = 0u64;
        for i in 0..10 {
            let b = self.u8(field)?;
            let part = (b & 0x7F) as u64;
            if i == 9 && part > 1 {
                return Err(HuffmanError::corrupt(start, format!("{field}: varint overflows 64 bits")));
            }
            v |= part << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(HuffmanError::corrupt(start, format!("{field}: varint longer than 10 bytes")))
    }

    /// A varint that must be at most `max` (checked before anything is allocated from it).
    pub fn varint_max(&mut self, field: &str, max: u64) -> Result<u64, HuffmanError> {
        let start = self.offset();
        let v = self.varint(field)?;
        if v > max {
            return Err(HuffmanError::corrupt(start, format!("{field}: {v} is more than the {max} possible here")));
        }
        Ok(v)
    }
}
