// The FitEdge engine driven from Kotlin on the JVM, through the generated bindings and JNA.
// Built and run by scripts/test-bindings; mirrors the usage example in bindings/android/README.md.
package dev.fitedge.test

import dev.fitedge.*
import java.io.File
import java.nio.file.Files

const val T0 = 1_763_700_000_000L
val KEY = ByteArray(32) { it.toByte() }

class ManualClock(var t: Long) : EngineClock {
    override fun nowMs(): Long = t
}

class Collect : LiveMetricsListener {
    val seen = mutableListOf<LiveMetrics>()
    override fun onLiveMetrics(metrics: LiveMetrics) { seen += metrics }
}

fun check(cond: Boolean, msg: () -> String) { if (!cond) throw AssertionError(msg()) }

inline fun <reified E : Throwable> expect(block: () -> Unit): E {
    try { block() } catch (e: Throwable) {
        if (e is E) return e
        throw AssertionError("expected ${E::class.simpleName}, got $e")
    }
    throw AssertionError("expected ${E::class.simpleName}, nothing was thrown")
}

fun sharedFit(name: String): String {
    val shared = System.getenv("FITEDGE_SHARED_DIR") ?: "../shared"
    val f = File(shared, "data/fit/$name")
    check(f.exists()) { "shared recordings missing at ${f.path} (set FITEDGE_SHARED_DIR)" }
    return f.path
}

class Fixture {
    val dir: File = Files.createTempDirectory("fitedge").toFile()
    val db = File(dir, "fitedge.db").path
    val clock = ManualClock(T0)
    val profile = AthleteProfile(weightKg = 72.0, sex = Sex.MALE, birthYear = 1985,
        hrMaxBpm = 188u, hrRestBpm = 50u, ftpW = 250u)
    var engine = Engine.openWithClock(db, KEY, profile, clock)

    fun ride(seconds: Int) {
        engine.startWorkout(Sport.CYCLING)
        for (s in 0 until seconds) {
            clock.t = T0 + s * 1000L
            val batch = listOf(
                Sample(clock.t, Reading.Power(watts = 200.0 + s % 50)),
                Sample(clock.t, Reading.Speed(metresPerSecond = 8.0)),
            )
            if (s % 2 == 0) engine.recordSamples(batch) else batch.forEach { engine.recordSample(it) }
            // Heart rate from a chest strap as the raw 0x2A37 notification of the app's own stack.
            engine.feedNotification("strap-1", "180D", "2A37", byteArrayOf(0x00, (130 + s % 20).toByte()), clock.t)
        }
        clock.t = T0 + seconds * 1000L
    }

    fun close() { engine.close(); dir.deleteRecursively() }
}

fun aWholeWorkoutWithLiveMetricsAndHistory() {
    val f = Fixture()
    val listener = Collect()
    val sub = f.engine.subscribeLiveMetrics(listener)
    f.ride(300)
    check(listener.seen.size > 250) { "live metrics calls: ${listener.seen.size}" }
    val live = listener.seen.last()
    check(live.state == WorkoutState.ACTIVE) { "state ${live.state}" }
    check(live.distanceM > 2000) { "distance ${live.distanceM}" }
    check(live.heartRateBpm != null) { "no heart rate from the notifications" }
    sub.cancel()
    val n = listener.seen.size
    val summary = f.engine.completeWorkout()
    check(listener.seen.size == n) { "a cancelled subscription was called" }
    check(summary.sport == Sport.CYCLING) { "sport" }
    check(Math.abs(summary.timerS - 300.0) <= 1.0) { "timer ${summary.timerS}" }
    check(Math.abs(summary.distanceM!! - 2400.0) <= 30.0) { "distance ${summary.distanceM}" }
    check(summary.avgHeartRateBpm!! > 130) { "avg HR ${summary.avgHeartRateBpm}" }
    check(summary.trainingStressScore != null) { "TSS" }
    val page = f.engine.listWorkouts(10u)
    check(page.items.map { it.id } == listOf(summary.id)) { "history ${page.items}" }
    check(f.engine.workoutSummary(summary.id.take(8)).id == summary.id) { "summary by prefix" }
    f.close()
}

