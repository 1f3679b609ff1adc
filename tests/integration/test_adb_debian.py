"""Debian's real adb (client + server, 29.0.6) against the virtual device, and mpk's adb_server transport
speaking the host protocol to that real server. A private server port and a temp HOME keep the user's own
adb server and keys untouched; the server is killed at the end."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from runners.transport.adb_server import AdbServer, AdbServerTransport
from runners.vdevice.server import VirtualDevice

pytestmark = [
    pytest.mark.adb,
    pytest.mark.skipif(shutil.which("adb") is None, reason="Debian's adb is not installed (apt-get install adb)"),
]


@pytest.fixture(scope="module")
def adb_env(tmp_path_factory: pytest.TempPathFactory):
    home = tmp_path_factory.mktemp("adbhome")
    port = 20000 + os.getpid() % 20000
    env = dict(os.environ, HOME=str(home), ANDROID_ADB_SERVER_PORT=str(port), ADB_VENDOR_KEYS="")

    def adb(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["adb", "-P", str(port), *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
        )

    assert adb("start-server").returncode == 0
    try:
        yield adb, port, home
    finally:
        adb("kill-server")


@pytest.fixture(scope="module")
def vd(tmp_path_factory: pytest.TempPathFactory, adb_env):
    _, _, home = adb_env
    with VirtualDevice(tmp_path_factory.mktemp("vd")) as v:
        v.authorize((home / ".android" / "adbkey.pub").read_text())
        yield v


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def test_debian_adb_connect_shell_push_pull(adb_env, vd: VirtualDevice, tmp_path: Path) -> None:
    adb, _, _ = adb_env
    assert "connected to" in adb("connect", vd.serial).stdout
    devices = adb("devices", "-l").stdout
    assert f"{vd.serial}" in devices and "device product:mpk_vdevice" in devices
    r = adb("-s", vd.serial, "shell", "echo", "hi")
    assert (r.returncode, r.stdout) == (0, "hi\n")
    assert adb("-s", vd.serial, "shell", "exit 3").returncode == 3  # shell v2 carries the exit status
    assert adb("-s", vd.serial, "shell", "getprop", "ro.product.model").stdout == "mpk Virtual Device\n"
    src = tmp_path / "big.bin"
    src.write_bytes(os.urandom(4 * 1024 * 1024 + 123))
    assert adb("-s", vd.serial, "push", str(src), "/data/local/tmp/mpk/x/big.bin").returncode == 0
    back = tmp_path / "back.bin"
    assert adb("-s", vd.serial, "pull", "/data/local/tmp/mpk/x/big.bin", str(back)).returncode == 0
    assert _sha(back) == _sha(src)


def test_adb_server_transport_host_protocol(adb_env, vd: VirtualDevice, tmp_path: Path) -> None:
    _, port, _ = adb_env
    server = AdbServer(port=port)
    assert server.version() > 0
    t = AdbServerTransport(vd.serial, server=server)  # connects via host:connect if needed
    assert any(d.serial == vd.serial and d.state == "device" for d in server.devices())
    assert "shell_v2" in t.features
    r = t.shell("echo out; nosuch")
    assert (r.exit_code, r.stdout, r.stderr) == (127, "out\n", "sh: nosuch: not found\n")
    src = tmp_path / "f.bin"
    src.write_bytes(os.urandom(3 * 1024 * 1024))
    assert t.push(src, "/data/local/tmp/mpk/y/f.bin") is True
    assert t.push(src, "/data/local/tmp/mpk/y/f.bin") is False
    t.pull("/data/local/tmp/mpk/y/f.bin", tmp_path / "g.bin")
    assert _sha(tmp_path / "g.bin") == _sha(src)
    assert t.getprop()["ro.build.version.sdk"] == "34"
    assert t.stat("/data/local/tmp/mpk/y/f.bin")[1] == 3 * 1024 * 1024


def test_adb_server_unknown_serial_is_device_not_found(adb_env) -> None:
    from mpk.errors import DeviceNotFound

    _, port, _ = adb_env
    with pytest.raises(DeviceNotFound):
        AdbServerTransport("no-such-serial", server=AdbServer(port=port)).shell("echo")
