//! The ANT serial message framing used by ANT USB sticks:
//!
//! ```text
//! [0xA4 sync] [length] [message id] [payload: length bytes] [checksum: XOR of all bytes before it]
//! ```
//! Encoder and decoder, no I/O. The ANT+ network key is never part of this crate: the user
//! supplies it at run time ([`NetworkKey::from_hex`]) and it is only ever put into a
//! "set network key" message.

use std::fmt;

use crate::error::DecodeError;

pub const SYNC: u8 = 0xA4;
/// No ANT message (extended data included) carries more than this.
pub const MAX_PAYLOAD: usize = 64;

/// Message ids used by the drivers.
pub mod msg {
    pub const CHANNEL_EVENT: u8 = 0x40;
    pub const UNASSIGN_CHANNEL: u8 = 0x41;
    pub const ASSIGN_CHANNEL: u8 = 0x42;
    pub const CHANNEL_PERIOD: u8 = 0x43;
    pub const CHANNEL_RF_FREQUENCY: u8 = 0x45;
    pub const SET_NETWORK_KEY: u8 = 0x46;
    pub const RESET_SYSTEM: u8 = 0x4A;
    pub const OPEN_CHANNEL: u8 = 0x4B;
    pub const BROADCAST_DATA: u8 = 0x4E;
    pub const ACKNOWLEDGED_DATA: u8 = 0x4F;
    pub const BURST_DATA: u8 = 0x50;
    pub const CHANNEL_ID: u8 = 0x51;
    pub const STARTUP: u8 = 0x6F;
}

/// ANT+ uses RF channel 57 (2457 MHz).
pub const ANT_PLUS_RF_FREQUENCY: u8 = 57;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    pub id: u8,
    pub payload: Vec<u8>,
}

impl Frame {
    /// For data messages (broadcast, acknowledged, burst): the channel and the 8-byte page.
    pub fn channel_data(&self) -> Option<(u8, &[u8])> {
        match self.id {
            msg::BROADCAST_DATA | msg::ACKNOWLEDGED_DATA | msg::BURST_DATA
                if self.payload.len() >= 9 =>
            {
                Some((self.payload[0], &self.payload[1..9]))
            }
            _ => None,
        }
    }
}

fn checksum(bytes: &[u8]) -> u8 {
    bytes.iter().fold(0, |a, b| a ^ b)
}

/// Encodes one frame (a payload longer than 255 bytes is cut to 255).
pub fn encode(id: u8, payload: &[u8]) -> Vec<u8> {
    let payload = &payload[..payload.len().min(255)];
    let mut out = Vec::with_capacity(payload.len() + 4);
    out.push(SYNC);
    out.push(payload.len() as u8);
    out.push(id);
    out.extend_from_slice(payload);
    out.push(checksum(&out));
    out
}

/// Decodes one frame at the start of `buf`; returns it and the bytes consumed.
pub fn decode(buf: &[u8]) -> Result<(Frame, usize), DecodeError> {
    let trunc = |offset: usize, expected: &'static str, needed: usize| DecodeError::Truncated {
        offset,
        expected,
        needed,
    };
    let Some(&sync) = buf.first() else {
        return Err(trunc(0, "sync byte 0xA4", 1));
    };
    if sync != SYNC {
        return Err(DecodeError::invalid(
            0,
            "sync byte 0xA4",
            format!("0x{sync:02X}"),
        ));
    }
    let Some(&len) = buf.get(1) else {
        return Err(trunc(1, "length", 1));
    };
    if usize::from(len) > MAX_PAYLOAD {
        return Err(DecodeError::invalid(1, "a length of at most 64", len));
    }
    let total = usize::from(len) + 4;
    if buf.len() < 3 {
        return Err(trunc(2, "message id", 1));
    }
    if buf.len() < total {
        let expected = if buf.len() < total - 1 {
            "payload"
        } else {
            "checksum"
        };
        return Err(trunc(buf.len(), expected, total - buf.len()));
    }
    let sum = checksum(&buf[..total - 1]);
    if sum != buf[total - 1] {
        return Err(DecodeError::invalid(
            total - 1,
            "checksum (XOR of the frame)",
            format!("0x{:02X} (computed 0x{sum:02X})", buf[total - 1]),
        ));
    }
    Ok((
        Frame {
            id: buf[2],
            payload: buf[3..total - 1].to_vec(),
        },
        total,
    ))
}

/// Splits a byte stream from the stick into frames, resynchronising on the sync byte after
/// garbage or a bad checksum.
#[derive(Debug, Default)]
pub struct FrameReader {
    buf: Vec<u8>,
    /// Bytes skipped while looking for a valid frame.
    pub skipped: usize,
}

impl FrameReader {
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete frame, if the buffer holds one.
    pub fn next_frame(&mut self) -> Option<Frame> {
        loop {
            match self.buf.iter().position(|b| *b == SYNC) {
                Some(0) => {}
                Some(i) => {
                    self.skipped += i;
                    self.buf.drain(..i);
                }
                None => {
                    self.skipped += self.buf.len();
                    self.buf.clear();
                    return None;
                }
            }
            match decode(&self.buf) {
                Ok((frame, used)) => {
                    self.buf.drain(..used);
                    return Some(frame);
                }
                Err(e) if e.is_truncated() => return None,
                Err(_) => {
                    self.skipped += 1;
                    self.buf.drain(..1);
                }
            }
        }
    }
}

