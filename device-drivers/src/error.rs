//! Decoding errors. Every decoder tells a payload that ended too early ([`DecodeError::Truncated`])
//! from one whose bytes cannot be right ([`DecodeError::Invalid`]), and names the byte offset
//! and what it expected there.

use serde::Serialize;

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize)]
#[serde(tag = "error", rename_all = "snake_case")]
pub enum DecodeError {
    /// The payload ended before a field the flags (or the format) promise.
    #[error("truncated at byte {offset}: expected {expected} ({needed} more byte(s))")]
    Truncated {
        offset: usize,
        expected: &'static str,
        needed: usize,
    },
    /// The bytes are there but cannot be right (a reserved value, a bad checksum, ...).
    #[error("invalid at byte {offset}: expected {expected}, found {found}")]
    Invalid {
        offset: usize,
        expected: &'static str,
        found: String,
    },
}

impl DecodeError {
    pub fn offset(&self) -> usize {
        match self {
            DecodeError::Truncated { offset, .. } | DecodeError::Invalid { offset, .. } => *offset,
        }
    }

    pub fn is_truncated(&self) -> bool {
        matches!(self, DecodeError::Truncated { .. })
    }

    pub(crate) fn invalid(offset: usize, expected: &'static str, found: impl ToString) -> Self {
        DecodeError::Invalid {
            offset,
            expected,
            found: found.to_string(),
        }
    }
}

/// A little-endian cursor over a payload. Every read names what it expected, so a short
/// payload reports the offset and the field it ran out on.
#[derive(Debug)]
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    pub(crate) fn pos(&self) -> usize {
        self.pos
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub(crate) fn take(
        &mut self,
        n: usize,
        expected: &'static str,
    ) -> Result<&'a [u8], DecodeError> {
        let end = self.pos.checked_add(n).filter(|e| *e <= self.buf.len());
        match end {
            Some(end) => {
                let s = &self.buf[self.pos..end];
                self.pos = end;
                Ok(s)
            }
            None => Err(DecodeError::Truncated {
                offset: self.pos,
                expected,
                needed: n - self.remaining(),
            }),
        }
    }

    pub(crate) fn u8(&mut self, expected: &'static str) -> Result<u8, DecodeError> {
        Ok(self.take(1, expected)?[0])
    }

    pub(crate) fn u16(&mut self, expected: &'static str) -> Result<u16, DecodeError> {
        let b = self.take(2, expected)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    pub(crate) fn i16(&mut self, expected: &'static str) -> Result<i16, DecodeError> {
        let b = self.take(2, expected)?;
        Ok(i16::from_le_bytes([b[0], b[1]]))
    }

    pub(crate) fn u24(&mut self, expected: &'static str) -> Result<u32, DecodeError> {
        let b = self.take(3, expected)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], 0]))
    }

    pub(crate) fn u32(&mut self, expected: &'static str) -> Result<u32, DecodeError> {
        let b = self.take(4, expected)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
}
