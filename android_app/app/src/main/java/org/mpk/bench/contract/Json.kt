package org.mpk.bench.contract

/**
 * A tiny JSON reader and writer with no Android dependency.
 *
 * Why not org.json: it is part of the Android framework, so the contract code
 * could not be compiled and tested on a plain JVM (mpk's CI compiles this
 * package with kotlinc and compares its numbers with runners/stats.py).
 *
 * Values map to Kotlin as: object -> Map<String, Any?> (insertion-ordered),
 * array -> List<Any?>, string -> String, number -> Double (or Long when it has
 * no fraction/exponent), true/false -> Boolean, null -> null.
 */
object Json {
    fun parse(text: String): Any? {
        val p = Parser(text)
        p.skipWs()
        val v = p.value()
        p.skipWs()
        if (p.pos != text.length) throw JsonException("trailing characters at offset ${p.pos}")
        return v
    }

    /** Serialise maps, lists, strings, numbers, booleans and null. NaN/Infinity become null (JSON has neither). */
    fun write(value: Any?): String {
        val sb = StringBuilder()
        writeTo(sb, value, 0)
        return sb.toString()
    }

    private fun writeTo(sb: StringBuilder, v: Any?, indent: Int) {
        when (v) {
            null -> sb.append("null")
            is Boolean -> sb.append(if (v) "true" else "false")
            is Int, is Long, is Short, is Byte -> sb.append(v.toString())
            is Float -> writeDouble(sb, v.toDouble())
            is Double -> writeDouble(sb, v)
            is String -> writeString(sb, v)
            is Map<*, *> -> {
                if (v.isEmpty()) { sb.append("{}"); return }
                sb.append("{\n")
                var first = true
                for ((k, item) in v) {
                    if (!first) sb.append(",\n")
                    first = false
                    pad(sb, indent + 1)
                    writeString(sb, k.toString())
                    sb.append(": ")
                    writeTo(sb, item, indent + 1)
                }
                sb.append("\n")
                pad(sb, indent)
                sb.append("}")
            }
            is Iterable<*> -> {
                val items = v.toList()
                if (items.isEmpty()) { sb.append("[]"); return }
                // Numbers stay on one line: samples_ms can hold thousands of values.
                val flat = items.all { it == null || it is Number || it is Boolean }
                if (flat) {
                    sb.append("[")
                    items.forEachIndexed { i, item -> if (i > 0) sb.append(", "); writeTo(sb, item, indent) }
                    sb.append("]")
                    return
                }
                sb.append("[\n")
                items.forEachIndexed { i, item ->
                    if (i > 0) sb.append(",\n")
                    pad(sb, indent + 1)
                    writeTo(sb, item, indent + 1)
                }
                sb.append("\n")
                pad(sb, indent)
                sb.append("]")
            }
            is DoubleArray -> writeTo(sb, v.toList(), indent)
            is IntArray -> writeTo(sb, v.toList(), indent)
            is LongArray -> writeTo(sb, v.toList(), indent)
            else -> throw JsonException("cannot serialise ${v.javaClass.name}")
        }
    }

    private fun pad(sb: StringBuilder, n: Int) {
        for (i in 0 until n) sb.append("  ")
    }

    private fun writeDouble(sb: StringBuilder, d: Double) {
        if (d.isNaN() || d.isInfinite()) { sb.append("null"); return }
        // Double.toString is the shortest repr that round-trips, like Python's repr; "1.0E-5" is valid JSON.
        sb.append(d.toString())
    }

    private fun writeString(sb: StringBuilder, s: String) {
        sb.append('"')
        for (c in s) {
            when (c) {
                '"' -> sb.append("\\\"")
                '\\' -> sb.append("\\\\")
                '\n' -> sb.append("\\n")
                '\r' -> sb.append("\\r")
                '\t' -> sb.append("\\t")
                '\b' -> sb.append("\\b")
                '\u000C' -> sb.append("\\f")
                else -> if (c < ' ') sb.append(String.format("\\u%04x", c.toInt())) else sb.append(c)
            }
        }
        sb.append('"')
    }

    private class Parser(val s: String) {
        var pos = 0

        fun skipWs() {
            while (pos < s.length && (s[pos] == ' ' || s[pos] == '\n' || s[pos] == '\r' || s[pos] == '\t')) pos++
        }

        fun value(): Any? {
            if (pos >= s.length) throw JsonException("unexpected end of input")
            return when (val c = s[pos]) {
                '{' -> obj()
                '[' -> arr()
                '"' -> str()
                't' -> literal("true", true)
                'f' -> literal("false", false)
                'n' -> literal("null", null)
                else -> if (c == '-' || c.isDigit()) num() else throw JsonException("unexpected '$c' at offset $pos")
            }
        }

        private fun literal(word: String, v: Any?): Any? {
            if (!s.startsWith(word, pos)) throw JsonException("bad literal at offset $pos")
            pos += word.length
            return v
        }

        private fun obj(): Map<String, Any?> {
            val m = LinkedHashMap<String, Any?>()
            pos++
            skipWs()
            if (peek() == '}') { pos++; return m }
            while (true) {
                skipWs()
                if (peek() != '"') throw JsonException("expected a key at offset $pos")
                val k = str()
                skipWs()
                expect(':')
                skipWs()
                m[k] = value()
                skipWs()
                when (peek()) {
                    ',' -> pos++
                    '}' -> { pos++; return m }
                    else -> throw JsonException("expected ',' or '}' at offset $pos")
                }
            }
        }

        private fun arr(): List<Any?> {
            val l = ArrayList<Any?>()
            pos++
            skipWs()
            if (peek() == ']') { pos++; return l }
            while (true) {
                skipWs()
                l.add(value())
                skipWs()
                when (peek()) {
                    ',' -> pos++
                    ']' -> { pos++; return l }
                    else -> throw JsonException("expected ',' or ']' at offset $pos")
                }
            }
        }

        private fun str(): String {
            expect('"')
            val sb = StringBuilder()
            while (true) {
                if (pos >= s.length) throw JsonException("unterminated string")
                val c = s[pos++]
                when (c) {
                    '"' -> return sb.toString()
                    '\\' -> {
                        val e = s[pos++]
                        when (e) {
                            '"', '\\', '/' -> sb.append(e)
                            'n' -> sb.append('\n')
                            'r' -> sb.append('\r')
                            't' -> sb.append('\t')
                            'b' -> sb.append('\b')
                            'f' -> sb.append('\u000C')
                            'u' -> { sb.append(s.substring(pos, pos + 4).toInt(16).toChar()); pos += 4 }
                            else -> throw JsonException("bad escape at offset $pos")
                        }
                    }
                    else -> sb.append(c)
                }
            }
        }

        private fun num(): Any {
            val start = pos
            if (peek() == '-') pos++
            while (pos < s.length && (s[pos].isDigit() || s[pos] in ".eE+-")) pos++
            val t = s.substring(start, pos)
            return if (t.any { it == '.' || it == 'e' || it == 'E' }) t.toDouble() else t.toLong()
        }

        private fun peek(): Char = if (pos < s.length) s[pos] else '\u0000'

        private fun expect(c: Char) {
            if (peek() != c) throw JsonException("expected '$c' at offset $pos")
            pos++
        }
    }
}

class JsonException(message: String) : RuntimeException(message)
