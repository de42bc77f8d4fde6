//! The btleplug transport (feature `ble`): scans for the fitness services, connects to every
//! sensor found (several at once), subscribes to the characteristics with a decoder, reads
//! battery and device information, and reconnects with exponential backoff, subscribing again
//! after every reconnect ([`super::reconnect::supervise`]), and disconnects once the transport is
//! dropped.
//!
//! Linux builds need the D-Bus development files (`libdbus-1-dev` and `pkg-config`).

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use btleplug::api::{
    Central, CharPropFlags, Manager as _, Peripheral as _, ScanFilter, ValueNotification,
};
use btleplug::platform::{Manager, Peripheral};
use futures::{Stream, StreamExt};

use fitedge_core::Clock;

use super::reconnect::{supervise, Backoff, Link, LinkError};
use super::{channel, ChannelTransport};
use crate::gatt::{uuid_from16, uuids, Characteristic};
use crate::sensor::Source;

fn err(e: impl std::fmt::Display) -> LinkError {
    LinkError(e.to_string())
}

type Notifications = Pin<Box<dyn Stream<Item = ValueNotification> + Send>>;

pub struct BleLink {
    peripheral: Peripheral,
    stream: Option<Notifications>,
}

impl std::fmt::Debug for BleLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BleLink")
            .field("id", &self.peripheral.id())
            .finish()
    }
}

impl Link for BleLink {
    async fn connect(&mut self) -> Result<(), LinkError> {
        self.stream = None;
        if !self.peripheral.is_connected().await.map_err(err)? {
            self.peripheral.connect().await.map_err(err)?;
        }
        self.peripheral.discover_services().await.map_err(err)
    }

    async fn subscribe(&mut self) -> Result<Vec<(Source, Vec<u8>)>, LinkError> {
        let mut initial = vec![];
        for c in self.peripheral.characteristics() {
            let Some(ch) = Characteristic::from_uuid(&c.uuid) else {
                continue;
            };
            if c.properties
                .intersects(CharPropFlags::NOTIFY | CharPropFlags::INDICATE)
            {
                self.peripheral.subscribe(&c).await.map_err(err)?;
            }
            let read_once = matches!(
                ch,
                Characteristic::BatteryLevel
                    | Characteristic::BodySensorLocation
                    | Characteristic::DeviceInfo(_)
            );
            if read_once && c.properties.contains(CharPropFlags::READ) {
                if let Ok(v) = self.peripheral.read(&c).await {
                    initial.push((Source::Gatt(ch), v));
                }
            }
        }
        self.stream = Some(self.peripheral.notifications().await.map_err(err)?);
        Ok(initial)
    }

    async fn next(&mut self) -> Result<(Source, Vec<u8>), LinkError> {
        let Some(stream) = self.stream.as_mut() else {
            return Err(LinkError("not subscribed".into()));
        };
        let mut check = tokio::time::interval(Duration::from_secs(2));
        loop {
            tokio::select! {
                n = stream.next() => {
                    let n = n.ok_or_else(|| LinkError("notifications ended".into()))?;
                    if let Some(c) = Characteristic::from_uuid(&n.uuid) {
                        return Ok((Source::Gatt(c), n.value));
                    }
                }
                _ = check.tick() => {
                    if !self.peripheral.is_connected().await.unwrap_or(false) {
                        return Err(LinkError("disconnected".into()));
                    }
                }
            }
        }
    }

    async fn disconnect(&mut self) {
        self.stream = None;
        let _ = self.peripheral.disconnect().await;
    }
}

/// A sensor found by a scan.
#[derive(Debug, Clone)]
pub struct Found {
    pub id: String,
    pub name: Option<String>,
    /// Signal strength of the last advertisement (dBm), when the platform reports it.
    pub rssi: Option<i16>,
    /// The services it advertises.
    pub services: Vec<uuid::Uuid>,
    pub peripheral: Peripheral,
}

/// Scans the first adapter for `scan_for`, keeping peripherals that advertise a fitness
/// service.
pub async fn scan(scan_for: Duration) -> Result<Vec<Found>, LinkError> {
    let manager = Manager::new().await.map_err(err)?;
    let adapter = manager
        .adapters()
        .await
        .map_err(err)?
        .into_iter()
        .next()
        .ok_or_else(|| LinkError("no Bluetooth adapter".into()))?;
    let services = uuids::FITNESS_SERVICES
        .iter()
        .map(|s| uuid_from16(*s))
        .collect();
    adapter
        .start_scan(ScanFilter { services })
        .await
        .map_err(err)?;
    tokio::time::sleep(scan_for).await;
    let _ = adapter.stop_scan().await;
    let mut out = vec![];
    for p in adapter.peripherals().await.map_err(err)? {
        let Some(props) = p.properties().await.map_err(err)? else {
            continue;
        };
        let fitness = props.services.iter().any(|u| {
            uuids::FITNESS_SERVICES
                .iter()
                .any(|s| uuid_from16(*s) == *u)
        });
        if fitness {
            out.push(Found {
                id: p.id().to_string(),
                name: props.local_name,
                rssi: props.rssi,
                services: props.services,
                peripheral: p,
            });
        }
    }
    Ok(out)
}

/// Supervises every found sensor at once; their events arrive on one transport. Stops when
/// the transport is dropped.
pub fn start(found: Vec<Found>, backoff: Backoff, clock: Arc<dyn Clock>) -> ChannelTransport {
    let (tx, t) = channel();
    for f in found {
        let link = BleLink {
            peripheral: f.peripheral,
            stream: None,
        };
        tokio::spawn(supervise(f.id, link, backoff, tx.clone(), clock.clone()));
    }
    t
}
