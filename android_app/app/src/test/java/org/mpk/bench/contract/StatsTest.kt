package org.mpk.bench.contract

import org.junit.Assert.assertArrayEquals
import org.junit.Assert.assertEquals
import org.junit.Test

/**
 * Plain JVM unit tests (`./gradlew test`). The authoritative cross-check against runners/stats.py runs in
 * mpk's pytest suite (tests/integration/test_apps_kotlin_contract.py), which compiles this package with kotlinc.
 */
class StatsTest {
    @Test
    fun linearPercentilesMatchNumpy() {
        // numpy.quantile([1, 2, 3, 4], 0.9) == 3.7
        val s = LatencyStats.fromSamples(doubleArrayOf(4.0, 1.0, 3.0, 2.0))
        assertEquals(3.7, s.p90Ms, 1e-12)
        assertEquals(2.5, s.p50Ms, 1e-12)
    }

    @Test
    fun smallSampleCiIsHonestlyWide() {
        val s = LatencyStats.fromSamples(doubleArrayOf(10.0, 11.0, 12.0))
        assertArrayEquals(doubleArrayOf(10.0, 12.0), s.p50CiMs, 0.0)
    }

    @Test
    fun jsonRoundTrip() {
        val text = Json.write(mapOf("a" to listOf(1.5, 2L, null), "b" to "x\"y"))
        assertEquals(mapOf("a" to listOf(1.5, 2L, null), "b" to "x\"y"), Json.parse(text))
    }
}
