"""Unit tests for the ADB pieces that need no socket: key format, packets, the shell, the sandbox."""

from __future__ import annotations

import base64
import os
import socket
import struct
from pathlib import Path

import pytest

from mpk.errors import ConfigError, UsageError
from runners.transport.adbkey import (
    decode_public_key,
    encode_public_key,
    ensure_key,
    load_private_key,
    sign_token,
    verify_token_signature,
)
from runners.transport.base import parse_getprop, split_exit_status, wrap_exit_status
from runners.vdevice import protocol as P
from runners.vdevice.device import DeviceState
from runners.vdevice.profile import load_profile
from runners.vdevice.sandbox import SandboxEscape, SandboxFS
from runners.vdevice.toolbox import device_shell


@pytest.fixture(scope="module")
def key(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ensure_key(tmp_path_factory.mktemp("key") / "adbkey")


def test_key_file_is_private_and_pub_matches_adb_shell_encoder(key: Path) -> None:
    from adb_shell.auth.keygen import encode_pubkey

    assert os.stat(key).st_mode & 0o777 == 0o600
    ours = key.with_name("adbkey.pub").read_text().split()[0]
    assert base64.b64decode(ours) == encode_pubkey(str(key))  # byte-identical to adb-shell's struct


def test_signature_from_adb_shell_signer_verifies(key: Path) -> None:
    from adb_shell.auth.sign_cryptography import CryptographySigner

    token = os.urandom(20)
    pub = decode_public_key(key.with_name("adbkey.pub").read_text())
    assert verify_token_signature(pub, token, CryptographySigner(str(key)).Sign(token))
    assert verify_token_signature(pub, token, sign_token(load_private_key(key), token))
    assert not verify_token_signature(pub, os.urandom(20), sign_token(load_private_key(key), token))


def test_decode_rejects_garbage() -> None:
    with pytest.raises(ValueError):
        decode_public_key("bm90IGEga2V5 user@host")
    with pytest.raises(ValueError):
        decode_public_key("%%% user@host")


def test_encode_roundtrip(key: Path) -> None:
    pub = load_private_key(key).public_key()
    assert decode_public_key(encode_public_key(pub, "x@y")).public_numbers() == pub.public_numbers()


def _pair() -> tuple[socket.socket, socket.socket]:
    return socket.socketpair()


@pytest.mark.parametrize(
    ("raw", "msg"),
    [
        (struct.pack("<6I", P.A_CNXN, 0, 0, 0, 0, 0), "magic"),
        (struct.pack("<6I", 0x41414141, 0, 0, 0, 0, 0x41414141 ^ 0xFFFFFFFF), "unknown command"),
        (struct.pack("<6I", P.A_WRTE, 1, 1, 1 << 30, 0, P.A_WRTE ^ 0xFFFFFFFF), "exceeds"),
        (struct.pack("<6I", P.A_WRTE, 1, 1, 2, 99, P.A_WRTE ^ 0xFFFFFFFF) + b"hi", "checksum"),
    ],
)
def test_read_packet_rejects_malformed(raw: bytes, msg: str) -> None:
    a, b = _pair()
    with a, b:
        a.sendall(raw)
        with pytest.raises(P.ProtocolError, match=msg):
            P.read_packet(b, max_payload=P.MAX_PAYLOAD, check_data=True)


def test_packet_roundtrip() -> None:
    a, b = _pair()
    with a, b:
        a.sendall(P.Packet(P.A_OPEN, 7, 0, b"shell:ls\0").pack())
        pkt = P.read_packet(b, max_payload=P.MAX_PAYLOAD, check_data=True)
    assert (pkt.name, pkt.arg0, pkt.data) == ("OPEN", 7, b"shell:ls\0")


def test_exit_marker_roundtrip() -> None:
    assert "__MPK_EXIT" in wrap_exit_status("ls")
    assert split_exit_status("no newline at end\n__MPK_EXIT=3\n") == (3, "no newline at end")
    assert split_exit_status("a\n\n__MPK_EXIT=0\r\n") == (0, "a\n")
    assert split_exit_status("garbage")[0] == -1
    assert parse_getprop("[a.b]: [x y]\n[c]: []\n") == {"a.b": "x y", "c": ""}


@pytest.fixture()
def dev(tmp_path: Path) -> DeviceState:
    return DeviceState(tmp_path / "fs")


def test_shell_chaining_status_and_unknown(dev: DeviceState) -> None:
    sh = device_shell(dev)
    assert sh.run("false; echo $?") == (0, b"1\n", b"")
    assert sh.run("false && echo no || echo yes")[1] == b"yes\n"
    code, out, err = sh.run("nosuchcmd --x")
    assert (code, out, err) == (127, b"", b"sh: nosuchcmd: not found\n")
    assert sh.run("echo $?")[1] == b"127\n"
    assert sh.run("exit 5; echo never") == (5, b"", b"")
    assert sh.run("echo 'a  b' \"c $?\"")[1] == b"a  b c 5\n"


def test_shell_files_and_globs(dev: DeviceState) -> None:
    sh = device_shell(dev)
    assert sh.run("mkdir -p /data/local/tmp/d && cd /data/local/tmp/d && echo hello > f.txt && pwd")[1] == (
        b"/data/local/tmp/d\n"
    )
    assert sh.run("cat /data/local/tmp/d/f.txt; stat -c %s /data/local/tmp/d/f.txt")[1] == b"hello\n6\n"
    assert sh.run("test -f /data/local/tmp/d/f.txt && test ! -d /data/local/tmp/d/f.txt")[0] == 0
    assert sh.run("sha256sum /data/local/tmp/d/f.txt")[1].startswith(
        b"5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03  "
    )
    temps = sh.run("cat /sys/class/thermal/thermal_zone*/temp")[1].split()
    assert temps and all(t.isdigit() for t in temps)
    assert sh.run("cat /sys/devices/system/cpu/cpu0/cpufreq/scaling_governor")[1] == b"performance\n"
    assert sh.run("rm -rf /data/local/tmp/d; ls /data/local/tmp/d")[0] == 1
    assert sh.run("getprop ro.product.model")[1] == b"mpk Virtual Device\n"
    assert sh.run("nproc")[1].strip().isdigit()


def test_sandbox_refuses_escapes(tmp_path: Path) -> None:
    fs = SandboxFS(tmp_path / "root")
    outside = tmp_path / "secret.txt"
    outside.write_text("host secret")
    (fs.root / "data/local/tmp/link").symlink_to(tmp_path)  # points out of the sandbox
    with pytest.raises(SandboxEscape):
        fs.resolve("/data/local/tmp/link/secret.txt")
    assert fs.resolve("/../../../../etc/passwd") == fs.root / "etc/passwd"  # '..' stops at the sandbox root
    dev = DeviceState(tmp_path / "root")
    code, out, err = device_shell(dev).run("cat /data/local/tmp/link/secret.txt")
    assert code == 1 and b"host secret" not in out and b"Permission denied" in err
    assert device_shell(dev).run("echo x > /data/local/tmp/link/new.txt")[0] == 1
    assert not (tmp_path / "new.txt").exists()


def test_profile_unknown_key_is_config_error(tmp_path: Path) -> None:
    bad = tmp_path / "p.yaml"
    bad.write_text("props: {ro.product.model: X}\nbatery: {}\n")
    with pytest.raises(ConfigError, match="batery: unknown key"):
        load_profile(bad)
    assert load_profile({"props": {"ro.product.model": "X"}})["props"]["ro.product.model"] == "X"


def test_virtual_device_refuses_non_loopback_bind(tmp_path: Path) -> None:
    from runners.vdevice.server import VirtualDevice

    with pytest.raises(UsageError, match="loopback"):
        VirtualDevice(tmp_path, host="0.0.0.0")


def test_transport_registry_suggests() -> None:
    from mpk.errors import UnknownNameError
    from runners.transport import TRANSPORTS

    assert set(TRANSPORTS.names()) == {"adb_shell", "adb_server", "local"}
    with pytest.raises(UnknownNameError, match="did you mean 'adb_shell'"):
        TRANSPORTS.get("adb_shel")


def test_local_transport(tmp_path: Path) -> None:
    from runners.transport.local import LocalTransport

    t = LocalTransport(root=tmp_path / "dev")
    src = tmp_path / "a.bin"
    src.write_bytes(b"x" * 1000)
    assert t.push(src, "/data/local/tmp/a.bin") is True
    assert t.push(src, "/data/local/tmp/a.bin") is False
    t.pull("/data/local/tmp/a.bin", tmp_path / "b.bin")
    assert (tmp_path / "b.bin").read_bytes() == src.read_bytes()
    r = t.shell("echo out; echo err >&2; exit 3")
    assert (r.exit_code, r.stdout, r.stderr) == (3, "out\n", "err\n")
