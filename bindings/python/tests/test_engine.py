"""The FitEdge engine driven from Python through the generated bindings.

Run with scripts/test-bindings (it builds the library and puts it beside the module).
"""
import os
import tempfile
import unittest

import fitedge.fitedge_ffi as fe

KEY = bytes(range(32))
T0 = 1_763_700_000_000


class ManualClock(fe.EngineClock):
    def __init__(self, t):
        self.t = t

    def now_ms(self):
        return self.t


class Collect(fe.LiveMetricsListener):
    def __init__(self):
        self.seen = []

    def on_live_metrics(self, metrics):
        self.seen.append(metrics)


def shared_fit(name):
    shared = os.environ.get("FITEDGE_SHARED_DIR") or os.path.join(os.path.dirname(__file__), "../../../../shared")
    path = os.path.join(shared, "data", "fit", name)
    if not os.path.exists(path):
        raise unittest.SkipTest(f"!!! shared recordings missing at {path} !!!") if os.environ.get("FITEDGE_SKIP_SHARED") else AssertionError(f"shared recordings missing at {path}")
    return path


class EngineTest(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.TemporaryDirectory()
        self.db = os.path.join(self.dir.name, "fitedge.db")
        self.clock = ManualClock(T0)
        profile = fe.AthleteProfile(weight_kg=72.0, sex=fe.Sex.MALE, birth_year=1985,
                                    hr_max_bpm=188, hr_rest_bpm=50, ftp_w=250)
        self.engine = fe.Engine.open_with_clock(self.db, KEY, profile, self.clock)

    def tearDown(self):
        self.dir.cleanup()

    def ride(self, seconds, listener=None):
        self.engine.start_workout(fe.Sport.CYCLING)
        for s in range(seconds):
            self.clock.t = T0 + s * 1000
            batch = [
                fe.Sample(timestamp_ms=self.clock.t, reading=fe.Reading.POWER(watts=200.0 + s % 50)),
                fe.Sample(timestamp_ms=self.clock.t, reading=fe.Reading.SPEED(metres_per_second=8.0)),
            ]
            if s % 2 == 0:
                self.engine.record_samples(batch)
            else:
                for b in batch:
                    self.engine.record_sample(b)
            # Heart rate from a chest strap, as the raw 0x2A37 notification.
            self.engine.feed_notification("strap-1", "180D", "2A37", bytes([0x00, 130 + s % 20]), self.clock.t)
        self.clock.t = T0 + seconds * 1000

    def test_a_whole_workout_with_live_metrics_and_history(self):
        listener = Collect()
        sub = self.engine.subscribe_live_metrics(listener)
        self.ride(300)
        self.assertGreater(len(listener.seen), 250)
        live = listener.seen[-1]
        self.assertEqual(live.state, fe.WorkoutState.ACTIVE)
        self.assertGreater(live.distance_m, 2000)
        self.assertIsNotNone(live.heart_rate_bpm)
        sub.cancel()
        n = len(listener.seen)
        summary = self.engine.complete_workout()
        self.assertEqual(len(listener.seen), n, "a cancelled subscription gets nothing")
        self.assertEqual(summary.sport, fe.Sport.CYCLING)
        self.assertAlmostEqual(summary.timer_s, 300.0, delta=1.0)
        self.assertAlmostEqual(summary.distance_m, 2400.0, delta=30.0)
        self.assertGreater(summary.avg_heart_rate_bpm, 130)
        self.assertIsNotNone(summary.normalized_power_w)
        self.assertIsNotNone(summary.training_stress_score)
        page = self.engine.list_workouts(10)
        self.assertEqual([w.id for w in page.items], [summary.id])
        self.assertEqual(self.engine.workout_summary(summary.id[:8]).id, summary.id)

    def test_import_a_device_recording(self):
        stored = self.engine.import_file(shared_fit("Edge810-Vector-2013-08-16-15-35-10.fit"))
        self.assertEqual(len(stored), 1)
        self.assertAlmostEqual(stored[0].distance_m, 41339, delta=420)
        route = self.engine.route(stored[0].id)
        self.assertIn("MultiLineString", route.geojson)
        out = os.path.join(self.dir.name, "ride.tcx")
        self.engine.export_workout(stored[0].id, fe.FileFormat.TCX, out)
        self.assertGreater(os.path.getsize(out), 100_000)

    def test_every_public_error_is_a_python_exception(self):
        # InvalidState: completing when nothing is recorded; too short; completing twice.
        with self.assertRaises(fe.FitEdgeError.InvalidState):
            self.engine.complete_workout()
        self.engine.start_workout(None)
        with self.assertRaises(fe.FitEdgeError.InvalidState) as too_short:
            self.engine.complete_workout()
        self.assertIn("1 minute", str(too_short.exception))
        self.clock.t += 120_000
        self.engine.complete_workout()
        with self.assertRaises(fe.FitEdgeError.InvalidState):
            self.engine.complete_workout()
        # InvalidInput: a key of the wrong length; an unknown characteristic.
        with self.assertRaises(fe.FitEdgeError.InvalidInput):
            fe.Engine.open(os.path.join(self.dir.name, "other.db"), b"short", None)
        # NotFound.
        with self.assertRaises(fe.FitEdgeError.NotFound):
            self.engine.workout_summary("ffffffff")
        # Storage: the database was created with another key.
        with self.assertRaises(fe.FitEdgeError.Storage):
            fe.Engine.open(self.db, bytes(32), None)

    def test_an_interrupted_recording_is_recovered_on_open(self):
        self.ride(90)
        wid = self.engine.live_metrics().workout_id
        del self.engine  # the app is killed without completing
        again = fe.Engine.open_with_clock(self.db, KEY, None, self.clock)
        self.assertEqual(again.workout_state(), fe.WorkoutState.ACTIVE)
        self.assertEqual(again.live_metrics().workout_id, wid)
        self.assertEqual(again.complete_workout().id, wid)


if __name__ == "__main__":
    unittest.main()