fun importADeviceRecording() {
    val f = Fixture()
    val stored = f.engine.importFile(sharedFit("Edge810-Vector-2013-08-16-15-35-10.fit"))
    check(stored.size == 1) { "stored ${stored.size}" }
    check(Math.abs(stored[0].distanceM!! - 41339) <= 420) { "distance ${stored[0].distanceM}" }
    check(f.engine.route(stored[0].id).geojson.contains("MultiLineString")) { "route" }
    f.close()
}

fun everyPublicErrorIsAKotlinException() {
    val f = Fixture()
    expect<FitEdgeException.InvalidState> { f.engine.completeWorkout() }
    f.engine.startWorkout(null)
    val tooShort = expect<FitEdgeException.InvalidState> { f.engine.completeWorkout() }
    check(tooShort.message!!.contains("1 minute")) { tooShort.message!! }
    f.clock.t += 120_000
    f.engine.completeWorkout()
    expect<FitEdgeException.InvalidState> { f.engine.completeWorkout() }
    expect<FitEdgeException.InvalidInput> { Engine.open(File(f.dir, "o.db").path, ByteArray(5)) }
    expect<FitEdgeException.NotFound> { f.engine.workoutSummary("ffffffff") }
    expect<FitEdgeException.Storage> { Engine.open(f.db, ByteArray(32)) }
    f.close()
}

fun anInterruptedRecordingIsRecoveredOnOpen() {
    val f = Fixture()
    f.ride(90)
    val id = f.engine.liveMetrics()!!.workoutId
    f.engine.close() // the app is killed without completing
    f.engine = Engine.openWithClock(f.db, KEY, null, f.clock)
    check(f.engine.workoutState() == WorkoutState.ACTIVE) { "state ${f.engine.workoutState()}" }
    check(f.engine.completeWorkout().id == id) { "a different workout was completed" }
    f.close()
}

/** A local address nothing listens on: connections are refused at once. */
fun closedPortUrl(): String {
    val port = java.net.ServerSocket(0, 1, java.net.InetAddress.getLoopbackAddress()).use { it.localPort }
    return "http://127.0.0.1:$port"
}

fun commandsEnqueuedOfflineAreListedInOrder() {
    val f = Fixture()
    val a = f.engine.outboxEnqueue("POST", "/api/v1/workouts/w1/kudos", "{\"emoji\":\"fire\"}")
    f.clock.t += 10
    val b = f.engine.outboxEnqueue("DELETE", "/api/v1/workouts/w1/kudos")
    val listed = f.engine.outboxList()
    check(listed.map { it.seq } == listOf(a.seq, b.seq) && a.seq < b.seq) { "order ${listed.map { it.seq }}" }
    check(listed.map { it.method } == listOf("POST", "DELETE")) { "methods" }
    val keys = listed.map { java.util.UUID.fromString(it.idempotencyKey) }
    check(keys.toSet().size == 2 && keys.all { it.version() == 4 }) { "keys $keys" }
    check(listed.all { it.status == OutboxStatus.PENDING && it.attempts == 0u }) { "status $listed" }
    check(listed.map { it.createdAtMs } == listOf(T0, T0 + 10)) { "the engine's clock" }
    expect<FitEdgeException.InvalidInput> { f.engine.outboxEnqueue("GET", "/api/v1/me") }
    f.close()
}

fun syncAgainstAnUnreachableServerIsANetworkError() {
    val f = Fixture()
    val e = expect<FitEdgeException> { f.engine.syncNow(closedPortUrl(), "token") }
    // Branchable: the app retries later on Network, signs in again on Unauthorized.
    val kind = when (e) {
        is FitEdgeException.Network -> "retry later"
        is FitEdgeException.Unauthorized -> "sign in again"
        else -> "other: $e"
    }
    check(kind == "retry later") { kind }
    expect<FitEdgeException.InvalidInput> { f.engine.syncNow("ftp://fitedge.example", "token") }
    expect<FitEdgeException.InvalidInput> { f.engine.setSyncRootCertificates("not a certificate") }
    f.close()
}

