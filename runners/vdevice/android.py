"""The Android tools of the virtual device's shell: properties, packages, activities, logcat, dumpsys, run-as.

``am start -n org.mpk.bench/.BenchmarkActivity --es spec PATH`` launches the
benchmark app (activity.py) and returns, as on a phone; ``-W`` waits for the
launch only, ``-S`` force-stops a running instance first. ``am force-stop
org.mpk.bench`` kills a running benchmark and the host processes it started.
``pidof org.mpk.bench`` says whether it is running.
"""

from __future__ import annotations

import re
import time

from runners.vdevice.activity import APP_ACTIVITY, APP_DATA, APP_PACKAGE
from runners.vdevice.shell import Builtin, Io, Shell

ANDROID_COMMANDS: dict[str, Builtin] = {}

#: Android's PROP_VALUE_MAX is 92 bytes including the NUL; names beyond this many are refused too.
PROP_VALUE_MAX = 91
PROP_NAME_MAX = 256
MAX_PROPS = 4096
_PROP_NAME = re.compile(r"[A-Za-z0-9_.@:-]+")


def command(*names: str):
    def wrap(fn: Builtin) -> Builtin:
        for n in names:
            ANDROID_COMMANDS[n] = fn
        return fn

    return wrap


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
    name, value = args
    props = sh.device.props
    ok = (
        _PROP_NAME.fullmatch(name) is not None
        and len(name) <= PROP_NAME_MAX
        and len(value.encode("utf-8", "surrogateescape")) <= PROP_VALUE_MAX
        and not name.startswith("ro.")
        and (name in props or len(props) < MAX_PROPS)
    )
    if not ok:
        io.err(f"Failed to set property '{name[:PROP_NAME_MAX]}' to '{value[:PROP_VALUE_MAX]}'.\n")
        return 1
    props[name] = value
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
    io.err(f"pm: unsupported on mpk's virtual device: {' '.join(args)[:200]}\n")
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
    io.out(f"Can't find service: {args[0][:200] if args else ''}\n")
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
        elif a == "-v":
            next(it, None)
        elif a.startswith("-"):
            continue
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
        io.err(f"run-as: package not debuggable or unknown: {args[0][:200]}\n")
        return 1
    sh.fs.resolve(APP_DATA).mkdir(parents=True, exist_ok=True)
    inner = sh.subshell(cwd=APP_DATA)
    if inner is None:
        io.err("run-as: nested too deeply\n")
        return 1
    return inner.call(args[1:] or ["sh"], io)


@command("pidof")
def _pidof(sh: Shell, args: list[str], io: Io) -> int:
    pids = sh.device.activities.pids() if APP_PACKAGE in args else []
    if pids:
        io.out(" ".join(map(str, pids)) + "\n")
    return 0 if pids else 1


@command("am")
def _am(sh: Shell, args: list[str], io: Io) -> int:
    if not args or args[0] not in ("start", "start-activity", "force-stop"):
        io.err(f"am: unsupported on mpk's virtual device: {' '.join(args)[:200]}\n")
        return 1
    if args[0] == "force-stop":
        if len(args) != 2:
            io.err("usage: am force-stop PACKAGE\n")
            return 1
        if args[1] == APP_PACKAGE:
            sh.device.activities.force_stop()
        return 0
    component, extras, wait, stop_first = None, {}, False, False
    it = iter(args[1:])
    for a in it:
        if a == "-n":
            component = next(it, None)
        elif a == "--es":
            k, v = next(it, ""), next(it, "")
            extras[k] = v
        elif a == "-W":
            wait = True
        elif a == "-S":
            stop_first = True
        elif a in ("-a", "-c", "-d", "--user"):
            next(it, None)
    io.out(f"Starting: Intent {{ cmp={str(component)[:200]} (has extras) }}\n")
    if component != APP_ACTIVITY:
        io.err(f"Error type 3\nError: Activity class {{{str(component)[:200]}}} does not exist.\n")
        return 1
    if "spec" not in extras:
        io.err("Error: BenchmarkActivity needs --es spec /data/local/tmp/mpk/<run_id>/spec.json\n")
        return 1
    started = time.monotonic()
    launched = sh.device.activities.start(extras["spec"], force_stop_first=stop_first)
    if not launched:
        io.out("Warning: Activity not started, its current task has been brought to the front\n")
    if wait:
        ms = int((time.monotonic() - started) * 1000)
        state = "COLD" if launched else "UNKNOWN (0)"
        io.out(f"Status: ok\nLaunchState: {state}\nActivity: {APP_ACTIVITY}\nTotalTime: {ms}\nWaitTime: {ms}\n"
               "Complete\n")  # fmt: skip
    return 0