/// The 8-byte ANT+ network key. Never committed: the user supplies it at run time (for
/// example from `FITEDGE_ANT_NETWORK_KEY`). Its `Debug` output hides it.
#[derive(Clone, PartialEq, Eq)]
pub struct NetworkKey([u8; 8]);

impl fmt::Debug for NetworkKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("NetworkKey(<hidden>)")
    }
}

impl NetworkKey {
    pub const ENV: &'static str = "FITEDGE_ANT_NETWORK_KEY";

    /// 16 hex digits (spaces, colons and commas allowed between bytes).
    pub fn from_hex(s: &str) -> Option<Self> {
        let digits: String = s.chars().filter(|c| c.is_ascii_hexdigit()).collect();
        if digits.len() != 16
            || s.chars()
                .any(|c| !(c.is_ascii_hexdigit() || " :,-".contains(c)))
        {
            return None;
        }
        let mut k = [0u8; 8];
        for (i, b) in k.iter_mut().enumerate() {
            *b = u8::from_str_radix(&digits[i * 2..i * 2 + 2], 16).ok()?;
        }
        Some(Self(k))
    }

    pub fn from_env() -> Option<Self> {
        std::env::var(Self::ENV)
            .ok()
            .and_then(|s| Self::from_hex(&s))
    }
}

/// The messages that open a receive channel for one ANT+ profile (any device number).
pub fn open_channel_messages(
    channel: u8,
    network: u8,
    key: &NetworkKey,
    device_type: u8,
    period: u16,
) -> Vec<Vec<u8>> {
    let mut key_payload = vec![network];
    key_payload.extend_from_slice(&key.0);
    vec![
        encode(msg::SET_NETWORK_KEY, &key_payload),
        // channel type 0x00: bidirectional receive (slave)
        encode(msg::ASSIGN_CHANNEL, &[channel, 0x00, network]),
        // device number 0 (wildcard), device type, transmission type 0 (wildcard)
        encode(msg::CHANNEL_ID, &[channel, 0, 0, device_type, 0]),
        encode(
            msg::CHANNEL_PERIOD,
            &[channel, period as u8, (period >> 8) as u8],
        ),
        encode(msg::CHANNEL_RF_FREQUENCY, &[channel, ANT_PLUS_RF_FREQUENCY]),
        encode(msg::OPEN_CHANNEL, &[channel]),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn reset_message_is_the_documented_one() {
        // ANT Message Protocol and Usage, "Reset System": A4 01 4A 00 EF
        assert_eq!(
            encode(msg::RESET_SYSTEM, &[0]),
            vec![0xA4, 0x01, 0x4A, 0x00, 0xEF]
        );
    }

    #[test]
    fn errors_name_the_offset() {
        assert!(matches!(
            decode(&[]),
            Err(DecodeError::Truncated { offset: 0, .. })
        ));
        assert!(matches!(
            decode(&[0x55]),
            Err(DecodeError::Invalid { offset: 0, .. })
        ));
        let mut f = encode(msg::BROADCAST_DATA, &[0, 1, 2, 3, 4, 5, 6, 7, 8]);
        let last = f.len() - 1;
        assert!(matches!(
            decode(&f[..last]),
            Err(DecodeError::Truncated {
                expected: "checksum",
                ..
            })
        ));
        f[last] ^= 0xFF;
        assert!(matches!(decode(&f), Err(DecodeError::Invalid { offset, .. }) if offset == last));
    }

    #[test]
    fn network_key_is_parsed_and_hidden() {
        let k = NetworkKey::from_hex("01:02:03:04:05:06:07:08").unwrap();
        assert_eq!(format!("{k:?}"), "NetworkKey(<hidden>)");
        assert!(NetworkKey::from_hex("0102").is_none());
        assert!(NetworkKey::from_hex("zz02030405060708").is_none());
        let msgs = open_channel_messages(0, 0, &k, 120, 8070);
        assert_eq!(
            decode(&msgs[0]).unwrap().0.payload,
            vec![0, 1, 2, 3, 4, 5, 6, 7, 8]
        );
    }

    proptest! {
        #[test]
        fn round_trip(id in any::<u8>(), payload in proptest::collection::vec(any::<u8>(), 0..40)) {
            let f = encode(id, &payload);
            let (frame, used) = decode(&f).unwrap();
            prop_assert_eq!(used, f.len());
            prop_assert_eq!(frame, Frame { id, payload });
        }

        #[test]
        fn reader_resyncs_after_garbage(
            garbage in proptest::collection::vec(any::<u8>(), 0..30),
            payload in proptest::collection::vec(any::<u8>(), 9..10),
        ) {
            let mut r = FrameReader::default();
            r.push(&garbage);
            let f = encode(msg::BROADCAST_DATA, &payload);
            r.push(&f);
            // The stream goes on (a false start in the garbage may wait for more bytes).
            r.push(&[0u8; 70]);
            // Garbage may itself hold a valid frame by chance; the real one must come out.
            let mut found = false;
            for _ in 0..40 {
                match r.next_frame() {
                    Some(fr) if fr.payload == payload && fr.id == msg::BROADCAST_DATA => { found = true; break; }
                    Some(_) => {}
                    None => break,
                }
            }
            prop_assert!(found);
        }
    }
}
