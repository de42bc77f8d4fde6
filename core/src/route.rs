//! WorkoutRouteMap: the GPS track for display, as GeoJSON and as an encoded polyline.
//!
//! Outliers are dropped and jumps split the track into segments with the same filter the
//! distance uses ([`crate::metrics::gps::TrackFilter`]). Each segment is simplified with the
//! Ramer-Douglas-Peucker algorithm (via `geo`'s `Simplify`) in a local metric projection, so
//! the tolerance is in metres wherever on Earth the workout was. The polyline is Google's
//! encoded polyline format (precision 5), which every map SDK reads.

use geo::{Coord, LineString, Simplify};
use serde::{Deserialize, Serialize};

use crate::metrics::gps::{Fix, TrackEvent, TrackFilter};
use crate::sample::{Reading, Sample};
use crate::sport::Sport;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RouteMap {
    /// A GeoJSON Feature with a MultiLineString geometry ([lon, lat] pairs), one line per segment.
    pub geojson: serde_json::Value,
    /// The simplified track as one encoded polyline (segments joined).
    pub polyline: String,
    pub points_in: usize,
    pub points_out: usize,
    pub segments: usize,
}

fn segments(fixes: &[Sample], sport: Sport) -> Vec<Vec<(f64, f64)>> {
    let mut filter = TrackFilter::new(sport.max_speed_mps());
    let mut segs: Vec<Vec<(f64, f64)>> = vec![];
    let mut push = |e: TrackEvent| match e {
        TrackEvent::NewSegment { at } => segs.push(vec![(at.lat, at.lon)]),
        TrackEvent::Step { to, .. } => {
            if let Some(s) = segs.last_mut() {
                s.push((to.lat, to.lon));
            }
        }
        TrackEvent::Excluded { .. } => {}
    };
    for s in fixes {
        if let Reading::Position {
            lat,
            lon,
            accuracy_m,
        } = s.reading
        {
            if accuracy_m.is_some_and(|a| a > crate::validation::MAX_GPS_ACCURACY_M) {
                continue;
            }
            filter.push(Fix { t: s.t.0, lat, lon }, &mut push);
        }
    }
    filter.finish(&mut push);
    segs.retain(|s| !s.is_empty());
    segs
}

/// RDP in a local equirectangular projection around the segment's first point; accurate to
/// well under a metre over the few tens of kilometres a segment spans.
fn simplify(seg: &[(f64, f64)], tolerance_m: f64) -> Vec<(f64, f64)> {
    let Some(&(lat0, lon0)) = seg.first() else {
        return vec![];
    };
    const M_PER_DEG: f64 = 111_320.0;
    let kx = M_PER_DEG * lat0.to_radians().cos();
    let line: LineString<f64> = seg
        .iter()
        .map(|&(lat, lon)| Coord {
            x: (lon - lon0) * kx,
            y: (lat - lat0) * M_PER_DEG,
        })
        .collect();
    line.simplify(tolerance_m)
        .0
        .into_iter()
        .map(|c| {
            (
                lat0 + c.y / M_PER_DEG,
                lon0 + if kx != 0.0 { c.x / kx } else { 0.0 },
            )
        })
        .collect()
}

/// Google encoded polyline, precision 1e-5.
pub fn encode_polyline(points: &[(f64, f64)]) -> String {
    fn put(out: &mut String, v: i64) {
        let mut v = if v < 0 { !(v << 1) } else { v << 1 };
        while v >= 0x20 {
            out.push(char::from((((v & 0x1f) | 0x20) + 63) as u8));
            v >>= 5;
        }
        out.push(char::from((v + 63) as u8));
    }
    let mut out = String::new();
    let (mut plat, mut plon) = (0i64, 0i64);
    for &(lat, lon) in points {
        let (la, lo) = ((lat * 1e5).round() as i64, (lon * 1e5).round() as i64);
        put(&mut out, la - plat);
        put(&mut out, lo - plon);
        (plat, plon) = (la, lo);
    }
    out
}

pub fn route_map(fixes: &[Sample], sport: Sport, tolerance_m: f64) -> RouteMap {
    let segs = segments(fixes, sport);
    let simplified: Vec<Vec<(f64, f64)>> = segs.iter().map(|s| simplify(s, tolerance_m)).collect();
    let lines: Vec<Vec<[f64; 2]>> = simplified
        .iter()
        .map(|s| s.iter().map(|&(lat, lon)| [lon, lat]).collect())
        .collect();
    let all: Vec<(f64, f64)> = simplified.iter().flatten().copied().collect();
    RouteMap {
        geojson: serde_json::json!({
            "type": "Feature",
            "properties": {"sport": sport, "segments": lines.len()},
            "geometry": {"type": "MultiLineString", "coordinates": lines},
        }),
        polyline: encode_polyline(&all),
        points_in: fixes.len(),
        points_out: all.len(),
        segments: simplified.len(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::Timestamp;

    #[test]
    fn polyline_matches_googles_example() {
        // From Google's documentation of the format.
        let pts = [(38.5, -120.2), (40.7, -120.95), (43.252, -126.453)];
        assert_eq!(encode_polyline(&pts), "_p~iF~ps|U_ulLnnqC_mqNvxq`@");
    }

    #[test]
    fn a_straight_line_simplifies_to_its_ends_and_a_jump_splits_it() {
        let mut fixes = vec![];
        for i in 0..100 {
            fixes.push(Sample::new(
                Timestamp(i * 1000),
                Reading::Position {
                    lat: 45.0,
                    lon: 7.0 + i as f64 * 3e-5,
                    accuracy_m: None,
                },
            ));
        }
        for i in 0..50 {
            fixes.push(Sample::new(
                Timestamp(100_000 + i * 1000),
                Reading::Position {
                    lat: 46.0,
                    lon: 7.0 + i as f64 * 3e-5,
                    accuracy_m: None,
                },
            ));
        }
        let r = route_map(&fixes, Sport::Running, 5.0);
        assert_eq!(r.segments, 2);
        assert_eq!(r.points_out, 4);
        assert_eq!(r.geojson["geometry"]["coordinates"][0][0][0], 7.0);
        assert_eq!(r.points_in, 150);
    }
}
