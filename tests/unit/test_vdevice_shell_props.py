"""Property tests (hypothesis) for the virtual device's shell built-ins: every built-in answers every argument
list with an exit status in 0..255 and never raises, never reaches outside its sandbox, never sets a
setuid/setgid/sticky bit, and the whole command-line interpreter does the same for arbitrary text.
Seeded (derandomize) so CI runs the same examples every time. Nothing is mocked: a real DeviceState over a real
temporary folder; ``sleep`` is capped at 1 ms here so the search spends its time on arguments, not waiting."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runners.vdevice.device import DeviceState
from runners.vdevice.shell import ExitShell, Io, Shell
from runners.vdevice.toolbox import COMMANDS, device_shell

PROPS = settings(max_examples=150, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
LINES = settings(PROPS, max_examples=1000)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> tuple[DeviceState, Path, dict[str, str]]:
    return _layout(tmp_path_factory.mktemp("props"))


def _layout(base: Path) -> tuple[DeviceState, Path, dict[str, str]]:
    outside = base / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("host secret")
    dev = DeviceState(base / "fs", runner_cmd=["/bin/false"], sleep_cap_s=0.001)
    root = dev.fs.root
    (root / "data/local/tmp/d/sub").mkdir(parents=True)
    (root / "data/local/tmp/d/f.txt").write_text("hello\nworld\n")
    (root / "data/local/tmp/escape").symlink_to(outside)  # planted on the host side: the shell must not follow it
    return dev, outside, _snapshot(outside)


def _snapshot(d: Path) -> dict[str, str]:
    return {str(p.relative_to(d)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(d.rglob("*"))}  # fmt: skip


_WORDS = st.sampled_from([
    "-1", "-0", "0", "1", "99", "777", "4755", "+x", "u+s", "a=rwx", "go-w", "1e308", "nan", "inf", "-inf", "1.5",
    "999999999999999999999", "-n", "-c", "-m", "-p", "-r", "-rf", "-R", "-f", "-l", "-e", "-s", "-v", "-q", "-W",
    "-S", "--", "-", "%s", "%d", "%999999999d", "%.*f", "%b", "%c", "%", "\\x", "\\", "\\c", "\\0", "\\777",
    "'a", "/", ".", "..", "../..", "/..", "/etc/passwd", "/data/local/tmp/d", "/data/local/tmp/d/f.txt",
    "/data/local/tmp/d/sub", "d", "d/sub", "f.txt", "/data/local/tmp/escape/secret.txt", "/data/local/tmp/escape",
    "/data/local/tmp/new", "*", "/data/local/tmp/*", "[", "]", "!", "=", "-eq", "-lt", "org.mpk.bench",
    "org.mpk.bench/.BenchmarkActivity", "start", "force-stop", "--es", "spec", "list", "packages", "battery",
    "ro.product.model", "x.y", "+%s", "+%Q", "\x00", "\udcff", "é", "a\nb", "",
])  # fmt: skip
_ARGS = st.lists(st.one_of(_WORDS, st.text(max_size=12)), max_size=6)


def _check_invariants(dev: DeviceState, outside: Path, before: dict[str, str]) -> None:
    assert _snapshot(outside) == before, "a command changed a file outside the sandbox"
    for p in dev.fs.root.rglob("*"):
        if not p.is_symlink():
            assert not stat.S_IMODE(p.lstat().st_mode) & 0o7000, f"{p} got a setuid/setgid/sticky bit"


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_builtin_returns_a_status_for_any_arguments(env, name: str) -> None:
    dev, outside, before = env

    @PROPS
    @given(args=_ARGS)
    def check(args: list[str]) -> None:
        sh = Shell(dev, COMMANDS, cwd="/data/local/tmp")
        io = Io(stdin=b"line one\nline two\n", limit=1 << 20)
        try:
            status = sh.call([name, *args], io)
        except ExitShell as e:  # `exit` ends the shell; its status is the shell's
            status = e.code
        assert isinstance(status, int) and 0 <= status <= 255
        assert b"internal error" not in io.stderr, io.stderr
        assert b"host secret" not in io.stdout

    try:
        check()
    finally:
        dev.activities.force_stop()
    _check_invariants(dev, outside, before)


_LINE = st.lists(
    st.one_of(_WORDS, st.sampled_from(list(COMMANDS)), st.sampled_from([";", "&&", "||", "|", ">", ">>", "2>", "2>&1",
                                                                       "<", "'", '"', "$?", "$X", "#", "&", "\\"])),
    max_size=10,
).map(" ".join)  # fmt: skip


@LINES
@given(line=st.one_of(_LINE, st.text(max_size=60)))
def test_any_command_line_ends_with_a_status(env, line: str) -> None:
    dev, outside, before = env
    code, out, err = device_shell(dev, cwd="/data/local/tmp").run(line)
    assert 0 <= code <= 255
    assert b"internal error" not in err, err
    assert b"host secret" not in out
    assert _snapshot(outside) == before


def test_named_regressions(tmp_path: Path) -> None:
    """The inputs that used to raise Python exceptions, each now one line and a status."""
    dev, outside, before = _layout(tmp_path)
    sh = device_shell(dev, cwd="/data/local/tmp")
    assert sh.run("sleep -1") == (1, b"", b"sleep: invalid number '-1'\n")
    assert sh.run("sleep nan")[0] == 1
    assert sh.run("chmod 99 d/f.txt") == (2, b"", b"chmod: invalid mode: '99'\n")
    assert sh.run("chmod 4755 d/f.txt")[0] == 2
    assert sh.run(r"printf '\x'") == (0, b"\\x", b"")
    assert sh.run(r"printf '%b|%d|%5.2f|%x\n' 'a\tb' 42 3.14159 255")[1] == b"a\tb|42| 3.14|ff\n"
    assert sh.run("printf '%d %d\n' 1 2 3")[1] == b"1 2\n3 0\n"  # the format is reused while arguments remain
    code, out, err = sh.run("printf %d abc")
    assert (code, out) == (1, b"0") and b"invalid number" in err
    assert sh.run("printf %999999999d 1")[0] == 2
    code, _, err = sh.run("cp -r d d/sub")
    assert code == 1 and b"into itself" in err
    assert not (dev.fs.root / "data/local/tmp/d/sub/d").exists()
    assert sh.run("mv d d/sub")[0] == 1 and (dev.fs.root / "data/local/tmp/d").is_dir()
    assert sh.run("head -n abc d/f.txt")[0] == 2
    assert sh.run("head -n 1 d/f.txt")[1] == b"hello\n"
    assert sh.run("tail -n +2 d/f.txt")[1] == b"world\n"
    assert sh.run("exit 300")[0] == 44  # 300 mod 256, as sh does
    assert sh.run("exit abc")[0] == 2
    assert sh.run("test 1 -lt x")[0] == 2
    assert sh.run("test 2 -gt 1")[0] == 0
    assert sh.run("mkdir -m 755 d/m && stat -c %a d/m")[1] == b"755\n"
    assert sh.run("chmod u+x,go-w d/f.txt && stat -c %a d/f.txt")[1] == b"744\n"
    code, _, err = sh.run("cat /data/local/tmp/escape/secret.txt")
    assert code == 1 and err == b"cat: /data/local/tmp/escape/secret.txt: Permission denied\n"
    assert sh.run("cp /data/local/tmp/escape/secret.txt d/stolen")[0] == 1
    assert not (dev.fs.root / "data/local/tmp/d/stolen").exists()
    assert sh.run("cat /proc/nope; echo $?")[1] == b"1\n"
    assert sh.run("sh -c " + "'sh -c " * 3 + "true" + "'" * 3)[0] == 0
    assert sh.run("echo x > d/sub")[0] == 1  # a folder is not a file to write
    _check_invariants(dev, outside, before)


def test_output_is_bounded(tmp_path: Path) -> None:
    dev = DeviceState(tmp_path / "fs", max_output_bytes=1000)
    big = dev.fs.root / "data/local/tmp/big"
    big.write_bytes(b"x" * 5000)
    code, out, err = device_shell(dev).run("cat /data/local/tmp/big")
    assert code == 1 and len(out) <= 1000 and b"File too large" in err
    code, out, err = device_shell(dev).run("printf %4000s x")
    assert code == 1 and b"exceeds 1000 bytes" in err
    assert os.path.getsize(big) == 5000
