"""printf as POSIX describes it, for the virtual device's shell: a pure function, no I/O.

Escapes (``\\n \\t \\\\ \\NNN \\xHH``; in ``%b`` and ``echo -e`` also ``\\0NNN`` and ``\\c``, which
stops all output), conversions ``%[flags][width][.prec]{diouxXeEfFgGcsb%}`` with ``*`` widths, and the
format reused while arguments remain::

    >>> printf("%d %d\\n", ["1", "2", "3"])
    ('1 2\\n3 0\\n', [], 0)
    >>> printf("%d", ["abc"])
    ('0', ["invalid number 'abc'"], 1)

An escape that means nothing (``\\q``, ``\\x`` without hex digits) is printed as written, as toybox does;
a width or precision above :data:`MAX_FIELD` is refused (``%999999999d`` would allocate a gigabyte).
"""

from __future__ import annotations

import re

#: largest field width or precision printf accepts
MAX_FIELD = 4096


class PrintfUsage(ValueError):
    """The format cannot be printed at all (a field wider than MAX_FIELD)."""


_SIMPLE_ESC = {"\\": "\\", "a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v",
               '"': '"', "'": "'"}  # fmt: skip
_CONV = re.compile(r"%([-+ #0]*)(\*|\d+)?(?:\.(\*|\d*))?([diouxXeEfFgGcsb%])?")


def escapes(text: str, *, in_b: bool = False) -> tuple[str, bool]:
    """Backslash escapes as printf's format (or ``%b``/``echo -e`` when ``in_b``) reads them.

    Returns (text, stop): ``\\c`` in ``%b``/``echo -e`` stops all further output. An escape that
    means nothing (``\\q``, a ``\\x`` without hex digits) is printed as written, like toybox does.
    """
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c != "\\" or i + 1 >= n:
            out.append(c)
            i += 1
            continue
        e = text[i + 1]
        if e in _SIMPLE_ESC:
            out.append(_SIMPLE_ESC[e])
            i += 2
        elif e == "c" and in_b:
            return "".join(out), True
        elif e == "x":
            m = re.match(r"[0-9A-Fa-f]{1,2}", text[i + 2 :])
            if m:
                out.append(chr(int(m.group(), 16)))
                i += 2 + len(m.group())
            else:
                out.append("\\x")
                i += 2
        elif e in "01234567":
            # format strings: \NNN (1-3 digits); %b and echo -e: \0NNN (the 0 plus up to 3 digits)
            start = i + 2 if (in_b and e == "0") else i + 1
            m = re.match(r"[0-7]{1,3}", text[start:])
            digits = m.group() if m else "0"
            out.append(chr(int(digits, 8) & 0xFF))
            i = start + (len(m.group()) if m else 0)
        else:
            out.append("\\" + e)
            i += 2
    return "".join(out), False


def _num_arg(arg: str, warnings: list[str], *, integer: bool) -> int | float:
    """A printf numeric argument: decimal, 0x hex, 0 octal, or 'c (the character's code); bad ones warn."""
    a = arg.strip()
    if a[:1] in ("'", '"') and len(a) >= 2:
        return ord(a[1])
    m = re.fullmatch(r"([+-]?)(0[xX][0-9a-fA-F]{1,16}|0[0-7]{0,22}|[1-9]\d{0,19})", a)
    if m:
        sign, digits = m.groups()
        base = 16 if digits[:2].lower() == "0x" else 8 if digits.startswith("0") and len(digits) > 1 else 10
        value = int(digits[2:] if base == 16 else digits, base)
        return -value if sign == "-" else value
    if not integer and re.fullmatch(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d{1,3})?|[+-]?(inf|nan)", a, flags=re.I):
        return float(a)
    warnings.append(f"invalid number '{arg}'")
    raise _BadNumber


class _BadNumber(Exception):
    pass


class _Args:
    """printf's arguments, consumed left to right; missing ones read as empty/zero."""

    def __init__(self, items: list[str]) -> None:
        self.items, self.pos = items, 0

    def take(self) -> str | None:
        if self.pos >= len(self.items):
            return None
        self.pos += 1
        return self.items[self.pos - 1]


def _field(spec: str | None, args: _Args, warnings: list[str]) -> str:
    if spec != "*":
        if spec and int(spec) > MAX_FIELD:
            raise PrintfUsage(f"field width or precision {spec} is larger than {MAX_FIELD}")
        return spec or ""
    value = args.take() or "0"
    try:
        n = int(value)
    except ValueError:
        warnings.append(f"invalid number '{value}'")
        n = 0
    if abs(n) > MAX_FIELD:
        raise PrintfUsage(f"field width or precision {n} is larger than {MAX_FIELD}")
    return str(n)


def _format_once(fmt: str, args: _Args, warnings: list[str]) -> tuple[str, bool, int]:
    """One pass of ``fmt`` over the next arguments: (text, stop after \\c, status)."""
    out: list[str] = []
    pos, status = 0, 0
    for m in _CONV.finditer(fmt):
        out.append(escapes(fmt[pos : m.start()])[0])
        pos = m.end()
        flags, width, prec, conv = m.groups()
        if conv is None:  # a lone or malformed '%' is printed as written
            out.append(m.group())
            continue
        if conv == "%":
            out.append("%")
            continue
        width = _field(width, args, warnings)
        prec = _field(prec, args, warnings) if prec is not None else None
        arg = args.take()
        spec = "%" + flags + width + ("." + prec if prec is not None else "")
        if conv in "diouxX":
            try:
                v = int(_num_arg(arg, warnings, integer=True)) if arg is not None else 0
            except _BadNumber:
                v, status = 0, 1
            if conv == "u" and v < 0:
                v &= (1 << 64) - 1
            out.append((spec + ("d" if conv in "iu" else conv)) % v)
        elif conv in "eEfFgG":
            try:
                f = float(_num_arg(arg, warnings, integer=False)) if arg is not None else 0.0
            except _BadNumber:
                f, status = 0.0, 1
            out.append((spec + conv) % f)
        elif conv == "c":
            out.append((spec + "s") % (arg[:1] if arg else ""))
        elif conv == "b":
            text, stop = escapes(arg or "", in_b=True)
            out.append((spec + "s") % text)
            if stop:
                return "".join(out), True, status
        else:
            out.append((spec + "s") % (arg or ""))
    out.append(escapes(fmt[pos:])[0])
    return "".join(out), False, status


def printf(fmt: str, args: list[str]) -> tuple[str, list[str], int]:
    """(output, warnings, status): status 1 when an argument was not a number (it printed as 0)."""
    feed, warnings, out, status = _Args(args), [], [], 0
    while True:
        before = feed.pos
        text, stop, st = _format_once(fmt, feed, warnings)
        out.append(text)
        status = status or st
        if stop or feed.pos == before or feed.pos >= len(feed.items):
            return "".join(out), warnings, status
