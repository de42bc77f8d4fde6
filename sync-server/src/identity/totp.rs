//! TOTP (RFC 6238 over RFC 4226): HMAC-SHA1, 6 digits, 30-second steps, one step of drift either
//! way. A code is accepted once: the last used step is stored and older or equal steps refused.

use fitedge_core::time::Timestamp;
use ring::hmac;

pub const STEP_SECS: i64 = 30;
pub const DIGITS: u32 = 6;
pub const SECRET_LEN: usize = 20;

/// The HOTP value for a counter (RFC 4226 section 5.3).
pub fn hotp(secret: &[u8], counter: u64) -> u32 {
    let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, secret);
    let tag = hmac::sign(&key, &counter.to_be_bytes());
    let d = tag.as_ref();
    let offset = usize::from(d[d.len() - 1] & 0x0f);
    let bin = (u32::from(d[offset]) & 0x7f) << 24
        | u32::from(d[offset + 1]) << 16
        | u32::from(d[offset + 2]) << 8
        | u32::from(d[offset + 3]);
    bin % 10u32.pow(DIGITS)
}

pub fn step_at(t: Timestamp) -> i64 {
    t.as_millis().div_euclid(1000).div_euclid(STEP_SECS)
}

/// The code valid at `t`, zero-padded.
pub fn code_at(secret: &[u8], t: Timestamp) -> String {
    format!("{:06}", hotp(secret, step_at(t).max(0) as u64))
}

/// The step `code` matches at `t` (allowing one step of drift), if any, and only if it is later
/// than `last_step`.
pub fn verify(secret: &[u8], code: &str, t: Timestamp, last_step: Option<i64>) -> Option<i64> {
    let code = code.trim();
    if code.len() != DIGITS as usize || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let now = step_at(t);
    for step in [now - 1, now, now + 1] {
        if step < 0 || last_step.is_some_and(|l| step <= l) {
            continue;
        }
        let expected = format!("{:06}", hotp(secret, step as u64));
        if crate::crypto::ct_eq(expected.as_bytes(), code.as_bytes()) {
            return Some(step);
        }
    }
    None
}

/// RFC 4648 base32 without padding (what authenticator apps take).
pub fn base32(data: &[u8]) -> String {
    const A: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut out = String::new();
    let (mut buf, mut bits) = (0u32, 0u32);
    for &b in data {
        buf = (buf << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(char::from(A[((buf >> bits) & 31) as usize]));
        }
    }
    if bits > 0 {
        out.push(char::from(A[((buf << (5 - bits)) & 31) as usize]));
    }
    out
}

pub fn otpauth_uri(secret: &[u8], account: &str) -> String {
    let account: String = account
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~@".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    format!(
        "otpauth://totp/FitEdge:{account}?secret={}&issuer=FitEdge&algorithm=SHA1&digits=6&period=30",
        base32(secret)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const RFC_SECRET: &[u8] = b"12345678901234567890";

    #[test]
    fn rfc4226_appendix_d() {
        let expect = [755224, 287082, 359152, 969429, 338314];
        for (i, e) in expect.iter().enumerate() {
            assert_eq!(hotp(RFC_SECRET, i as u64), *e);
        }
    }

    #[test]
    fn rfc6238_appendix_b_sha1() {
        // 8-digit vectors truncated to 6 digits.
        for (t, code8) in [
            (59i64, "94287082"),
            (1111111109, "07081804"),
            (2000000000, "69279037"),
        ] {
            assert_eq!(code_at(RFC_SECRET, Timestamp(t * 1000)), code8[2..]);
        }
    }

    #[test]
    fn drift_and_replay() {
        let t = Timestamp(1_000_000_000_000);
        let code = code_at(RFC_SECRET, t);
        let step = verify(RFC_SECRET, &code, t, None).unwrap();
        assert_eq!(
            verify(RFC_SECRET, &code, t, Some(step)),
            None,
            "replay refused"
        );
        assert!(verify(RFC_SECRET, &code, t.plus_secs(30.0), None).is_some());
        assert!(verify(RFC_SECRET, &code, t.plus_secs(90.0), None).is_none());
        assert!(verify(RFC_SECRET, "12345", t, None).is_none());
    }

    #[test]
    fn base32_rfc4648() {
        assert_eq!(base32(b"foobar"), "MZXW6YTBOI");
        assert_eq!(base32(b"f"), "MY");
    }
}