fun aFlushToAnUnreachableServerKeepsTheCommandsPending() {
    val f = Fixture()
    f.engine.outboxEnqueue("POST", "/api/v1/a", null)
    f.engine.outboxEnqueue("POST", "/api/v1/b", null)
    val r = f.engine.outboxFlush(closedPortUrl(), "token")
    check(r.sent == 0uL && r.failed == 0uL && r.pending == 2uL) { "report $r" }
    val listed = f.engine.outboxList()
    check(listed.all { it.status == OutboxStatus.PENDING }) { "status $listed" }
    check(listed[0].attempts == 1u && listed[0].lastError != null) { "head ${listed[0]}" }
    f.close()
}

class HeardSensors : SensorListener {
    val seen = mutableListOf<SensorStatus>()
    override fun onSensorStatus(status: SensorStatus) { seen += status }
}

// scripts/test-bindings builds the library without the `ble` feature, and this machine has no
// Bluetooth adapter: either way the scan must end in InvalidState, quickly, not crash or hang.
fun scanningWithoutABluetoothTransportIsAClearError() {
    val f = Fixture()
    val started = System.nanoTime()
    val seconds = { (System.nanoTime() - started) / 1e9 }
    if (hasBluetoothTransport()) {
        try {
            f.engine.scanSensors(500u)
        } catch (e: FitEdgeException.InvalidState) {
            check(e.message!!.contains("Bluetooth")) { e.message!! }
        }
        check(seconds() < 0.5 + 10 + 2) { "scan took ${seconds()} s" }
        f.close()
        return
    }
    val e = expect<FitEdgeException.InvalidState> { f.engine.scanSensors(5000u) }
    check(e.message!!.contains("no Bluetooth transport") && e.message!!.contains("feedNotification")) { e.message!! }
    check(seconds() < 1.0) { "refused after ${seconds()} s, not at once" }
    expect<FitEdgeException.InvalidState> { f.engine.connectSensors(listOf("AA:BB:CC:DD:EE:FF"), HeardSensors()) }
    check(f.engine.sensors().isEmpty()) { "sensors ${f.engine.sensors()}" }
    f.close()
}

fun fedSensorsAreListedWithTheirBattery() {
    val f = Fixture()
    f.engine.startWorkout(Sport.RUNNING)
    f.engine.feedNotification("strap-1", "180D", "2A37", byteArrayOf(0x00, 142.toByte()), T0)
    f.engine.feedNotification("strap-1", "180F", "2A19", byteArrayOf(77), T0 + 500)
    val s = f.engine.sensors().single()
    check(s.id == "strap-1" && s.kind == SensorKind.HEART_RATE && s.connected) { "$s" }
    check(s.batteryPct == 77.toUByte() && s.notifications == 2uL && s.errors == 0uL && !s.disabled) { "$s" }
    f.close()
}

/**
 * A real fitedge-server (dev mode, SQLite in a temporary directory) from FITEDGE_SERVER_BIN,
 * which scripts/test-bindings builds and sets.
 */
class LiveServer : AutoCloseable {
    val dir: File = Files.createTempDirectory("fitedge-server").toFile()
    val port = java.net.ServerSocket(0, 1, java.net.InetAddress.getLoopbackAddress()).use { it.localPort }
    val url = "http://127.0.0.1:$port"
    private val log = File(dir, "server.log")
    private val process: Process

