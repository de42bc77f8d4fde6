//! `fitedge decode`: decodes raw sensor payloads, for people who build or debug sensors.
//!
//! ```text
//! fitedge decode --uuid 2A37 HEX [HEX...] [--wheel-mm 2105] [--json]
//! fitedge decode --ant-profile hrm|bsc|speed|cadence|power HEX [HEX...] [--json]
//! ```
//! Payloads are taken as consecutive notifications one second apart; from the second one on,
//! the values derived from the one before are printed too (speed, cadence, power, heart rate).
//! A payload that does not decode prints an error naming the byte offset and what was
//! expected there, and the command exits with 1.

use serde_json::{json, Map, Value};

use fitedge_core::Timestamp;
use fitedge_devices::ant::AntProfile;
use fitedge_devices::gatt::Characteristic;
use fitedge_devices::transport::replay::parse_hex;
use fitedge_devices::{SensorDecoder, Source};

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("kind").required(true).args(["uuid", "ant_profile"])))]
pub struct DecodeArgs {
    /// The GATT characteristic: 2A37, 2A38, 2A19, 2A5B, 2A53, 2A63, 2ACD, 2AD2, 2A5E, 2A5F,
    /// 2A24-2A29 (or a full UUID).
    #[arg(long, value_parser = parse_characteristic)]
    uuid: Option<Characteristic>,
    /// The ANT+ profile of 8-byte data pages.
    #[arg(long, value_parser = parse_profile)]
    ant_profile: Option<AntProfile>,
    /// Payloads in hex; spaces or colons between bytes are allowed (quote them).
    #[arg(required = true)]
    payloads: Vec<String>,
    /// Wheel circumference in millimetres, for speed.
    #[arg(long, default_value_t = 2105, value_parser = clap::value_parser!(u32).range(500..=4000))]
    wheel_mm: u32,
    /// One JSON array, one object per payload.
    #[arg(long)]
    json: bool,
}

fn parse_characteristic(s: &str) -> Result<Characteristic, String> {
    Characteristic::parse(s).ok_or_else(|| format!("{s:?} is not a characteristic with a decoder"))
}

fn parse_profile(s: &str) -> Result<AntProfile, String> {
    AntProfile::parse(s).ok_or_else(|| format!("{s:?}: expected hrm, bsc, speed, cadence or power"))
}

fn hex_string(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02X}")).collect()
}

/// "key=value" pairs of a flat JSON object, nulls left out.
fn human(v: &Value) -> String {
    match v {
        Value::Object(m) => m
            .iter()
            .filter(|(_, v)| !v.is_null())
            .map(|(k, v)| match v {
                Value::Object(_) => format!("{k}={{{}}}", human(v)),
                Value::String(s) => format!("{k}={s}"),
                v => format!("{k}={v}"),
            })
            .collect::<Vec<_>>()
            .join(" "),
        v => v.to_string(),
    }
}

pub fn run(args: &DecodeArgs) -> u8 {
    let source = match (args.uuid, args.ant_profile) {
        (Some(c), _) => Source::Gatt(c),
        (None, Some(p)) => Source::Ant(p),
        (None, None) => return 2,
    };
    let mut decoder = SensorDecoder::new(f64::from(args.wheel_mm) / 1000.0);
    let mut out = vec![];
    let mut failed = false;
    for (i, text) in args.payloads.iter().enumerate() {
        let mut o = Map::new();
        o.insert("index".into(), json!(i + 1));
        let Some(bytes) = parse_hex(text) else {
            o.insert("payload".into(), json!(text));
            o.insert(
                "error".into(),
                json!({"error": "bad_hex", "message": "expected pairs of hex digits"}),
            );
            failed = true;
            out.push(Value::Object(o));
            continue;
        };
        o.insert("payload".into(), json!(hex_string(&bytes)));
        match decoder.decode(source, &bytes, Timestamp(i as i64 * 1000)) {
            Ok((decoded, derived)) => {
                o.insert(
                    "decoded".into(),
                    serde_json::to_value(&decoded).unwrap_or(Value::Null),
                );
                if i > 0 {
                    let d = serde_json::to_value(derived).unwrap_or(Value::Null);
                    if d.as_object().is_some_and(|m| !m.is_empty()) {
                        o.insert("derived".into(), d);
                    }
                }
            }
            Err(e) => {
                failed = true;
                let mut err = serde_json::to_value(&e).unwrap_or(Value::Null);
                if let Some(m) = err.as_object_mut() {
                    m.insert("message".into(), json!(e.to_string()));
                }
                o.insert("error".into(), err);
            }
        }
        out.push(Value::Object(o));
    }
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
    } else {
        for o in &out {
            let n = &o["index"];
            let p = o["payload"].as_str().unwrap_or("");
            if let Some(e) = o.get("error") {
                let msg = e.get("message").and_then(Value::as_str).unwrap_or("");
                eprintln!("#{n} {p}: error: {msg}");
                continue;
            }
            outln!("#{n} {p}: {}", human(&o["decoded"]));
            if let Some(d) = o.get("derived") {
                outln!("   derived: {}", human(d));
            }
        }
    }
    u8::from(failed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(uuid: &str, payloads: &[&str]) -> DecodeArgs {
        DecodeArgs {
            uuid: parse_characteristic(uuid).ok(),
            ant_profile: None,
            payloads: payloads.iter().map(|s| s.to_string()).collect(),
            wheel_mm: 2105,
            json: true,
        }
    }

    #[test]
    fn exit_status_tells_a_bad_payload() {
        assert_eq!(run(&args("2A37", &["16485401EC02", "02:3C"])), 0);
        assert_eq!(run(&args("2A63", &["000028"])), 1);
        assert_eq!(run(&args("2A37", &["zz"])), 1);
        assert!(parse_characteristic("2A99").is_err());
        assert!(parse_profile("hrm").is_ok() && parse_profile("x").is_err());
    }

    #[test]
    fn human_output_leaves_out_nulls() {
        let v = json!({"a": 1, "b": null, "c": "x"});
        assert_eq!(human(&v), "a=1 c=x");
    }
}
