// The cost of feeding one sample through the FFI from Kotlin on the JVM: one call per sample
// against batches of 100. Run by scripts/bench-ffi; figures go to BENCHMARKS.md.
package dev.fitedge.bench

import dev.fitedge.*
import java.nio.file.Files

class Clock(var t: Long) : EngineClock { override fun nowMs(): Long = t }

fun main(args: Array<String>) {
    val n = args.getOrNull(0)?.toInt() ?: 200_000
    val dir = Files.createTempDirectory("fitedge-bench").toFile()
    val clock = Clock(1_763_700_000_000L)
    val engine = Engine.openWithClock(dir.resolve("b.db").path, ByteArray(32) { 7 }, null, clock)
    fun samples(start: Long) = List(n) { i -> Sample(start + i * 250L, Reading.Power(watts = 150.0 + i % 100)) }
    fun run(label: String, batch: Int): Double {
        val best = (0 until 5).minOf { round ->
            clock.t = 1_763_700_000_000L + round * 10_000_000L
            engine.startWorkout(Sport.CYCLING)
            val data = samples(clock.t)
            val t0 = System.nanoTime()
            // The clock stands at the last sample while they are fed: none is ahead of it (one
            // more than two minutes ahead is rejected as ahead_of_clock, another path), and it does
            // not move, so this fast-forward does not flush every four samples.
            clock.t = data.last().timestampMs
            if (batch == 1) data.forEach { engine.recordSample(it) }
            else data.chunked(batch).forEach { engine.recordSamples(it) }
            val ns = (System.nanoTime() - t0).toDouble() / n
            engine.cancelWorkout()
            ns
        }
        println("%-28s %8.0f ns per sample (best of 5, %d samples)".format(label, best, n))
        return best
    }
    // A call that carries nothing: the fixed cost of crossing the FFI from the JVM.
    repeat(3) {
        val calls = 200_000
        val t0 = System.nanoTime()
        repeat(calls) { engine.workoutState() }
        println("%-28s %8.0f ns per call".format("empty call (workoutState)", (System.nanoTime() - t0).toDouble() / calls))
    }
    run("warm-up", 100)
    val single = run("one call per sample", 1)
    val batched = run("batches of 100", 100)
    println("batch is %.1fx cheaper per sample".format(single / batched))
    engine.close()
    dir.deleteRecursively()
}