    init {
        val bin = System.getenv("FITEDGE_SERVER_BIN")
            ?: throw AssertionError("FITEDGE_SERVER_BIN is not set (scripts/test-bindings builds the server and sets it)")
        check(File(bin).canExecute()) { "no fitedge-server at $bin" }
        process = ProcessBuilder(bin, "--dev", "--hash-cost", "insecure-fast",
            "--database-url", "sqlite://${dir.path}/s.db", "--bind", "127.0.0.1:$port")
            .redirectErrorStream(true).redirectOutput(log).start()
        val deadline = System.currentTimeMillis() + 30_000
        while (true) {
            try { call("GET", "/healthcheck"); break } catch (e: java.io.IOException) {
                if (!process.isAlive || System.currentTimeMillis() > deadline) {
                    throw AssertionError("the server did not start:\n" + log.readText().takeLast(4000))
                }
                Thread.sleep(100)
            }
        }
    }

    /** One JSON request; an answer of 400 or more fails the test with the server's message. */
    fun call(method: String, path: String, body: String? = null, token: String? = null): String {
        val c = java.net.URI(url + path).toURL().openConnection() as java.net.HttpURLConnection
        c.requestMethod = method
        c.connectTimeout = 1000
        c.readTimeout = 10_000
        c.setRequestProperty("content-type", "application/json")
        if (token != null) c.setRequestProperty("authorization", "Bearer $token")
        if (body != null) {
            c.doOutput = true
            c.outputStream.use { it.write(body.toByteArray()) }
        }
        val code = c.responseCode
        val text = (if (code < 400) c.inputStream else c.errorStream)?.bufferedReader()?.use { it.readText() } ?: ""
        if (code >= 400) throw AssertionError("$method $path: HTTP $code $text")
        return text
    }

    /** Registers, verifies (dev mode returns the token) and signs in; the bearer token. */
    fun signIn(email: String, password: String): String {
        val reg = call("POST", "/api/v1/auth/register",
            """{"email":"$email","password":"$password","birth_date":"1990-01-01","display_name":"Ann"}""")
        call("POST", "/api/v1/auth/verify-email", """{"token":"${jsonField(reg, "dev_token")}"}""")
        return jsonField(call("POST", "/api/v1/auth/login", """{"email":"$email","password":"$password"}"""), "access_token")
    }

    override fun close() {
        process.destroy()
        if (!process.waitFor(10, java.util.concurrent.TimeUnit.SECONDS)) process.destroyForcibly()
        dir.deleteRecursively()
    }
}

/** A top-level string or number field of a flat JSON answer (the JVM has no JSON parser). */
fun jsonField(json: String, key: String): String =
    Regex("\"$key\"\\s*:\\s*(?:\"([^\"]*)\"|(-?[0-9]+))").find(json)
        ?.groupValues?.drop(1)?.first { it.isNotEmpty() }
        ?: throw AssertionError("no $key in $json")

fun workoutsSyncToASecondDeviceAndTheOutboxIsDelivered() {
    LiveServer().use { server ->
        val token = server.signIn("ann@example.com", "correct horse battery!")
        val dir = Files.createTempDirectory("fitedge-sync").toFile()
        val phone = Engine.open(File(dir, "phone.db").path, KEY)
        // A ride of 60.4 s: just over the one-minute floor, so it is recorded.
        val stored = phone.importFile(sharedFit("garmin-fenix-5-bike.fit"))
        check(stored.size == 1) { "imported $stored" }
        phone.setWorkoutText(stored[0].id, "Morning ride", "felt easy")

        val sent = phone.syncNow(server.url, token)
        check(sent.docsSent > 0uL && sent.blobsUploaded > 0uL && sent.problems.isEmpty()) { "phone $sent" }

        // A second device of the same user shares the user's storage key.
        val tablet = Engine.open(File(dir, "tablet.db").path, KEY)
        check(tablet.listWorkouts(10u).items.isEmpty()) { "tablet starts empty" }
        val got = tablet.syncNow(server.url, token)
        check(got.docsDiscovered > 0uL && got.blobsDownloaded > 0uL && got.problems.isEmpty()) { "tablet $got" }
        check(got.workoutsAdded == 1uL) { "tablet $got" }
        val received = tablet.listWorkouts(10u).items
        check(received.map { it.id } == listOf(stored[0].id)) { "tablet history $received" }
        check(received[0].title == "Morning ride") { "title ${received[0].title}" }
        check(phone.syncNow(server.url, token).docsSent == 0uL) { "an unchanged round sends nothing" }

        // The outbox: a profile change queued offline, then delivered.
        val me = server.call("GET", "/api/v1/me", token = token)
        val cmd = phone.outboxEnqueue("PATCH", "/api/v1/users/${jsonField(me, "id")}",
            """{"display_name":"Ann Outbox","version":${jsonField(me, "version")}}""")
        check(cmd.status == OutboxStatus.PENDING) { "$cmd" }
        val report = phone.outboxFlush(server.url, token)
        check(report.sent == 1uL && report.failed == 0uL && report.pending == 0uL) { "$report" }
        val done = phone.outboxList()[0]
        check(done.status == OutboxStatus.SENT && done.lastHttpStatus == 200.toUShort()) { "$done" }
        check(jsonField(server.call("GET", "/api/v1/me", token = token), "display_name") == "Ann Outbox") { "profile not changed" }
        phone.close()
        tablet.close()
        dir.deleteRecursively()
    }
}

