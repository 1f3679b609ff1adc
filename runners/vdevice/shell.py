"""A small sh for the virtual device. It never runs /bin/sh on the host.

It understands what mpk's harness and a person poking with ``adb shell`` use:
``;``, ``&&``, ``||``, ``|``, ``>``/``>>``/``2>``/``2>&1`` redirections, quotes,
``$?``/``$VAR`` expansion and globs (expanded inside the sandbox only).

The shell *receives* its commands: a ``{name: fn(shell, args, io) -> status}``
table (``runners.vdevice.toolbox.COMMANDS`` on the device: the POSIX tools of
``posix.py`` and the Android ones of ``android.py``). An unknown command answers
``sh: CMD: not found`` with exit 127, as a device would. Every command line ends
with an exit status in 0..255, whatever its arguments: a built-in that fails
reports why on stderr and returns non-zero, and output beyond
``device.max_output_bytes`` ends the command with status 1 instead of filling
the server's memory.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from runners.vdevice.sandbox import SandboxEscape

if TYPE_CHECKING:
    from runners.vdevice.device import DeviceState

log = logging.getLogger("mpk.vdevice")

#: ``sh -c`` / ``run-as`` nesting deeper than this is refused (each level is a Python frame, not a process).
MAX_DEPTH = 8

# A word is a list of (kind, text) parts; kind is "lit" (unquoted), "dq" or "sq".
Word = list[tuple[str, str]]

_OPS = ("&&", "||", ";", "|", "\n")
_VAR = re.compile(r"\$(\?|[A-Za-z_][A-Za-z0-9_]*|\{[A-Za-z_][A-Za-z0-9_]*\})")


class ShellSyntaxError(Exception):
    pass


@dataclasses.dataclass
class Command:
    words: list[Word]
    redirects: list[tuple[str, Word | None]]  # (op, target); op in > >> 2> 2>> 2>&1 <


def tokenize(line: str) -> list[Word | str]:
    """Split ``line`` into words and operator strings, keeping quote kinds for later expansion."""
    out: list[Word | str] = []
    word: Word = []
    cur = ""
    i, n = 0, len(line)

    def flush_lit() -> None:
        nonlocal cur
        if cur:
            word.append(("lit", cur))
            cur = ""

    def end_word() -> None:
        nonlocal word
        flush_lit()
        if word:
            out.append(word)
            word = []

    while i < n:
        c = line[i]
        if c in " \t":
            end_word()
            i += 1
        elif c == "'":
            j = line.find("'", i + 1)
            if j < 0:
                raise ShellSyntaxError("unterminated '")
            flush_lit()
            word.append(("sq", line[i + 1 : j]))
            i = j + 1
        elif c == '"':
            flush_lit()
            j, buf = i + 1, ""
            while j < n and line[j] != '"':
                if line[j] == "\\" and j + 1 < n and line[j + 1] in '"\\$`':
                    buf += line[j + 1]
                    j += 2
                    continue
                buf += line[j]
                j += 1
            if j >= n:
                raise ShellSyntaxError('unterminated "')
            word.append(("dq", buf))
            i = j + 1
        elif c == "\\" and i + 1 < n:
            flush_lit()
            word.append(("sq", line[i + 1]))
            i += 2
        elif c == "#" and not cur and not word:
            j = line.find("\n", i)
            i = n if j < 0 else j
        elif line.startswith("2>&1", i):
            end_word()
            out.append("2>&1")
            i += 4
        elif line.startswith(("2>>", "2>"), i) and not cur and not word:
            op = "2>>" if line.startswith("2>>", i) else "2>"
            end_word()
            out.append(op)
            i += len(op)
        elif c in "><":
            end_word()
            op = ">>" if line.startswith(">>", i) else c
            out.append(op)
            i += len(op)
        elif line.startswith(("&&", "||"), i):
            end_word()
            out.append(line[i : i + 2])
            i += 2
        elif c in ";|\n":
            end_word()
            out.append(c)
            i += 1
        elif c == "&":
            raise ShellSyntaxError("background jobs (&) are not supported")
        else:
            cur += c
            i += 1
    end_word()
    return out


def parse(line: str) -> list[tuple[str, list[Command]]]:
    """``[(connector, pipeline)]``; the connector says when the pipeline runs (";", "&&", "||")."""
    toks = tokenize(line)
    chain: list[tuple[str, list[Command]]] = []
    connector = ";"
    pipeline: list[Command] = []
    cmd = Command([], [])
    i = 0
    while i <= len(toks):
        t = toks[i] if i < len(toks) else ";"
        if isinstance(t, list):
            cmd.words.append(t)
        elif t in (">", ">>", "2>", "2>>", "<"):
            if i + 1 >= len(toks) or not isinstance(toks[i + 1], list):
                raise ShellSyntaxError(f"syntax error: {t} needs a file name")
            cmd.redirects.append((t, toks[i + 1]))  # type: ignore[arg-type]
            i += 1
        elif t == "2>&1":
            cmd.redirects.append((t, None))
        elif t in _OPS or t in ("&&", "||"):
            if cmd.words or cmd.redirects:
                pipeline.append(cmd)
            elif t == "|" or (t in ("&&", "||") and not pipeline):
                raise ShellSyntaxError(f"syntax error: unexpected '{t}'")
            cmd = Command([], [])
            if t != "|":
                if pipeline:
                    chain.append((connector, pipeline))
                pipeline = []
                connector = ";" if t == "\n" else t
        i += 1
    return chain


class OutputLimit(Exception):
    """A command produced more output than the device buffers for one command line."""


@dataclasses.dataclass
class Io:
    stdin: bytes = b""
    stdout: bytearray = dataclasses.field(default_factory=bytearray)
    stderr: bytearray = dataclasses.field(default_factory=bytearray)
    limit: int = 64 << 20

    def out(self, text: str | bytes) -> None:
        data = text.encode("utf-8", "surrogateescape") if isinstance(text, str) else text
        if len(self.stdout) + len(data) > self.limit:
            raise OutputLimit(f"output exceeds {self.limit} bytes")
        self.stdout += data

    def err(self, text: str) -> None:
        if len(self.stderr) < self.limit:
            self.stderr += text.encode("utf-8", "surrogateescape")[: self.limit - len(self.stderr)]


class ExitShell(Exception):
    def __init__(self, code: int) -> None:
        self.code = code & 0xFF


Builtin = Callable[["Shell", list[str], Io], int]


class Shell:
    """One shell session: cwd, variables and ``$?`` survive across commands in one ``shell:`` line.

    ``commands`` is the table of built-ins this shell can run (see module docstring); ``depth`` counts
    enclosing shells (``sh -c``, ``run-as``) so a self-nesting command line cannot exhaust the stack.
    """

    def __init__(self, device: DeviceState, commands: Mapping[str, Builtin], *, cwd: str = "/", depth: int = 0) -> None:
        self.device = device
        self.fs = device.fs
        self.cwd = cwd
        self.vars: dict[str, str] = {"HOME": "/", "PATH": "/system/bin", "USER": "shell"}
        self.status = 0
        self.merge_stderr = False
        self.commands = commands
        self.depth = depth

    def subshell(self, *, cwd: str | None = None) -> Shell | None:
        """A child shell with the same commands (``sh -c``, ``run-as``); None when nested too deep."""
        if self.depth >= MAX_DEPTH:
            return None
        return Shell(self.device, self.commands, cwd=cwd or self.cwd, depth=self.depth + 1)

    def new_io(self, stdin: bytes = b"") -> Io:
        return Io(stdin=stdin, limit=self.device.max_output_bytes)

    # -- expansion ----------------------------------------------------------------------------------------------
    def _expand_vars(self, text: str) -> str:
        def sub(m: re.Match[str]) -> str:
            name = m.group(1).strip("{}")
            return str(self.status) if name == "?" else self.vars.get(name, "")

        return _VAR.sub(sub, text)

    def expand(self, word: Word, *, glob: bool = True) -> list[str]:
        text, globbable = "", False
        for kind, part in word:
            if kind == "sq":
                text += part
            else:
                part = self._expand_vars(part)
                if kind == "lit" and any(c in part for c in "*?["):
                    globbable = True
                text += part
        if glob and globbable:
            hits = self.fs.glob(text, self.cwd)
            if hits:
                # Keep relative patterns relative, as sh does.
                return hits if text.startswith("/") else [h[len(self.cwd.rstrip("/")) + 1 :] for h in hits]
        return [text]

    # -- execution ----------------------------------------------------------------------------------------------
    def run(self, line: str, stdin: bytes = b"", *, merge_stderr: bool = False) -> tuple[int, bytes, bytes]:
        """Run a command line; returns (exit status 0..255, stdout, stderr).

        ``merge_stderr`` interleaves each command's stderr into stdout in order, as a v1 ``shell:`` (one byte
        stream) shows it; otherwise a marker echoed after a failing command would arrive before its message.
        """
        self.merge_stderr = merge_stderr
        io = self.new_io()
        try:
            chain = parse(line)
        except ShellSyntaxError as e:
            self.status = 2
            return 2, b"", f"sh: {e}\n".encode()
        try:
            for connector, pipeline in chain:
                if (connector == "&&" and self.status != 0) or (connector == "||" and self.status == 0):
                    continue
                self.status = self._pipeline(pipeline, io, stdin)
        except ExitShell as e:
            self.status = e.code
        except OutputLimit as e:
            io.err(f"sh: {e}\n")
            self.status = 1
        return self.status, bytes(io.stdout), bytes(io.stderr)

    def _pipeline(self, pipeline: list[Command], io: Io, stdin: bytes) -> int:
        data = stdin
        status = 0
        for k, cmd in enumerate(pipeline):
            last = k == len(pipeline) - 1
            sub = self.new_io(data)
            status = self._command(cmd, sub)
            if last:
                io.out(bytes(sub.stdout))
            if self.merge_stderr:
                io.out(bytes(sub.stderr))
            else:
                io.err(sub.stderr.decode("utf-8", "surrogateescape"))
            data = bytes(sub.stdout)
        return status

    def _command(self, cmd: Command, io: Io) -> int:
        argv: list[str] = []
        for w in cmd.words:
            argv.extend(self.expand(w))
        # NAME=value alone sets a variable (no env-prefix support: nothing mpk sends needs it).
        if argv and all(re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", a, flags=re.S) for a in argv):
            for a in argv:
                k, _, v = a.partition("=")
                self.vars[k] = v
            return 0
        inner = self.new_io(io.stdin)
        for op, target in cmd.redirects:
            if op == "<" and target is not None:
                name = self.expand(target, glob=False)[0]
                try:
                    inner.stdin = self.fs.read_bytes(name, self.cwd, limit=inner.limit)
                except (OSError, SandboxEscape) as e:
                    io.err(f"sh: {name}: {strerror(e)}\n")
                    return 1
        status = self.call(argv, inner) if argv else 0
        out, err = inner.stdout, inner.stderr
        for op, target in cmd.redirects:
            if op == "2>&1":
                out, err = out + err, bytearray()
                continue
            if op == "<" or target is None:
                continue
            name = self.expand(target, glob=False)[0]
            data = out if op in (">", ">>") else err
            if name != "/dev/null":
                try:
                    self.fs.write_bytes(name, bytes(data), self.cwd, append=op.endswith(">>"))
                except (OSError, SandboxEscape) as e:
                    io.err(f"sh: can't create {name}: {strerror(e)}\n")
                    return 1
            if op in (">", ">>"):
                out = bytearray()
            else:
                err = bytearray()
        io.out(bytes(out))
        io.err(err.decode("utf-8", "surrogateescape"))
        return status

    def call(self, argv: list[str], io: Io) -> int:
        """Run one already-expanded command (also used by ``run-as``); always an exit status in 0..255."""
        name = argv[0]
        fn = self.commands.get(name.rsplit("/", 1)[-1] if name.startswith(("/system/bin/", "/bin/")) else name)
        if fn is None:
            io.err(f"sh: {name}: not found\n")
            return 127
        try:
            return int(fn(self, argv[1:], io)) & 0xFF
        except ExitShell:
            raise
        except SandboxEscape as e:
            io.err(f"{name}: {e.args[0] if e.args else ''}: Permission denied\n")
            return 1
        except OSError as e:
            io.err(f"{name}: {strerror(e)}\n")  # never e.filename: that is a host path
            return 1
        except OutputLimit as e:
            io.err(f"{name}: {e}\n")
            return 1
        except Exception:  # a bug in one built-in must not cost the client its exit status
            log.exception("vdevice: built-in %r crashed on %r", name, argv[1:])
            io.err(f"{name}: internal error (logged by the virtual device)\n")
            return 1

    def host_path(self, path: str) -> Path:
        return self.fs.resolve(path, self.cwd)


def strerror(e: BaseException) -> str:
    if isinstance(e, SandboxEscape):
        return "Permission denied"
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    return str(e)
