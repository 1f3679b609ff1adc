"""`mpk emulator start` as a new user tries it: Debian's adb connects with its own key, no extra steps.

Everything is real: Debian's ``adb`` (client + server, each on a private server port) generates its key in a
temporary HOME, ``mpk emulator start`` runs as a subprocess with that HOME and starts mpk's virtual device
detached, and ``adb connect``, ``shell``, ``push`` and ``pull`` run against it. A second adb with a key in
another HOME is refused ("failed to authenticate") until that key is passed with ``--authorize FILE``.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [
    pytest.mark.adb,
    pytest.mark.skipif(shutil.which("adb") is None, reason="Debian's adb is not installed (apt-get install adb)"),
]


class Adb:
    """Debian's adb with its own HOME and server port, so the user's adb server and keys stay untouched."""

    def __init__(self, home: Path, port: int) -> None:
        self.home, self.port = home, port
        home.mkdir(parents=True, exist_ok=True)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("ANDROID_", "ADB_"))}
        self.env.update(HOME=str(home), ANDROID_ADB_SERVER_PORT=str(port))

    def __call__(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["adb", "-P", str(self.port), *args], env=self.env, capture_output=True, text=True,
                              timeout=timeout, check=False)  # fmt: skip


def _mpk(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANDROID_", "ADB_", "XDG_", "MPK_STATE"))}
    env.update(HOME=str(home), PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "mpk", "emulator", *args], env=env, capture_output=True, text=True,
                          timeout=120, check=False)  # fmt: skip


@pytest.fixture()
def adbs(tmp_path: Path) -> Iterator[tuple[Adb, Adb]]:
    base = 21000 + (os.getpid() * 2) % 18000
    user, other = Adb(tmp_path / "home", base), Adb(tmp_path / "other", base + 1)
    try:
        for a in (user, other):
            assert a("start-server").returncode == 0  # generates ~/.android/adbkey{,.pub} in its HOME
        yield user, other
    finally:
        _mpk(user.home, "stop", "--all")  # anything a failed assertion left running
        for a in (user, other):
            a("kill-server")


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def test_start_then_debian_adb_connect_shell_push_pull(adbs: tuple[Adb, Adb], tmp_path: Path) -> None:
    user, other = adbs
    home = user.home
    # only Debian adb's own key pair (and its server log, adb.<port>) is in the new user's HOME
    assert sorted(p.name for p in home.rglob("*") if not p.name.startswith("adb.")) == [
        ".android",
        "adbkey",
        "adbkey.pub",
    ]
    r = _mpk(home, "start")
    assert r.returncode == 0, r.stderr
    serial = r.stdout.strip().splitlines()[-1]
    assert serial.startswith("127.0.0.1:")
    try:
        assert "connected to" in user("connect", serial).stdout
        assert f"{serial}\tdevice" in user("devices").stdout
        sh = user("-s", serial, "shell", "echo", "hello")
        assert (sh.returncode, sh.stdout) == (0, "hello\n")
        src = tmp_path / "payload.bin"
        src.write_bytes(os.urandom(1024 * 1024 + 7))
        assert user("-s", serial, "push", str(src), "/data/local/tmp/mpk/auth/payload.bin").returncode == 0
        back = tmp_path / "back.bin"
        assert user("-s", serial, "pull", "/data/local/tmp/mpk/auth/payload.bin", str(back)).returncode == 0
        assert _sha(back) == _sha(src)
        # a client whose key nobody authorized is refused, as a phone refuses an unknown computer
        refused = other("connect", serial, timeout=60)
        assert "failed to authenticate" in refused.stdout + refused.stderr, refused
        assert "unauthorized" in other("devices").stdout
    finally:
        stop = _mpk(home, "stop", serial)
    assert stop.returncode == 0 and f"stopped {serial}" in stop.stdout


def test_authorize_file_admits_another_key(adbs: tuple[Adb, Adb]) -> None:
    user, other = adbs
    r = _mpk(user.home, "start", "--authorize", str(other.home / ".android" / "adbkey.pub"))
    assert r.returncode == 0, r.stderr
    serial = r.stdout.strip().splitlines()[-1]
    try:
        assert "connected to" in other("connect", serial).stdout
        assert other("-s", serial, "shell", "getprop", "ro.product.model").stdout == "mpk Virtual Device\n"
    finally:
        _mpk(user.home, "stop", serial)


def test_authorize_a_bad_file_is_one_clear_line(adbs: tuple[Adb, Adb], tmp_path: Path) -> None:
    user, _ = adbs
    bad = tmp_path / "not-a-key.pub"
    bad.write_text("ssh-rsa AAAAB3NzaC1yc2E user@host\n")
    r = _mpk(user.home, "start", "--authorize", str(bad))
    assert r.returncode == 2 and "not an adb public key" in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    r = _mpk(user.home, "start", "--authorize", str(tmp_path / "missing.pub"))
    assert r.returncode == 2 and "cannot read it" in r.stderr
    r = _mpk(user.home, "start", "--avd", "Pixel", "--authorize", str(bad))
    assert r.returncode == 2 and "virtual device" in r.stderr
    assert not list((user.home / ".local" / "state" / "mpk" / "vdevices").glob("*.json"))
