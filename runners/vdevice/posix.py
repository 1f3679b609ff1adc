"""The POSIX tools of the virtual device's shell: files, text, tests, time. Each is ``fn(shell, args, io) -> status``.

Output formats follow toybox/Android closely enough for mpk's parsers and for a
person reading ``adb shell`` output; they are not byte-for-byte copies. Every
tool answers every argument list with an exit status: a malformed argument is
one line on stderr and a non-zero status (1, or 2 for usage errors as toybox
does), never an exception. Where the device must protect the host, a tool
refuses what a phone would allow and says so: ``sleep`` waits at most
``device.sleep_cap_s`` (60 s), ``chmod`` sets no setuid/setgid/sticky bit and
always leaves the owner read/write (so the device can clean up), and ``cp``/
``mv`` refuse to copy or move a folder into itself.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import shutil
import stat as stat_mod
import time
from pathlib import Path

from runners.vdevice.printf import PrintfUsage, escapes, printf
from runners.vdevice.sandbox import SandboxEscape
from runners.vdevice.shell import Builtin, ExitShell, Io, Shell, strerror

POSIX_COMMANDS: dict[str, Builtin] = {}


def command(*names: str):
    def wrap(fn: Builtin) -> Builtin:
        for n in names:
            POSIX_COMMANDS[n] = fn
        return fn

    return wrap


class _Usage(Exception):
    """A malformed argument list; the message is printed as ``NAME: message`` with status 2."""


def _flags(name: str, args: list[str], known: str) -> tuple[set[str], list[str]]:
    """Split leading single-letter flags (``-rf`` -> {r, f}) from operands; unknown letters are a usage error."""
    flags: set[str] = set()
    rest = list(args)
    while rest and rest[0].startswith("-") and len(rest[0]) > 1 and rest[0] != "--":
        letters = rest.pop(0)[1:]
        bad = [c for c in letters if c not in known]
        if bad:
            raise _Usage(f"invalid option -- '{bad[0]}'")
        flags |= set(letters)
    if rest and rest[0] == "--":
        rest.pop(0)
    return flags, rest


def _usage_errors(fn: Builtin) -> Builtin:
    def run(sh: Shell, args: list[str], io: Io) -> int:
        try:
            return fn(sh, args, io)
        except _Usage as e:
            io.err(f"{fn.__name__.lstrip('_').replace('_', '-')}: {e}\n")
            return 2

    run.__name__ = fn.__name__
    return run


def _input(sh: Shell, paths: list[str], io: Io) -> bytes:
    """The named files concatenated, or stdin when none are named (as cat, grep, head... read)."""
    if not paths:
        return io.stdin
    return b"".join(sh.fs.read_bytes(p, sh.cwd, limit=io.limit) for p in paths)


def _int(text: str, what: str, *, minimum: int | None = 0) -> int:
    if not re.fullmatch(r"[+-]?\d{1,18}", text):
        raise _Usage(f"invalid {what} '{text}'")
    n = int(text)
    if minimum is not None and n < minimum:
        raise _Usage(f"invalid {what} '{text}'")
    return n


@command("true", ":")
def _true(sh: Shell, args: list[str], io: Io) -> int:
    return 0


@command("false")
def _false(sh: Shell, args: list[str], io: Io) -> int:
    return 1


@command("sh")
def _sh(sh: Shell, args: list[str], io: Io) -> int:
    """``sh -c COMMAND``, or ``sh`` reading its command lines from stdin (``echo ls | sh``)."""
    if args and args[0] != "-c":
        io.err("sh: only 'sh -c COMMAND' or commands on stdin are supported on mpk's virtual device\n")
        return 2
    if args and len(args) < 2:
        io.err("sh: -c requires an argument\n")
        return 2
    inner = sh.subshell()
    if inner is None:
        io.err("sh: nested too deeply\n")
        return 2
    script = args[1] if args else io.stdin.decode("utf-8", "replace")
    code, out, err = inner.run(script, io.stdin if args else b"", merge_stderr=sh.merge_stderr)
    io.out(out)
    io.err(err.decode("utf-8", "surrogateescape"))
    return code


@command("exit")
def _exit(sh: Shell, args: list[str], io: Io) -> int:
    if not args:
        raise ExitShell(sh.status)
    if not re.fullmatch(r"-?\d{1,18}", args[0]):
        io.err(f"sh: exit: Illegal number: {args[0]}\n")
        raise ExitShell(2)
    raise ExitShell(int(args[0]))  # ExitShell keeps it in 0..255, as sh does


@command("echo")
def _echo(sh: Shell, args: list[str], io: Io) -> int:
    newline, interpret = True, False
    while args and re.fullmatch(r"-[neE]+", args[0]):
        newline = newline and "n" not in args[0]
        interpret = "e" in args[0] or (interpret and "E" not in args[0])
        args = args[1:]
    text = " ".join(args)
    if interpret:
        text, stop = escapes(text, in_b=True)
        newline = newline and not stop
    io.out(text + ("\n" if newline else ""))
    return 0


@command("printf")
@_usage_errors
def _printf(sh: Shell, args: list[str], io: Io) -> int:
    """POSIX printf (see printf.py). A bad number warns and counts as 0 (status 1)."""
    if not args:
        raise _Usage("needs a format")
    try:
        text, warnings, status = printf(args[0], args[1:])
    except PrintfUsage as e:
        raise _Usage(str(e)) from None
    io.out(text)
    for w in warnings:
        io.err(f"printf: {w}\n")
    return status


@command("cd")
def _cd(sh: Shell, args: list[str], io: Io) -> int:
    name = args[0] if args else "/"
    target = sh.fs.normalize(name, sh.cwd)
    try:
        ok = sh.host_path(target).is_dir()
    except SandboxEscape:
        ok = False
    if not ok:
        io.err(f"cd: {name}: No such file or directory\n")
        return 2
    sh.cwd = target
    return 0


@command("pwd")
def _pwd(sh: Shell, args: list[str], io: Io) -> int:
    io.out(sh.cwd + "\n")
    return 0


@command("ls")
@_usage_errors
def _ls(sh: Shell, args: list[str], io: Io) -> int:
    flags, paths = _flags("ls", args, "laA1d")
    status = 0
    for p in paths or ["."]:
        try:
            host = sh.host_path(p)
        except SandboxEscape:
            io.err(f"ls: {p}: Permission denied\n")
            status = 1
            continue
        if not host.exists() and not host.is_symlink():
            io.err(f"ls: {p}: No such file or directory\n")
            status = 1
            continue
        if host.is_dir() and "d" not in flags:
            names = sorted(os.listdir(host))
            if "a" not in flags and "A" not in flags:
                names = [n for n in names if not n.startswith(".")]
            entries = [(n, host / n) for n in names]
        else:
            entries = [(p, host)]
        for name, h in entries:
            if "l" in flags:
                try:
                    st = h.lstat()
                except OSError:
                    continue
                when = time.strftime("%Y-%m-%d %H:%M", time.localtime(st.st_mtime))
                io.out(f"{stat_mod.filemode(st.st_mode)} 1 shell shell {st.st_size:>8} {when} {name}\n")
            else:
                io.out(name + "\n")
    return status


@command("cat")
def _cat(sh: Shell, args: list[str], io: Io) -> int:
    if not args or args == ["-"]:
        io.out(io.stdin)
        return 0
    status = 0
    for p in args:
        try:
            sh.device.refresh_thermal(sh.fs.normalize(p, sh.cwd))
            io.out(sh.fs.read_bytes(p, sh.cwd, limit=io.limit))
        except (OSError, SandboxEscape) as e:
            io.err(f"cat: {p}: {strerror(e)}\n")
            status = 1
    return status


def _head_tail(tail: bool) -> Builtin:
    name = "tail" if tail else "head"

    def run(sh: Shell, args: list[str], io: Io) -> int:
        n, from_start, rest = 10, False, []
        try:
            i = 0
            while i < len(args):
                a = args[i]
                if a == "-n":
                    if i + 1 >= len(args):
                        raise _Usage("option requires an argument -- 'n'")
                    v = args[i + 1]
                    from_start = tail and v.startswith("+")
                    n = _int(v.lstrip("+"), "number of lines")
                    i += 2
                    continue
                if re.fullmatch(r"-\d+", a):
                    n = _int(a[1:], "number of lines")
                elif a.startswith("-") and a != "-":
                    raise _Usage(f"invalid option -- '{a[1:2]}'")
                else:
                    rest.append(a)
                i += 1
        except _Usage as e:
            io.err(f"{name}: {e}\n")
            return 2
        status = 0
        data = b""
        try:
            data = _input(sh, rest, io)
        except (OSError, SandboxEscape) as e:
            io.err(f"{name}: {strerror(e)}\n")
            status = 1
        lines = data.splitlines(keepends=True)
        if tail and from_start:
            chosen = lines[max(n - 1, 0) :]
        elif tail:
            chosen = lines[-n:] if n else []
        else:
            chosen = lines[:n]
        io.out(b"".join(chosen))
        return status

    run.__name__ = f"_{name}"
    return run


POSIX_COMMANDS["head"] = _head_tail(tail=False)
POSIX_COMMANDS["tail"] = _head_tail(tail=True)


@command("grep")
@_usage_errors
def _grep(sh: Shell, args: list[str], io: Io) -> int:
    """Fixed-string grep (``-F`` is implied): ``-q -v -i -c``."""
    flags, rest = _flags("grep", args, "qvicF")
    if not rest:
        raise _Usage("usage: grep [-qvicF] PATTERN [FILE...]")
    pat, files = rest[0], rest[1:]
    try:
        data = _input(sh, files, io)
    except (OSError, SandboxEscape) as e:
        io.err(f"grep: {strerror(e)}\n")
        return 2
    hits = []
    for line in data.decode(errors="replace").splitlines():
        a, b = (line.lower(), pat.lower()) if "i" in flags else (line, pat)
        if (b in a) != ("v" in flags):
            hits.append(line)
    if "c" in flags:
        io.out(f"{len(hits)}\n")
    elif "q" not in flags:
        io.out("".join(h + "\n" for h in hits))
    return 0 if hits else 1


@command("mkdir")
@_usage_errors
def _mkdir(sh: Shell, args: list[str], io: Io) -> int:
    mode = 0o755
    rest = list(args)
    if "-m" in rest[:3]:
        i = rest.index("-m")
        if i + 1 >= len(rest):
            raise _Usage("option requires an argument -- 'm'")
        mode = _parse_octal(rest[i + 1])
        del rest[i : i + 2]
    flags, paths = _flags("mkdir", rest, "p")
    if not paths:
        raise _Usage("missing operand")
    status = 0
    for p in paths:
        try:
            host = sh.host_path(p)
            sh.fs.ensure_space(4096)
            host.mkdir(mode=_safe_mode(mode, directory=True), parents="p" in flags, exist_ok="p" in flags)
        except FileExistsError:
            io.err(f"mkdir: '{p}': File exists\n")
            status = 1
        except (OSError, SandboxEscape) as e:
            io.err(f"mkdir: '{p}': {strerror(e)}\n")
            status = 1
    return status


@command("rm")
@_usage_errors
def _rm(sh: Shell, args: list[str], io: Io) -> int:
    flags, paths = _flags("rm", args, "rRfd")
    if not paths and "f" not in flags:
        raise _Usage("missing operand")
    status = 0
    for p in paths:
        try:
            # The last component itself is not followed: removing a link removes the link.
            parent = sh.host_path(posix_dirname(sh.fs.normalize(p, sh.cwd)))
            host = parent / posix_basename(sh.fs.normalize(p, sh.cwd))
            if sh.fs.normalize(p, sh.cwd) == "/" or host == sh.fs.root:
                io.err("rm: refusing to remove '/'\n")
                status = 1
            elif host.is_symlink() or host.is_file():
                host.unlink()
            elif host.is_dir():
                if flags & {"r", "R"}:
                    shutil.rmtree(host)
                elif "d" in flags:
                    host.rmdir()
                else:
                    io.err(f"rm: {p}: Is a directory\n")
                    status = 1
            elif host.exists():
                host.unlink()
            elif "f" not in flags:
                io.err(f"rm: {p}: No such file or directory\n")
                status = 1
        except (OSError, SandboxEscape) as e:
            io.err(f"rm: {p}: {strerror(e)}\n")
            status = 1
    return status


def posix_dirname(android: str) -> str:
    return android.rsplit("/", 1)[0] or "/"


def posix_basename(android: str) -> str:
    return android.rsplit("/", 1)[-1]


@command("touch")
@_usage_errors
def _touch(sh: Shell, args: list[str], io: Io) -> int:
    _flags_, paths = _flags("touch", args, "c")
    if not paths:
        raise _Usage("missing operand")
    status = 0
    for p in paths:
        try:
            host = sh.host_path(p)
            if not host.exists():
                if "c" in _flags_:
                    continue
                sh.fs.write_bytes(p, b"", sh.cwd, append=True)
            os.utime(host)
        except (OSError, SandboxEscape) as e:
            io.err(f"touch: {p}: {strerror(e)}\n")
            status = 1
    return status


def _tree_size(host: Path) -> int:
    if not host.is_dir():
        return host.lstat().st_size
    return sum(f.lstat().st_size for f in host.rglob("*"))


def _copy_move(move: bool) -> Builtin:
    name = "mv" if move else "cp"

    def run(sh: Shell, args: list[str], io: Io) -> int:
        try:
            flags, paths = _flags(name, args, "f" if move else "rRfpa")
        except _Usage as e:
            io.err(f"{name}: {e}\n")
            return 2
        if len(paths) < 2:
            io.err(f"usage: {name} SRC... DST\n")
            return 2
        srcs, dst_name = paths[:-1], paths[-1]
        try:
            dst_host = sh.host_path(dst_name)
        except SandboxEscape:
            io.err(f"{name}: {dst_name}: Permission denied\n")
            return 1
        if len(srcs) > 1 and not dst_host.is_dir():
            io.err(f"{name}: {dst_name}: Not a directory\n")
            return 1
        status = 0
        for s in srcs:
            try:
                src = sh.host_path(s)
                if not src.exists():
                    io.err(f"{name}: {s}: No such file or directory\n")
                    status = 1
                    continue
                # resolved again through the sandbox: DST/NAME may itself be a link pointing elsewhere
                dst_android = sh.fs.normalize(dst_name, sh.cwd)
                dst = sh.host_path(f"{dst_android}/{src.name}") if dst_host.is_dir() else dst_host
                if src == sh.fs.root:
                    io.err(f"{name}: refusing to {'move' if move else 'copy'} '/'\n")
                    status = 1
                    continue
                if src.is_dir() and (dst == src or src in dst.parents):
                    what = "move" if move else "copy"
                    io.err(f"{name}: cannot {what} a directory, '{s}', into itself, '{dst_name}'\n")
                    status = 1
                    continue
                if dst.exists() and os.path.samefile(src, dst):
                    io.err(f"{name}: '{s}' and '{dst_name}' are the same file\n")
                    status = 1
                    continue
                if move:
                    os.replace(src, dst) if not dst.is_dir() else shutil.move(src, dst)
                elif src.is_dir():
                    if not flags & {"r", "R", "a"}:
                        io.err(f"cp: {s}: is a directory (use -r)\n")
                        status = 1
                        continue
                    sh.fs.ensure_space(_tree_size(src))
                    shutil.copytree(src, dst, symlinks=True, dirs_exist_ok=True)
                else:
                    sh.fs.ensure_space(src.stat().st_size)
                    shutil.copyfile(src, dst, follow_symlinks=False)
            except (OSError, SandboxEscape, shutil.Error) as e:
                io.err(f"{name}: {s}: {strerror(e) if not isinstance(e, shutil.Error) else 'copy failed'}\n")
                status = 1
        return status

    run.__name__ = f"_{name}"
    return run


POSIX_COMMANDS["mv"] = _copy_move(move=True)
POSIX_COMMANDS["cp"] = _copy_move(move=False)


def _parse_octal(text: str) -> int:
    if not re.fullmatch(r"[0-7]{1,4}", text):
        raise _Usage(f"invalid mode: '{text}'")
    return int(text, 8)


def _safe_mode(mode: int, *, directory: bool) -> int:
    """Permission bits only, and the owner keeps read/write (and search on folders) so cleanup always works."""
    return (mode & 0o777) | (0o700 if directory else 0o600)


_SYMBOLIC = re.compile(r"[ugoa]*[-+=][rwxX]*")


def _apply_symbolic(mode: int, spec: str, *, directory: bool) -> int:
    for clause in spec.split(","):
        m = re.fullmatch(r"([ugoa]*)([-+=])([rwxX]*)", clause)
        if not m:
            raise _Usage(f"invalid mode: '{spec}'")
        who, op, perms = m.groups()
        who = who.replace("a", "ugo") or "ugo"
        bits = 0
        for w in set(who):
            shift = {"u": 6, "g": 3, "o": 0}[w]
            for p in perms:
                if p == "X" and not (directory or mode & 0o111):
                    continue
                bits |= {"r": 4, "w": 2, "x": 1, "X": 1}[p] << shift
        if op == "+":
            mode |= bits
        elif op == "-":
            mode &= ~bits
        else:
            mask = sum(0o7 << {"u": 6, "g": 3, "o": 0}[w] for w in set(who))
            mode = (mode & ~mask) | bits
    return mode


@command("chmod")
@_usage_errors
def _chmod(sh: Shell, args: list[str], io: Io) -> int:
    flags, rest = _flags("chmod", args, "R")
    if len(rest) < 2:
        raise _Usage("usage: chmod [-R] MODE FILE...")
    spec, paths = rest[0], rest[1:]
    if re.fullmatch(r"\d+", spec):
        mode = _parse_octal(spec)
        if mode & 0o7000:
            raise _Usage(f"setuid/setgid/sticky bits are not supported on mpk's virtual device: '{spec}'")
    elif not all(_SYMBOLIC.fullmatch(c) for c in spec.split(",")):
        raise _Usage(f"invalid mode: '{spec}'")
    else:
        mode = None
    status = 0
    for p in paths:
        try:
            top = sh.host_path(p)
            targets = [top]
            if "R" in flags and top.is_dir():
                targets += [t for t in top.rglob("*") if not t.is_symlink()]
            for t in targets:
                is_dir = t.is_dir()
                new = mode if mode is not None else _apply_symbolic(stat_mod.S_IMODE(t.stat().st_mode), spec,
                                                                    directory=is_dir)  # fmt: skip
                os.chmod(t, _safe_mode(new, directory=is_dir))  # t is resolved, or a non-link found under it
        except (OSError, SandboxEscape) as e:
            io.err(f"chmod: {p}: {strerror(e)}\n")
            status = 1
    return status


@command("sha256sum")
def _sha256sum(sh: Shell, args: list[str], io: Io) -> int:
    status = 0
    for p in args:
        try:
            h = hashlib.sha256()
            with os.fdopen(sh.fs.open_read(p, sh.cwd), "rb") as f:
                for chunk in iter(lambda f=f: f.read(1 << 20), b""):
                    h.update(chunk)
            io.out(f"{h.hexdigest()}  {p}\n")
        except (OSError, SandboxEscape) as e:
            io.err(f"sha256sum: {p}: {strerror(e)}\n")
            status = 1
    if not args:
        io.out(f"{hashlib.sha256(io.stdin).hexdigest()}  -\n")
    return status


@command("stat")
@_usage_errors
def _stat(sh: Shell, args: list[str], io: Io) -> int:
    fmt = None
    paths = []
    it = iter(args)
    for a in it:
        if a == "-c":
            fmt = next(it, None)
            if fmt is None:
                raise _Usage("option requires an argument -- 'c'")
        elif a.startswith("-") and a != "-":
            raise _Usage(f"invalid option -- '{a[1:2]}'")
        else:
            paths.append(a)
    if not paths:
        raise _Usage("missing operand")
    status = 0
    for p in paths:
        try:
            st = sh.host_path(p).stat()
        except FileNotFoundError:
            io.err(f"stat: '{p}': No such file or directory\n")
            status = 1
            continue
        except (OSError, SandboxEscape) as e:
            io.err(f"stat: '{p}': {strerror(e)}\n")
            status = 1
            continue
        if fmt is None:
            io.out(f"  File: {p}\n  Size: {st.st_size}\n")
            continue
        kind = "directory" if stat_mod.S_ISDIR(st.st_mode) else "regular file"
        subs = {"s": str(st.st_size), "Y": str(int(st.st_mtime)), "a": f"{st.st_mode & 0o777:o}", "n": p,
                "F": kind, "%": "%"}  # fmt: skip
        io.out(re.sub(r"%(.)", lambda m, subs=subs: subs.get(m.group(1), m.group()), fmt) + "\n")
    return status


@command("wc")
@_usage_errors
def _wc(sh: Shell, args: list[str], io: Io) -> int:
    flags, paths = _flags("wc", args, "clw")
    try:
        data = _input(sh, paths, io)
    except (OSError, SandboxEscape) as e:
        io.err(f"wc: {strerror(e)}\n")
        return 1
    counts = {"l": data.count(b"\n"), "w": len(data.split()), "c": len(data)}
    chosen = [k for k in "lwc" if k in flags] or ["l", "w", "c"]
    io.out(" ".join(str(counts[k]) for k in chosen) + "\n")
    return 0


_INT_OPS = {"-eq": int.__eq__, "-ne": int.__ne__, "-lt": int.__lt__, "-gt": int.__gt__, "-le": int.__le__,
            "-ge": int.__ge__}  # fmt: skip


@command("test", "[")
def _test(sh: Shell, args: list[str], io: Io) -> int:
    if args and args[-1] == "]":
        args = args[:-1]
    negate = bool(args) and args[0] == "!"
    if negate:
        args = args[1:]
    if not args:
        ok = False
    elif len(args) == 2 and args[0] in ("-e", "-f", "-d", "-s", "-x", "-r", "-w", "-L", "-h"):
        try:
            h = sh.host_path(args[1])
            ok = {
                "-e": h.exists(),
                "-f": h.is_file(),
                "-d": h.is_dir(),
                "-s": h.is_file() and h.stat().st_size > 0,
                "-x": h.exists() and os.access(h, os.X_OK),
                "-r": h.exists(),
                "-w": h.exists(),
                "-L": h.is_symlink(),
                "-h": h.is_symlink(),
            }[args[0]]
        except (OSError, SandboxEscape):
            ok = False
    elif len(args) == 2 and args[0] in ("-n", "-z"):
        ok = bool(args[1]) == (args[0] == "-n")
    elif len(args) == 3 and args[1] in ("=", "==", "!="):
        ok = (args[0] == args[2]) == (args[1] != "!=")
    elif len(args) == 3 and args[1] in _INT_OPS:
        try:
            a, b = _int(args[0], "number", minimum=None), _int(args[2], "number", minimum=None)
        except _Usage as e:
            io.err(f"test: {e}\n")
            return 2
        ok = _INT_OPS[args[1]](a, b)
    elif len(args) == 1:
        ok = bool(args[0])
    else:
        io.err("test: unsupported expression\n")
        return 2
    return 0 if ok != negate else 1


@command("nproc")
def _nproc(sh: Shell, args: list[str], io: Io) -> int:
    io.out(f"{int(sh.device.profile.get('cores') or os.cpu_count() or 1)}\n")
    return 0


@command("uname")
def _uname(sh: Shell, args: list[str], io: Io) -> int:
    un = os.uname()
    abi = sh.device.props.get("ro.product.cpu.abi", un.machine)
    machine = {"arm64-v8a": "aarch64", "armeabi-v7a": "armv7l"}.get(abi, abi)
    if "-m" in args:
        io.out(machine + "\n")
    elif "-r" in args:
        io.out(un.release + "\n")
    elif "-n" in args:
        io.out("localhost\n")
    elif "-a" in args:
        io.out(f"Linux localhost {un.release} #1 SMP {machine} Toybox\n")
    else:
        io.out("Linux\n")
    return 0


@command("id")
def _id(sh: Shell, args: list[str], io: Io) -> int:
    io.out("uid=2000(shell) gid=2000(shell) groups=2000(shell) context=u:r:shell:s0\n")
    return 0


@command("whoami")
def _whoami(sh: Shell, args: list[str], io: Io) -> int:
    io.out("shell\n")
    return 0


@command("date")
def _date(sh: Shell, args: list[str], io: Io) -> int:
    fmts = [a[1:] for a in args if a.startswith("+")]
    try:
        io.out(time.strftime(fmts[0] if fmts else "%a %b %d %H:%M:%S %Z %Y") + "\n")
    except (ValueError, UnicodeError) as e:
        io.err(f"date: bad format: {e}\n")
        return 1
    return 0


_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)([smhd]?)")


@command("sleep")
def _sleep(sh: Shell, args: list[str], io: Io) -> int:
    """``sleep N[smhd]...``: waits at most ``device.sleep_cap_s`` in all (a shell thread is not a timer)."""
    if not args:
        io.err("sleep: missing operand\n")
        return 1
    total = 0.0
    for a in args:
        m = _DURATION.fullmatch(a)
        if not m:
            io.err(f"sleep: invalid number '{a}'\n")
            return 1
        total += float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]
    if not math.isfinite(total):
        io.err(f"sleep: invalid number '{' '.join(args)}'\n")
        return 1
    time.sleep(min(total, sh.device.sleep_cap_s))
    return 0


@command("sync")
def _noop(sh: Shell, args: list[str], io: Io) -> int:
    return 0
