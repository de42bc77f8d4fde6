//! Sample chunks: a run of one channel's samples in a compact columnar form.
//!
//! Layout (version 1): `[version u8][channel u8][count varint]`, then the time column and one
//! column per value, each a sequence of zigzag varints of the difference from the previous
//! value. Values are quantized to a resolution finer than any sensor reports (see
//! [`resolution`]), so delta coding of slowly changing signals costs one or two bytes per value
//! instead of eight. The whole body is then deflated when that makes it smaller (flag byte).
//! Decoding checks every length and tells a truncated or corrupt chunk apart; it never panics.

use crate::sample::{AltitudeSource, Channel, Reading, Sample};
use crate::time::Timestamp;

const VERSION: u8 = 1;
const RAW: u8 = 0;
const DEFLATED: u8 = 1;

/// Resolutions (units per stored integer step).
pub mod resolution {
    pub const HEART_RATE_BPM: f64 = 0.01;
    pub const RR_MS: f64 = 0.001;
    pub const DEGREES: f64 = 1e-7; // ~1 cm
    pub const METRES: f64 = 0.001;
    pub const SPEED_MPS: f64 = 0.001;
    pub const CADENCE_RPM: f64 = 0.01;
    pub const POWER_W: f64 = 0.01;
    pub const TEMPERATURE_C: f64 = 0.01;
    pub const SPO2_PCT: f64 = 0.01;
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    #[error("chunk truncated at byte {0}")]
    Truncated(usize),
    #[error("chunk corrupt: {0}")]
    Corrupt(String),
}

fn channel_code(c: Channel) -> u8 {
    c.index() as u8
}

fn columns(c: Channel) -> usize {
    match c {
        Channel::Position => 3, // lat, lon, accuracy (cm, -1 for none)
        Channel::Altitude => 2, // metres, source
        _ => 1,
    }
}

fn q(v: f64, res: f64) -> i64 {
    (v / res).round() as i64
}

fn quantize(r: &Reading, out: &mut [i64; 3]) {
    use resolution::*;
    match *r {
        Reading::HeartRate { bpm } => out[0] = q(bpm, HEART_RATE_BPM),
        Reading::RrInterval { ms } => out[0] = q(ms, RR_MS),
        Reading::Position {
            lat,
            lon,
            accuracy_m,
        } => {
            out[0] = q(lat, DEGREES);
            out[1] = q(lon, DEGREES);
            out[2] = accuracy_m.map_or(-1, |a| q(a, 0.01));
        }
        Reading::Altitude { m, source } => {
            out[0] = q(m, METRES);
            out[1] = match source {
                AltitudeSource::Gps => 0,
                AltitudeSource::Barometric => 1,
            };
        }
        Reading::Speed { mps } => out[0] = q(mps, SPEED_MPS),
        Reading::Distance { m } => out[0] = q(m, METRES),
        Reading::Cadence { rpm } => out[0] = q(rpm, CADENCE_RPM),
        Reading::Power { w } => out[0] = q(w, POWER_W),
        Reading::Temperature { c } => out[0] = q(c, TEMPERATURE_C),
        Reading::Spo2 { pct } => out[0] = q(pct, SPO2_PCT),
    }
}

fn dequantize(c: Channel, v: &[i64; 3]) -> Result<Reading, CodecError> {
    use resolution::*;
    let f = |x: i64, res: f64| x as f64 * res;
    Ok(match c {
        Channel::HeartRate => Reading::HeartRate {
            bpm: f(v[0], HEART_RATE_BPM),
        },
        Channel::RrInterval => Reading::RrInterval { ms: f(v[0], RR_MS) },
        Channel::Position => Reading::Position {
            lat: f(v[0], DEGREES),
            lon: f(v[1], DEGREES),
            accuracy_m: (v[2] >= 0).then(|| f(v[2], 0.01)),
        },
        Channel::Altitude => Reading::Altitude {
            m: f(v[0], METRES),
            source: match v[1] {
                0 => AltitudeSource::Gps,
                1 => AltitudeSource::Barometric,
                x => return Err(CodecError::Corrupt(format!("altitude source {x}"))),
            },
        },
        Channel::Speed => Reading::Speed {
            mps: f(v[0], SPEED_MPS),
        },
        Channel::Distance => Reading::Distance { m: f(v[0], METRES) },
        Channel::Cadence => Reading::Cadence {
            rpm: f(v[0], CADENCE_RPM),
        },
        Channel::Power => Reading::Power {
            w: f(v[0], POWER_W),
        },
        Channel::Temperature => Reading::Temperature {
            c: f(v[0], TEMPERATURE_C),
        },
        Channel::Spo2 => Reading::Spo2 {
            pct: f(v[0], SPO2_PCT),
        },
    })
}

