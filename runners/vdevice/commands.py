"""The commands the virtual device's shell knows. Each is ``fn(shell, args, io) -> exit status``.

Output formats follow toybox/Android closely enough for mpk's parsers and for a
person reading ``adb shell`` output; they are not byte-for-byte copies.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat as stat_mod
import subprocess
import time

from runners.vdevice.device import APP_ACTIVITY, APP_DATA, APP_PACKAGE, LOG_TAG
from runners.vdevice.profile import device_facts
from runners.vdevice.sandbox import SandboxEscape
from runners.vdevice.shell import Builtin, ExitShell, Io, Shell

COMMANDS: dict[str, Builtin] = {}


def command(*names: str):
    def wrap(fn: Builtin) -> Builtin:
        for n in names:
            COMMANDS[n] = fn
        return fn

    return wrap


def _input(sh: Shell, paths: list[str], io: Io) -> bytes:
    """The named files concatenated, or stdin when none are named (as cat, grep, head... read)."""
    return b"".join(sh.host_path(p).read_bytes() for p in paths) if paths else io.stdin


def _flags(args: list[str], known: str) -> tuple[set[str], list[str]]:
    """Split leading single-letter flags (``-rf`` -> {r, f}) from operands."""
    flags: set[str] = set()
    rest = list(args)
    while rest and rest[0].startswith("-") and len(rest[0]) > 1 and rest[0] != "--":
        letters = rest.pop(0)[1:]
        if not set(letters) <= set(known):
            rest.insert(0, "-" + letters)
            break
        flags |= set(letters)
    if rest and rest[0] == "--":
        rest.pop(0)
    return flags, rest


@command("true", ":")
def _true(sh: Shell, args: list[str], io: Io) -> int:
    return 0


@command("false")
def _false(sh: Shell, args: list[str], io: Io) -> int:
    return 1


@command("sh")
def _sh(sh: Shell, args: list[str], io: Io) -> int:
    if len(args) < 2 or args[0] != "-c":
        io.err("sh: only 'sh -c COMMAND' is supported on mpk's virtual device\n")
        return 2
    inner = Shell(sh.device, cwd=sh.cwd, commands=sh.commands)
    code, out, err = inner.run(args[1], io.stdin, merge_stderr=sh.merge_stderr)
    io.out(out)
    io.stderr += err
    return code


@command("exit")
def _exit(sh: Shell, args: list[str], io: Io) -> int:
    raise ExitShell(int(args[0]) if args and args[0].lstrip("-").isdigit() else sh.status)


@command("echo")
def _echo(sh: Shell, args: list[str], io: Io) -> int:
    newline = True
    while args and args[0] in ("-n", "-e", "-ne", "-en"):
        newline = newline and "n" not in args[0]
        args = args[1:]
    io.out(" ".join(args) + ("\n" if newline else ""))
    return 0


@command("printf")
def _printf(sh: Shell, args: list[str], io: Io) -> int:
    if not args:
        io.err("printf: needs a format\n")
        return 1
    fmt = args[0].encode().decode("unicode_escape")
    vals = args[1:]
    try:
        io.out(fmt % tuple(vals) if "%" in fmt else fmt)
    except (TypeError, ValueError) as e:
        io.err(f"printf: {e}\n")
        return 1
    return 0


@command("getprop")
def _getprop(sh: Shell, args: list[str], io: Io) -> int:
    props = sh.device.props
    if args:
        io.out(props.get(args[0], args[1] if len(args) > 1 else "") + "\n")
    else:
        io.out("".join(f"[{k}]: [{v}]\n" for k, v in sorted(props.items())))
    return 0


@command("setprop")
def _setprop(sh: Shell, args: list[str], io: Io) -> int:
    if len(args) != 2:
        io.err("usage: setprop NAME VALUE\n")
        return 1
    if args[0].startswith("ro."):
        io.err(f"Failed to set property '{args[0]}' to '{args[1]}'.\n")
        return 1
    sh.device.props[args[0]] = args[1]
    return 0


@command("cd")
def _cd(sh: Shell, args: list[str], io: Io) -> int:
    target = sh.fs.normalize(args[0] if args else "/", sh.cwd)
    if not sh.host_path(target).is_dir():
        io.err(f"cd: {args[0] if args else '/'}: No such file or directory\n")
        return 2
    sh.cwd = target
    return 0


@command("pwd")
def _pwd(sh: Shell, args: list[str], io: Io) -> int:
    io.out(sh.cwd + "\n")
    return 0


@command("ls")
def _ls(sh: Shell, args: list[str], io: Io) -> int:
    flags, paths = _flags(args, "laA1dR")
    status = 0
    for p in paths or ["."]:
        host = sh.host_path(p)
        if not host.exists():
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
                st = h.lstat()
                when = time.strftime("%Y-%m-%d %H:%M", time.localtime(st.st_mtime))
                io.out(f"{stat_mod.filemode(st.st_mode)} 1 shell shell {st.st_size:>8} {when} {name}\n")
            else:
                io.out(name + "\n")
    return status


@command("cat")
def _cat(sh: Shell, args: list[str], io: Io) -> int:
    if not args:
        io.out(io.stdin)
        return 0
    status = 0
    for p in args:
        try:
            host = sh.host_path(p)
            sh.device.refresh_thermal(host)
            io.out(host.read_bytes())
        except IsADirectoryError:
            io.err(f"cat: {p}: Is a directory\n")
            status = 1
        except FileNotFoundError:
            io.err(f"cat: {p}: No such file or directory\n")
            status = 1
        except SandboxEscape:
            io.err(f"cat: {p}: Permission denied\n")
            status = 1
    return status


def _head_tail(tail: bool) -> Builtin:
    def run(sh: Shell, args: list[str], io: Io) -> int:
        n, rest = 10, []
        it = iter(args)
        for a in it:
            if a == "-n":
                n = int(next(it, "10"))
            elif a.startswith("-") and a[1:].isdigit():
                n = int(a[1:])
            else:
                rest.append(a)
        data = _input(sh, rest, io)
        lines = data.splitlines(keepends=True)
        io.out(b"".join(lines[-n:] if tail else lines[:n]) if n else b"")
        return 0

    return run


COMMANDS["head"] = _head_tail(tail=False)
COMMANDS["tail"] = _head_tail(tail=True)


@command("grep")
def _grep(sh: Shell, args: list[str], io: Io) -> int:
    flags, rest = _flags(args, "qvicF")
    if not rest:
        io.err("usage: grep [-qvicF] PATTERN [FILE...]\n")
        return 2
    pat, files = rest[0], rest[1:]
    data = _input(sh, files, io)
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
def _mkdir(sh: Shell, args: list[str], io: Io) -> int:
    flags, paths = _flags(args, "pm")
    status = 0
    for p in paths:
        host = sh.host_path(p)
        try:
            host.mkdir(parents="p" in flags, exist_ok="p" in flags)
        except FileExistsError:
            io.err(f"mkdir: '{p}': File exists\n")
            status = 1
        except FileNotFoundError:
            io.err(f"mkdir: '{p}': No such file or directory\n")
            status = 1
    return status


@command("rm")
def _rm(sh: Shell, args: list[str], io: Io) -> int:
    flags, paths = _flags(args, "rRf")
    status = 0
    for p in paths:
        host = sh.host_path(p)
        if host == sh.fs.root:
            io.err("rm: refusing to remove '/'\n")
            status = 1
        elif host.is_symlink() or host.is_file():
            host.unlink()
        elif host.is_dir():
            if flags & {"r", "R"}:
                shutil.rmtree(host)
            else:
                io.err(f"rm: {p}: Is a directory\n")
                status = 1
        elif "f" not in flags:
            io.err(f"rm: {p}: No such file or directory\n")
            status = 1
    return status


@command("touch")
def _touch(sh: Shell, args: list[str], io: Io) -> int:
    for p in args:
        sh.host_path(p).touch()
    return 0


def _copy_move(move: bool) -> Builtin:
    def run(sh: Shell, args: list[str], io: Io) -> int:
        _, paths = _flags(args, "rRfp")
        if len(paths) != 2:
            io.err(f"usage: {'mv' if move else 'cp'} SRC DST\n")
            return 1
        src, dst = sh.host_path(paths[0]), sh.host_path(paths[1])
        if not src.exists():
            io.err(f"{'mv' if move else 'cp'}: {paths[0]}: No such file or directory\n")
            return 1
        if dst.is_dir():
            dst = dst / src.name
        if move:
            shutil.move(src, dst)
        elif src.is_dir():
            shutil.copytree(src, dst, symlinks=True)
        else:
            shutil.copy2(src, dst)
        return 0

    return run


COMMANDS["mv"] = _copy_move(move=True)
COMMANDS["cp"] = _copy_move(move=False)


@command("chmod")
def _chmod(sh: Shell, args: list[str], io: Io) -> int:
    _, rest = _flags(args, "R")
    if len(rest) < 2:
        io.err("usage: chmod MODE FILE...\n")
        return 1
    mode, paths = rest[0], rest[1:]
    for p in paths:
        host = sh.host_path(p)
        if mode.isdigit():
            host.chmod(int(mode, 8))
        elif "+x" in mode:
            host.chmod(host.stat().st_mode | 0o111)
    return 0


@command("sha256sum")
def _sha256sum(sh: Shell, args: list[str], io: Io) -> int:
    status = 0
    for p in args:
        try:
            h = hashlib.sha256()
            with open(sh.host_path(p), "rb") as f:
                for chunk in iter(lambda f=f: f.read(1 << 20), b""):
                    h.update(chunk)
            io.out(f"{h.hexdigest()}  {p}\n")
        except FileNotFoundError:
            io.err(f"sha256sum: {p}: No such file or directory\n")
            status = 1
        except IsADirectoryError:
            io.err(f"sha256sum: {p}: Is a directory\n")
            status = 1
    return status


@command("stat")
def _stat(sh: Shell, args: list[str], io: Io) -> int:
    fmt = None
    paths = []
    it = iter(args)
    for a in it:
        if a == "-c":
            fmt = next(it, "")
        else:
            paths.append(a)
    status = 0
    for p in paths:
        host = sh.host_path(p)
        if not host.exists():
            io.err(f"stat: '{p}': No such file or directory\n")
            status = 1
            continue
        st = host.stat()
        if fmt is None:
            io.out(f"  File: {p}\n  Size: {st.st_size}\n")
            continue
        out = fmt.replace("%s", str(st.st_size)).replace("%Y", str(int(st.st_mtime)))
        out = out.replace("%a", f"{st.st_mode & 0o777:o}").replace("%n", p)
        io.out(out + "\n")
    return status


@command("wc")
def _wc(sh: Shell, args: list[str], io: Io) -> int:
    flags, paths = _flags(args, "clw")
    data = _input(sh, paths, io)
    count = len(data) if "c" in flags else data.count(b"\n")
    io.out(f"{count}\n")
    return 0


@command("test", "[")
def _test(sh: Shell, args: list[str], io: Io) -> int:
    if args and args[-1] == "]":
        args = args[:-1]
    negate = bool(args) and args[0] == "!"
    if negate:
        args = args[1:]
    if len(args) == 2 and args[0] in ("-e", "-f", "-d", "-s", "-x", "-r", "-w"):
        try:
            h = sh.host_path(args[1])
        except SandboxEscape:
            ok = False
        else:
            ok = {
                "-e": h.exists(),
                "-f": h.is_file(),
                "-d": h.is_dir(),
                "-s": h.is_file() and h.stat().st_size > 0,
                "-x": h.exists() and os.access(h, os.X_OK),
                "-r": h.exists(),
                "-w": h.exists(),
            }[args[0]]
    elif len(args) == 2 and args[0] in ("-n", "-z"):
        ok = bool(args[1]) == (args[0] == "-n")
    elif len(args) == 3 and args[1] in ("=", "==", "!="):
        ok = (args[0] == args[2]) == (args[1] != "!=")
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
    elif "-a" in args:
        io.out(f"Linux localhost {un.release} #1 SMP {machine} Toybox\n")
    else:
        io.out("Linux\n")
    return 0


@command("id", "whoami")
def _id(sh: Shell, args: list[str], io: Io) -> int:
    io.out("uid=2000(shell) gid=2000(shell) groups=2000(shell) context=u:r:shell:s0\n")
    return 0


@command("date")
def _date(sh: Shell, args: list[str], io: Io) -> int:
    io.out((str(int(time.time())) if "+%s" in args else time.strftime("%a %b %d %H:%M:%S %Z %Y")) + "\n")
    return 0


@command("sleep")
def _sleep(sh: Shell, args: list[str], io: Io) -> int:
    time.sleep(min(float(args[0]) if args else 0, 60.0))
    return 0


@command("sync")
def _noop(sh: Shell, args: list[str], io: Io) -> int:
    return 0


@command("pm")
def _pm(sh: Shell, args: list[str], io: Io) -> int:
    pkgs: dict[str, str] = sh.device.profile.get("packages", {})
    if args[:2] == ["list", "packages"]:
        needle = args[2] if len(args) > 2 else ""
        io.out("".join(f"package:{p}\n" for p in sorted(pkgs) if needle in p))
        return 0
    if len(args) == 2 and args[0] == "path":
        if args[1] in pkgs:
            io.out(f"package:{pkgs[args[1]]}\n")
            return 0
        return 1
    io.err(f"pm: unsupported on mpk's virtual device: {' '.join(args)}\n")
    return 1


@command("dumpsys")
def _dumpsys(sh: Shell, args: list[str], io: Io) -> int:
    if args and args[0] == "battery":
        b = sh.device.profile.get("battery", {})
        io.out(
            "Current Battery Service state:\n"
            f"  AC powered: {str(b.get('plugged') == 1).lower()}\n"
            f"  USB powered: {str(b.get('plugged') == 2).lower()}\n"
            f"  status: {b.get('status', 2)}\n  health: {b.get('health', 2)}\n  present: true\n"
            f"  level: {b.get('level', 100)}\n  scale: 100\n  voltage: {b.get('voltage', 4200)}\n"
            f"  temperature: {b.get('temperature', 250)}\n  technology: Li-ion\n"
        )
        return 0
    io.out(f"Can't find service: {args[0] if args else ''}\n")
    return 0


@command("logcat")
def _logcat(sh: Shell, args: list[str], io: Io) -> int:
    if "-c" in args:
        sh.device.clear_log()
        return 0
    tags: set[str] | None = None
    it = iter(args)
    for a in it:
        if a == "-s":
            tags = set()
        elif a in ("-d", "-v") or a.startswith("-"):
            if a == "-v":
                next(it, None)
        elif tags is not None:
            tags.add(a.split(":", 1)[0])
    if "-d" not in args:
        io.err("logcat: only 'logcat -d' (dump and exit) is supported on mpk's virtual device\n")
        return 1
    io.out("".join(line + "\n" for line in sh.device.logcat(tags)))
    return 0


@command("run-as")
def _run_as(sh: Shell, args: list[str], io: Io) -> int:
    if not args:
        io.err("usage: run-as <package-name> [<command> [<args>]]\n")
        return 1
    if args[0] != APP_PACKAGE:
        io.err(f"run-as: package not debuggable or unknown: {args[0]}\n")
        return 1
    inner = Shell(sh.device, cwd=APP_DATA, commands=sh.commands)
    sh.fs.resolve(APP_DATA).mkdir(parents=True, exist_ok=True)
    return inner.call(args[1:] or ["sh"], io)


@command("am")
def _am(sh: Shell, args: list[str], io: Io) -> int:
    if not args or args[0] not in ("start", "start-activity", "force-stop"):
        io.err(f"am: unsupported on mpk's virtual device: {' '.join(args)}\n")
        return 1
    if args[0] == "force-stop":
        return 0
    component, extras, wait = None, {}, False
    it = iter(args[1:])
    for a in it:
        if a == "-n":
            component = next(it, None)
        elif a == "--es":
            k, v = next(it, ""), next(it, "")
            extras[k] = v
        elif a == "-W":
            wait = True
        elif a in ("-S", "--activity-clear-task"):
            continue
        elif a in ("-a", "-c", "-d", "--user"):
            next(it, None)
    io.out(f"Starting: Intent {{ cmp={component} (has extras) }}\n")
    if component != APP_ACTIVITY:
        io.err(f"Error type 3\nError: Activity class {{{component}}} does not exist.\n")
        return 1
    if "spec" not in extras:
        io.err("Error: BenchmarkActivity needs --es spec /data/local/tmp/mpk/<run_id>/spec.json\n")
        return 1
    started = time.monotonic()
    run_benchmark(sh, extras["spec"])  # DONE says ok or error; am itself reports the launch, as on a phone
    if wait:
        ms = int((time.monotonic() - started) * 1000)
        io.out(f"Status: ok\nLaunchState: COLD\nActivity: {APP_ACTIVITY}\nTotalTime: {ms}\nWaitTime: {ms}\nComplete\n")
    return 0


def run_benchmark(sh: Shell, spec_path: str) -> str:
    """What BenchmarkActivity does: run the spec, write result.json and DONE, log ``MPK_DONE``.

    The benchmark itself is the host runner in a subprocess (``--emulated``),
    so numbers are the host's; the facts file says so (``host_cpu``).
    """
    dev = sh.device
    spec_host = sh.fs.resolve(spec_path)
    run_id = spec_host.parent.name
    try:
        run_id = str(json.loads(spec_host.read_text()).get("run_id") or run_id)
    except (OSError, ValueError):
        pass
    out_dir = sh.fs.resolve(f"{APP_DATA}/files/mpk/{run_id}")
    out_dir.mkdir(parents=True, exist_ok=True)
    done = out_dir / "DONE"
    done.unlink(missing_ok=True)
    facts = out_dir / "device_facts.json"
    facts.write_text(json.dumps(device_facts(dev.profile), indent=2))
    dev.log(LOG_TAG, f"MPK_START run_id={run_id} spec={spec_path}")
    cmd = [
        *dev.runner_cmd,
        *("--spec", str(spec_host), "--out", str(out_dir / "result.json")),
        *("--emulated", "--device-facts", str(facts)),
    ]
    error = None
    if not spec_host.is_file():
        error = f"spec not found: {spec_path}"
    else:
        try:
            proc = subprocess.run(
                cmd, cwd=spec_host.parent, capture_output=True, text=True, timeout=dev.runner_timeout, check=False
            )
            (out_dir / "runner.log").write_text(proc.stdout + proc.stderr)
            if proc.returncode != 0 or not (out_dir / "result.json").is_file():
                tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or [f"exit {proc.returncode}"]
                error = f"runner exited {proc.returncode}: {tail[0]}"
        except subprocess.TimeoutExpired:
            error = f"runner timed out after {dev.runner_timeout:.0f}s"
        except OSError as e:
            error = f"cannot start runner: {e}"
    done.write_text("ok\n" if error is None else f"error: {error}\n")
    dev.log(LOG_TAG, f"MPK_DONE run_id={run_id} status={'ok' if error is None else 'error'}", "I" if not error else "E")
    return "ok" if error is None else "error"
