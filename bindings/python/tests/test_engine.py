"""The FitEdge engine driven from Python through the generated bindings.

Run with scripts/test-bindings (it builds the library and puts it beside the module).
"""
import json
import os
import socket
import subprocess
import tempfile
import time
import unittest
import urllib.error
import urllib.request
import uuid

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


def closed_port_url():
    """A local address nothing listens on: connections are refused at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


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


class SyncOfflineTest(unittest.TestCase):
    """The outbox and sync without a server: nothing is lost, errors are branchable."""

    def setUp(self):
        self.dir = tempfile.TemporaryDirectory()
        self.clock = ManualClock(T0)
        self.engine = fe.Engine.open_with_clock(os.path.join(self.dir.name, "e.db"), KEY, None, self.clock)

    def tearDown(self):
        self.dir.cleanup()

    def test_commands_enqueued_offline_are_listed_in_order(self):
        a = self.engine.outbox_enqueue("POST", "/api/v1/workouts/w1/kudos", '{"emoji":"fire"}')
        self.clock.t += 10
        b = self.engine.outbox_enqueue("DELETE", "/api/v1/workouts/w1/kudos")
        listed = self.engine.outbox_list()
        self.assertEqual([c.seq for c in listed], [a.seq, b.seq])
        self.assertLess(a.seq, b.seq)
        self.assertEqual([c.path for c in listed], ["/api/v1/workouts/w1/kudos"] * 2)
        self.assertEqual([c.method for c in listed], ["POST", "DELETE"])
        keys = [c.idempotency_key for c in listed]
        self.assertEqual(len(set(keys)), 2)
        for k in keys:
            self.assertEqual(uuid.UUID(k).version, 4)
        for c in listed:
            self.assertEqual(c.status, fe.OutboxStatus.PENDING)
            self.assertEqual(c.attempts, 0)
            self.assertIsNone(c.last_http_status)
        self.assertEqual([c.created_at_ms for c in listed], [T0, T0 + 10], "the engine's clock")
        self.assertEqual(listed[0].body_json, '{"emoji":"fire"}')
        with self.assertRaises(fe.FitEdgeError.InvalidInput):
            self.engine.outbox_enqueue("GET", "/api/v1/me")

    def test_sync_against_an_unreachable_server_is_a_network_error(self):
        with self.assertRaises(fe.FitEdgeError.Network):
            self.engine.sync_now(closed_port_url(), "token")
        with self.assertRaises(fe.FitEdgeError.InvalidInput):
            self.engine.sync_now("ftp://fitedge.example", "token")
        with self.assertRaises(fe.FitEdgeError.InvalidInput):
            self.engine.set_sync_root_certificates("not a certificate")

    def test_a_flush_to_an_unreachable_server_keeps_the_commands_pending(self):
        self.engine.outbox_enqueue("POST", "/api/v1/a", None)
        self.engine.outbox_enqueue("POST", "/api/v1/b", None)
        report = self.engine.outbox_flush(closed_port_url(), "token")
        self.assertEqual((report.sent, report.failed, report.pending), (0, 0, 2))
        listed = self.engine.outbox_list()
        self.assertEqual([c.status for c in listed], [fe.OutboxStatus.PENDING] * 2)
        self.assertEqual(listed[0].attempts, 1)
        self.assertIsNotNone(listed[0].last_error)
        self.assertGreater(listed[0].next_attempt_ms, T0)


class HeardSensors(fe.SensorListener):
    def __init__(self):
        self.seen = []

    def on_sensor_status(self, status):
        self.seen.append(status)


class SensorsTest(unittest.TestCase):
    """Sensors through the engine's own Bluetooth transport (cargo feature `ble`, off in the
    library scripts/test-bindings builds) and the status of fed ones. This machine has no
    Bluetooth adapter and no bluetoothd."""

    def setUp(self):
        self.dir = tempfile.TemporaryDirectory()
        self.clock = ManualClock(T0)
        self.engine = fe.Engine.open_with_clock(os.path.join(self.dir.name, "e.db"), KEY, None, self.clock)

    def tearDown(self):
        self.dir.cleanup()

    def test_scanning_without_a_bluetooth_transport_is_a_clear_error(self):
        started = time.monotonic()
        if fe.has_bluetooth_transport():
            # Built with `ble`: without an adapter the scan fails within its bound (scan time
            # plus 10 s for the adapter), never hangs or crashes.
            try:
                found = self.engine.scan_sensors(500)
            except fe.FitEdgeError.InvalidState as e:
                self.assertIn("Bluetooth", str(e))
            else:
                self.assertIsInstance(found, list)
            self.assertLess(time.monotonic() - started, 0.5 + 10 + 2)
            return
        with self.assertRaises(fe.FitEdgeError.InvalidState) as e:
            self.engine.scan_sensors(5000)
        self.assertIn("no Bluetooth transport", str(e.exception))
        self.assertIn("feed_notification", str(e.exception))
        self.assertLess(time.monotonic() - started, 1.0, "refused at once, not after the scan time")
        with self.assertRaises(fe.FitEdgeError.InvalidState) as e:
            self.engine.connect_sensors(["AA:BB:CC:DD:EE:FF"], HeardSensors())
        self.assertIn("no Bluetooth transport", str(e.exception))
        self.assertEqual(self.engine.sensors(), [])

    def test_fed_sensors_are_listed_with_their_battery(self):
        self.engine.start_workout(fe.Sport.RUNNING)
        self.engine.feed_notification("strap-1", "180D", "2A37", bytes([0x00, 142]), T0)
        self.engine.feed_notification("strap-1", "180F", "2A19", bytes([77]), T0 + 500)
        [s] = self.engine.sensors()
        self.assertEqual((s.id, s.kind, s.connected, s.battery_pct, s.notifications, s.errors, s.disabled),
                         ("strap-1", fe.SensorKind.HEART_RATE, True, 77, 2, 0, False))


    def test_health_alerts_reach_a_listener(self):
        class Alerts(fe.HealthAlertListener):
            def __init__(self):
                self.heard = []

            def on_health_alert(self, alert):
                self.heard.append(alert)

        alerts = Alerts()
        sub = self.engine.subscribe_health_alerts(alerts)
        wid = self.engine.start_workout(fe.Sport.RUNNING)
        for i, bpm in enumerate([150, 200, 201, 150]):
            self.clock.t = T0 + i * 1000
            self.engine.record_sample(fe.Sample(timestamp_ms=self.clock.t, reading=fe.Reading.HEART_RATE(bpm=float(bpm))))
        self.engine.feed_notification("ox-1", "1822", "2A5F", bytes([0x00, 85, 0x00, 70, 0x00]), T0 + 4000)
        got = [(a.workout_id, a.channel, a.reason, a.value) for a in alerts.heard]
        self.assertEqual(got[0], (wid, "heart_rate", "heart_rate_above_range", 200.0))
        self.assertEqual(len([g for g in got if g[1] == "heart_rate"]), 1, got)
        sub.cancel()
        self.clock.t = T0 + 5000
        self.engine.record_sample(fe.Sample(timestamp_ms=self.clock.t, reading=fe.Reading.SPO2(percent=80.0)))
        self.assertEqual(len(alerts.heard), len(got), "a cancelled subscription was called")

def server_binary():
    path = os.environ.get("FITEDGE_SERVER_BIN") or os.path.join(
        os.environ.get("CARGO_TARGET_DIR") or os.path.join(os.path.dirname(__file__), "../../../target"),
        "debug", "fitedge-server")
    if not os.path.exists(path):
        msg = f"!!! fitedge-server not found at {path} (cargo build -p fitedge-server; set FITEDGE_SERVER_BIN) !!!"
        raise unittest.SkipTest(msg) if os.environ.get("FITEDGE_SKIP_SERVER") else AssertionError(msg)
    return path


class SyncWithServerTest(unittest.TestCase):
    """End to end: a real fitedge-server (dev mode, SQLite), two engines of one user."""

    def setUp(self):
        binary = server_binary()
        self.dir = tempfile.TemporaryDirectory()
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        self.log = open(os.path.join(self.dir.name, "server.log"), "w+")
        self.server = subprocess.Popen(
            [binary, "--dev", "--hash-cost", "insecure-fast",
             "--database-url", f"sqlite://{self.dir.name}/s.db", "--bind", f"127.0.0.1:{port}"],
            stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + 30
        while True:
            try:
                urllib.request.urlopen(self.url + "/healthcheck", timeout=1).read()
                break
            except (urllib.error.URLError, ConnectionError, OSError):
                if self.server.poll() is not None or time.time() > deadline:
                    self.fail("the server did not start:\n" + self.server_log())
                time.sleep(0.1)

    def tearDown(self):
        self.server.terminate()
        try:
            self.server.wait(10)
        except subprocess.TimeoutExpired:
            self.server.kill()
        self.log.close()
        self.dir.cleanup()

    def server_log(self):
        self.log.flush()
        self.log.seek(0)
        return self.log.read()[-4000:]

    def call(self, method, path, body=None, token=None):
        req = urllib.request.Request(self.url + path, method=method,
                                     data=None if body is None else json.dumps(body).encode())
        req.add_header("content-type", "application/json")
        if token:
            req.add_header("authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return json.loads(r.read() or b"null")
        except urllib.error.HTTPError as e:
            raise AssertionError(f"{method} {path}: HTTP {e.code} {e.read()[:500]!r}") from None

    def sign_in(self):
        email, password = "ann@example.com", "correct horse battery!"
        reg = self.call("POST", "/api/v1/auth/register", {
            "email": email, "password": password, "birth_date": "1990-01-01", "display_name": "Ann"})
        self.call("POST", "/api/v1/auth/verify-email", {"token": reg["dev_token"]})
        return self.call("POST", "/api/v1/auth/login", {"email": email, "password": password})["access_token"]

    def test_workouts_sync_to_a_second_device_and_the_outbox_is_delivered(self):
        token = self.sign_in()
        phone = fe.Engine.open(os.path.join(self.dir.name, "phone.db"), KEY, None)
        # The fenix 5 run lasts 57 s and is not recorded (under a minute); the ride lasts 60.4 s.
        stored = phone.import_file(shared_fit("garmin-fenix-5-bike.fit"))
        self.assertEqual(len(stored), 1)
        phone.set_workout_text(stored[0].id, "Morning run", "felt easy")

        sent = phone.sync_now(self.url, token)
        self.assertGreater(sent.docs_sent, 0, sent)
        self.assertGreater(sent.bytes_sent, 0, sent)
        self.assertGreater(sent.blobs_uploaded, 0, sent)
        self.assertEqual(sent.problems, [], sent)

        # A second device of the same user shares the user's storage key (sample chunks are
        # sealed with it).
        tablet = fe.Engine.open(os.path.join(self.dir.name, "tablet.db"), KEY, None)
        self.assertEqual(tablet.list_workouts(10).items, [])
        got = tablet.sync_now(self.url, token)
        self.assertGreater(got.docs_discovered, 0, got)
        self.assertGreater(got.docs_received, 0, got)
        self.assertGreater(got.blobs_downloaded, 0, got)
        self.assertEqual(got.problems, [], got)
        self.assertEqual(got.workouts_added, 1, got)
        received = tablet.list_workouts(10).items
        self.assertEqual([w.id for w in received], [stored[0].id])
        self.assertEqual(received[0].title, "Morning run")
        self.assertAlmostEqual(received[0].distance_m, stored[0].distance_m, delta=0.5)
        # An unchanged second round sends no changes.
        again = phone.sync_now(self.url, token)
        self.assertEqual(again.docs_sent, 0, again)

        # The outbox: a profile change queued offline, then flushed.
        me = self.call("GET", "/api/v1/me", token=token)
        cmd = phone.outbox_enqueue("PATCH", f"/api/v1/users/{me['id']}",
                                   json.dumps({"display_name": "Ann Outbox", "version": me["version"]}))
        self.assertEqual(cmd.status, fe.OutboxStatus.PENDING)
        report = phone.outbox_flush(self.url, token)
        self.assertEqual((report.sent, report.failed, report.pending), (1, 0, 0), report)
        done = phone.outbox_list()[0]
        self.assertEqual(done.status, fe.OutboxStatus.SENT)
        self.assertEqual(done.last_http_status, 200)
        self.assertEqual(done.attempts, 1)
        self.assertEqual(json.loads(done.response_body)["display_name"], "Ann Outbox")
        self.assertEqual(self.call("GET", "/api/v1/me", token=token)["display_name"], "Ann Outbox")

        # A revoked token is Unauthorized, not a network error.
        self.call("POST", "/api/v1/auth/logout", {}, token=token)
        with self.assertRaises(fe.FitEdgeError.Unauthorized):
            phone.sync_now(self.url, token)


if __name__ == "__main__":
    unittest.main()