pub(crate) fn put_varint(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

pub(crate) fn get_varint(data: &[u8], pos: &mut usize) -> Result<i64, CodecError> {
    let mut z: u64 = 0;
    let mut shift = 0u32;
    loop {
        let b = *data.get(*pos).ok_or(CodecError::Truncated(*pos))?;
        *pos += 1;
        if shift > 63 {
            return Err(CodecError::Corrupt(format!(
                "varint too long at byte {}",
                *pos
            )));
        }
        z |= u64::from(b & 0x7F) << shift;
        if b & 0x80 == 0 {
            return Ok(((z >> 1) as i64) ^ -((z & 1) as i64));
        }
        shift += 7;
    }
}

/// Encodes samples of one channel (in time order) into a chunk.
pub fn encode(channel: Channel, samples: &[Sample]) -> Vec<u8> {
    let cols = columns(channel);
    let mut body = Vec::with_capacity(samples.len() * (2 + 2 * cols) + 8);
    body.push(VERSION);
    body.push(channel_code(channel));
    put_varint(&mut body, samples.len() as i64);
    let mut prev = 0i64;
    for s in samples {
        put_varint(&mut body, s.t.0.wrapping_sub(prev));
        prev = s.t.0;
    }
    let mut vals = [0i64; 3];
    let mut prevs = [0i64; 3];
    // Column by column: similar numbers sit together and deflate better.
    for col in 0..cols {
        prevs[col] = 0;
        for s in samples {
            quantize(&s.reading, &mut vals);
            put_varint(&mut body, vals[col].wrapping_sub(prevs[col]));
            prevs[col] = vals[col];
        }
    }
    let packed = miniz_oxide::deflate::compress_to_vec(&body, 6);
    let mut out = Vec::with_capacity(body.len().min(packed.len()) + 1);
    if packed.len() < body.len() {
        out.push(DEFLATED);
        out.extend_from_slice(&packed);
    } else {
        out.push(RAW);
        out.extend_from_slice(&body);
    }
    out
}

/// Upper bound on a chunk's decoded size: a chunk never holds more than this many samples.
pub const MAX_SAMPLES_PER_CHUNK: usize = 1 << 20;

pub fn decode(data: &[u8]) -> Result<(Channel, Vec<Sample>), CodecError> {
    let (&flag, rest) = data.split_first().ok_or(CodecError::Truncated(0))?;
    let inflated;
    let body: &[u8] = match flag {
        RAW => rest,
        DEFLATED => {
            inflated = miniz_oxide::inflate::decompress_to_vec_with_limit(rest, 64 << 20)
                .map_err(|e| CodecError::Corrupt(format!("inflate: {e:?}")))?;
            &inflated
        }
        x => return Err(CodecError::Corrupt(format!("unknown compression flag {x}"))),
    };
    let mut pos = 0;
    let version = *body.get(pos).ok_or(CodecError::Truncated(pos))?;
    if version != VERSION {
        return Err(CodecError::Corrupt(format!(
            "unknown chunk version {version}"
        )));
    }
    let code = *body.get(1).ok_or(CodecError::Truncated(1))?;
    let channel = *Channel::ALL
        .get(code as usize)
        .ok_or_else(|| CodecError::Corrupt(format!("unknown channel {code}")))?;
    pos = 2;
    let n = get_varint(body, &mut pos)?;
    if n < 0 || n as usize > MAX_SAMPLES_PER_CHUNK {
        return Err(CodecError::Corrupt(format!("sample count {n}")));
    }
    let n = n as usize;
    // Every sample needs at least one byte per column: refuse counts the data cannot hold.
    let cols = columns(channel);
    if body.len().saturating_sub(pos) < n * (1 + cols) {
        return Err(CodecError::Truncated(body.len()));
    }
    let mut times = Vec::with_capacity(n);
    let mut t = 0i64;
    for _ in 0..n {
        t = t.wrapping_add(get_varint(body, &mut pos)?);
        times.push(t);
    }
    let mut values = vec![[0i64; 3]; n];
    for col in 0..cols {
        let mut v = 0i64;
        for row in values.iter_mut() {
            v = v.wrapping_add(get_varint(body, &mut pos)?);
            row[col] = v;
        }
    }
    if pos != body.len() {
        return Err(CodecError::Corrupt(format!(
            "{} trailing bytes",
            body.len() - pos
        )));
    }
    let mut out = Vec::with_capacity(n);
    for (t, v) in times.into_iter().zip(values) {
        out.push(Sample::new(Timestamp(t), dequantize(channel, &v)?));
    }
    Ok((channel, out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn hr(t: i64, bpm: f64) -> Sample {
        Sample::new(Timestamp(t), Reading::HeartRate { bpm })
    }

    #[test]
    fn a_steady_heart_rate_costs_about_two_bytes_per_sample() {
        let s: Vec<_> = (0..3600)
            .map(|i| hr(1_700_000_000_000 + i * 1000, 120.0 + (i % 7) as f64))
            .collect();
        let chunk = encode(Channel::HeartRate, &s);
        assert!(chunk.len() < 3600 * 2, "{} bytes", chunk.len());
        assert_eq!(decode(&chunk).unwrap(), (Channel::HeartRate, s));
    }

    #[test]
    fn truncation_and_garbage_are_errors() {
        let s: Vec<_> = (0..50).map(|i| hr(i * 1000, 100.0 + i as f64)).collect();
        let chunk = encode(Channel::HeartRate, &s);
        for len in 0..chunk.len() {
            assert!(decode(&chunk[..len]).is_err(), "len {len}");
        }
        assert!(decode(&[9, 1, 2, 3]).is_err());
        assert!(decode(&[RAW, VERSION, 200, 1]).is_err());
        // A count far beyond the data is refused before allocating for it.
        let mut big = vec![RAW, VERSION, 0];
        put_varint(&mut big, 1_000_000);
        assert!(matches!(decode(&big), Err(CodecError::Truncated(_))));
    }

    fn reading() -> impl Strategy<Value = Reading> {
        prop_oneof![
            (20.0..300.0f64).prop_map(|bpm| Reading::HeartRate { bpm }),
            (200.0..3000.0f64).prop_map(|ms| Reading::RrInterval { ms }),
            (
                -90.0..90.0f64,
                -180.0..180.0f64,
                prop::option::of(0.0..100.0f64)
            )
                .prop_map(|(lat, lon, accuracy_m)| Reading::Position {
                    lat,
                    lon,
                    accuracy_m
                }),
            (-500.0..9000.0f64, any::<bool>()).prop_map(|(m, b)| Reading::Altitude {
                m,
                source: if b {
                    AltitudeSource::Barometric
                } else {
                    AltitudeSource::Gps
                }
            }),
            (0.0..100.0f64).prop_map(|mps| Reading::Speed { mps }),
            (0.0..1e7f64).prop_map(|m| Reading::Distance { m }),
            (0.0..3000.0f64).prop_map(|w| Reading::Power { w }),
        ]
    }

    proptest! {
        #[test]
        fn round_trip_within_resolution(r in reading(), n in 1usize..200, t0 in 0i64..2_000_000_000_000, step in 1i64..5000) {
            let ch = r.channel();
            let s: Vec<_> = (0..n as i64).map(|i| Sample::new(Timestamp(t0 + i * step), r)).collect();
            let (c, back) = decode(&encode(ch, &s)).unwrap();
            prop_assert_eq!(c, ch);
            prop_assert_eq!(back.len(), n);
            for (a, b) in s.iter().zip(&back) {
                prop_assert_eq!(a.t, b.t);
                let (x, y) = (serde_json::to_value(a.reading).unwrap(), serde_json::to_value(b.reading).unwrap());
                for (k, va) in x.as_object().unwrap() {
                    if let (Some(fa), Some(fb)) = (va.as_f64(), y[k].as_f64()) {
                        prop_assert!((fa - fb).abs() <= 0.006, "{} {} vs {}", k, fa, fb);
                    } else {
                        prop_assert_eq!(va, &y[k]);
                    }
                }
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(data in prop::collection::vec(any::<u8>(), 0..300)) {
            let _ = decode(&data);
        }
    }
}