class Alerts : HealthAlertListener {
    val heard = mutableListOf<HealthAlert>()
    override fun onHealthAlert(alert: HealthAlert) { heard += alert }
}

fun healthAlertsReachAListener() {
    val f = Fixture()
    val alerts = Alerts()
    val sub = f.engine.subscribeHealthAlerts(alerts)
    val id = f.engine.startWorkout(Sport.RUNNING)
    listOf(150.0, 200.0, 201.0, 150.0, 30.0).forEachIndexed { i, bpm ->
        f.clock.t = T0 + i * 1000L
        f.engine.recordSample(Sample(f.clock.t, Reading.HeartRate(bpm = bpm)))
    }
    val got = alerts.heard.map { listOf(it.workoutId, it.channel, it.reason, it.value) }
    check(got == listOf(
        listOf(id, "heart_rate", "heart_rate_above_range", 200.0),
        listOf(id, "heart_rate", "heart_rate_below_range", 30.0),
    )) { "alerts $got" }
    sub.cancel()
    f.clock.t = T0 + 5000L
    f.engine.recordSample(Sample(f.clock.t, Reading.Spo2(percent = 80.0)))
    check(alerts.heard.size == 2) { "a cancelled subscription was called: ${alerts.heard}" }
    f.close()
}

fun main() {
    val tests = listOf(
        "a whole workout with live metrics and history" to ::aWholeWorkoutWithLiveMetricsAndHistory,
        "import a device recording" to ::importADeviceRecording,
        "every public error is a Kotlin exception" to ::everyPublicErrorIsAKotlinException,
        "an interrupted recording is recovered on open" to ::anInterruptedRecordingIsRecoveredOnOpen,
        "commands enqueued offline are listed in order" to ::commandsEnqueuedOfflineAreListedInOrder,
        "sync against an unreachable server is a Network error" to ::syncAgainstAnUnreachableServerIsANetworkError,
        "a flush to an unreachable server keeps the commands pending" to ::aFlushToAnUnreachableServerKeepsTheCommandsPending,
        "scanning without a Bluetooth transport is a clear error" to ::scanningWithoutABluetoothTransportIsAClearError,
        "fed sensors are listed with their battery" to ::fedSensorsAreListedWithTheirBattery,
        "health alerts reach a listener" to ::healthAlertsReachAListener,
        "workouts sync to a second device and the outbox is delivered" to ::workoutsSyncToASecondDeviceAndTheOutboxIsDelivered,
    )
    var failed = 0
    for ((name, t) in tests) {
        try { t(); println("test $name ... ok") } catch (e: Throwable) {
            failed++; println("test $name ... FAILED: $e")
        }
    }
    println("kotlin: ${tests.size - failed} passed, $failed failed")
    if (failed > 0) kotlin.system.exitProcess(1)
}
