//! The ANT USB stick transport (feature `ant-usb`), over the stick's serial device
//! (`/dev/ttyUSB0` on Linux: the kernel's usb-serial drivers expose Garmin/Dynastream sticks).
//! Opens one receive channel per profile with the user's ANT+ network key (supplied at run
//! time, never stored in the code) and turns broadcast pages into notifications.

use std::io::{Read, Write};
use std::sync::Arc;
use std::time::Duration;

use fitedge_core::Clock;

use super::{channel, ChannelTransport, TransportEvent};
use crate::ant::AntProfile;
use crate::ant_usb::{self, msg, FrameReader, NetworkKey};
use crate::sensor::Source;

#[derive(Debug, thiserror::Error)]
pub enum AntSerialError {
    #[error("serial port: {0}")]
    Port(#[from] serialport::Error),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

/// Opens the stick, configures one channel per profile, and reads pages on a blocking thread.
/// Devices are named `ant-<profile>-<channel>`.
pub fn open(
    path: &str,
    key: &NetworkKey,
    profiles: &[AntProfile],
    clock: Arc<dyn Clock>,
) -> Result<ChannelTransport, AntSerialError> {
    let mut port = serialport::new(path, 115_200)
        .timeout(Duration::from_millis(200))
        .open()?;
    port.write_all(&ant_usb::encode(msg::RESET_SYSTEM, &[0]))?;
    std::thread::sleep(Duration::from_millis(500));
    for (ch, p) in profiles.iter().enumerate() {
        for m in
            ant_usb::open_channel_messages(ch as u8, 0, key, p.device_type(), p.channel_period())
        {
            port.write_all(&m)?;
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let profiles = profiles.to_vec();
    let (tx, t) = channel();
    std::thread::spawn(move || {
        let mut reader = FrameReader::default();
        let mut buf = [0u8; 256];
        let mut seen = vec![false; profiles.len()];
        loop {
            match port.read(&mut buf) {
                Ok(n) => reader.push(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
                Err(_) => return,
            }
            while let Some(frame) = reader.next_frame() {
                let Some((ch, page)) = frame.channel_data() else {
                    continue;
                };
                let Some(p) = profiles.get(usize::from(ch)) else {
                    continue;
                };
                let device = format!("ant-{p:?}-{ch}").to_lowercase();
                let at = clock.now();
                if !seen[usize::from(ch)] {
                    seen[usize::from(ch)] = true;
                    let _ = tx.send(TransportEvent::Connected {
                        device: device.clone(),
                        at,
                    });
                }
                let ev = TransportEvent::Notification {
                    device,
                    source: Source::Ant(*p),
                    bytes: page.to_vec(),
                    at,
                };
                if tx.send(ev).is_err() {
                    return;
                }
            }
        }
    });
    Ok(t)
}
