"""A bounded, seeded protocol fuzz of the virtual device over loopback, then real clients on the same device.

More than 5,000 packets: well-formed and malformed headers, wrong magic and checksums, truncated packets,
payloads at and over the limits, AUTH and OPEN in the wrong order, before and after a real RSA handshake, random
services, stream ids, shell v2 frames and sync requests. Afterwards the device (a separate process, as
``mpk emulator start`` runs it) must still be up, its threads and memory back near where they started, no push
left half-written -- and it must still serve an authorized client: mpk's adb-shell transport, and Debian's
``adb`` when installed. Nothing is mocked.
"""

from __future__ import annotations

import os
import random
import shutil
import socket
import struct
import subprocess
import time
from pathlib import Path

import pytest

from runners.transport.adb_shell import AdbShellTransport
from runners.transport.adbkey import ensure_key, load_private_key, sign_token
from runners.vdevice import protocol as P
from tests.integration.vdevice_helpers import start_device_process, stop_device_process

SEED = 20261129
MIN_PACKETS = 5000
_CMDS = [P.A_CNXN, P.A_AUTH, P.A_OPEN, P.A_OKAY, P.A_CLSE, P.A_WRTE, P.A_STLS, 0x434E5953, 0, 0xFFFFFFFF]
_SERVICES = [
    b"shell:echo fuzz", b"shell:", b"shell,v2:ls /data", b"shell,v2,raw:getprop", b"exec:cat /proc/cpuinfo", b"sync:",
    b"shell:cat /sys/class/thermal/thermal_zone0/temp", b"reboot:", b"tcpip:5555", b"jdwp:1",
    b"shell:printf '%s\\n' a b", b"shell:ls -l /data/local/tmp | grep x", b"shell:" + b"A" * 3000, b"",
]  # fmt: skip
_SYNC_IDS = [b"SEND", b"RECV", b"STAT", b"LIST", b"DATA", b"DONE", b"QUIT", b"FAIL", b"JUNK", b"\0\0\0\0"]


def _status(pid: int) -> dict[str, int]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        k, _, v = line.partition(":")
        if k in ("VmRSS", "Threads"):
            out[k] = int(v.split()[0])
    return out


def _drain(s: socket.socket) -> bool:
    """Read whatever the device sent; False once it has closed the connection."""
    s.setblocking(False)
    try:
        while True:
            if not s.recv(1 << 16):
                return False
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        s.setblocking(True)


def _packet(rng: random.Random, *, online: bool, streams: list[int]) -> bytes:
    # before AUTH most packets are wrong in some way; after it most are well-formed, so the fuzz reaches the
    # streams, the shell and the sync service instead of only being dropped at the header
    wrong = rng.random() < (0.5 if not online else 0.1)
    if wrong and rng.random() < 0.2:
        return rng.randbytes(rng.randint(1, 64))  # garbage
    cmd = rng.choice(_CMDS) if wrong else rng.choice([P.A_OPEN, P.A_OKAY, P.A_CLSE, P.A_WRTE, P.A_WRTE, P.A_WRTE])
    # the device numbers its streams 1, 2, ... per connection; our ids are in `streams`: aim at live streams often
    arg0 = rng.choice([0, 1, 2, 3, *streams, *streams, rng.getrandbits(32)])
    arg1 = rng.choice([0, rng.randint(1, 8), rng.randint(1, 8), rng.getrandbits(32)])
    if cmd == P.A_OPEN:
        data = rng.choice(_SERVICES) + (b"\0" if rng.random() < 0.8 else b"")
    elif cmd == P.A_WRTE and rng.random() < 0.5:
        ident = rng.choice(_SYNC_IDS)
        body = rng.choice([b"/data/local/tmp/fz,33188", b"/data/local/tmp", b"/etc/passwd", rng.randbytes(16)])
        length = rng.choice([len(body), rng.getrandbits(32), 0, 70000])
        data = struct.pack("<4sI", ident, length) + body
    elif cmd == P.A_WRTE and rng.random() < 0.5:
        data = struct.pack("<BI", rng.randint(0, 5), rng.choice([1, 3, 1 << 30])) + rng.randbytes(3)
    else:
        limit = 5000 if not online else 300_000
        data = rng.randbytes(rng.choice([0, 1, 20, 256, 4096, rng.randint(0, limit)]))
    length = len(data)
    check = P.checksum(data)
    magic = cmd ^ 0xFFFFFFFF
    r = rng.random() if wrong else 1.0
    if r < 0.3:
        magic ^= 1
    elif r < 0.5:
        check ^= 7
    elif r < 0.7:
        length = rng.choice([length + 1, 1 << 20, 0xFFFFFFFF])
    raw = struct.pack("<6I", cmd, arg0, arg1, length, check, magic) + data
    if wrong and rng.random() < 0.2:
        raw = raw[: rng.randint(1, len(raw))]  # truncated: the next packet starts mid-header
    return raw


def _connect(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=3)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # small packets, no 40 ms delayed-ACK stalls
    return s


def _auth(port: int, key) -> socket.socket | None:
    s = _connect(port)
    try:
        s.sendall(P.Packet(P.A_CNXN, P.VERSION, 256 * 1024, b"host::fuzz\0").pack())
        token = P.read_packet(s, max_payload=1 << 20, check_data=False)
        s.sendall(P.Packet(P.A_AUTH, P.AUTH_SIGNATURE, 0, sign_token(key, token.data)).pack())
        if P.read_packet(s, max_payload=1 << 20, check_data=False).name == "CNXN":
            return s
    except (OSError, EOFError, P.ProtocolError):
        pass
    s.close()
    return None


def _pump(s: socket.socket, want: tuple[str, int] | None, timeout: float = 1.0) -> P.Packet | None:
    """Read the device's packets, acknowledging its WRTEs, until one named ``want[0]`` for our stream ``want[1]``
    arrives (returned) or ``timeout`` passes (None). Raises OSError/EOFError when the device drops us."""
    s.settimeout(timeout)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            pkt = P.read_packet(s, max_payload=1 << 20, check_data=False)
            if pkt.name == "WRTE":
                s.sendall(P.Packet(P.A_OKAY, pkt.arg1, pkt.arg0).pack())
            if want and pkt.name in (want[0], "CLSE") and pkt.arg1 == want[1]:
                return pkt
    except TimeoutError:
        return None
    finally:
        s.settimeout(3)
    return None


def _fuzz(port: int, key, rng: random.Random) -> int:
    """Send at least MIN_PACKETS packets; returns how many. After AUTH, streams are opened properly and most
    WRTEs go to a live one (waiting for its OKAY, as ADB's flow control asks), so the shell, shell v2 and the
    sync service see fuzzed bytes, not just the packet parser."""
    sent = 0
    while sent < MIN_PACKETS:
        online = rng.random() < 0.6
        s = _auth(port, key) if online else _connect(port)
        if s is None:
            continue
        live: list[tuple[int, int]] = []  # (our id, the device's id)
        try:
            for _ in range(rng.randint(1, 40)):
                r = rng.random()
                if online and (r < 0.15 or (not live and r < 0.5)):
                    local = len(live) + 1 + rng.randint(0, 3)
                    s.sendall(P.Packet(P.A_OPEN, local, 0, rng.choice(_SERVICES) + b"\0").pack())
                    sent += 1
                    pkt = _pump(s, ("OKAY", local), timeout=0.5)
                    if pkt is not None and pkt.name == "OKAY":
                        live.append((local, pkt.arg0))
                elif online and live and r < 0.75:
                    local, remote = rng.choice(live)
                    body = _packet(rng, online=True, streams=[local])[24:] if rng.random() < 0.5 else rng.randbytes(
                        rng.choice([1, 8, 100, 4096]))  # fmt: skip
                    s.sendall(P.Packet(P.A_WRTE, local, remote, body[:200_000]).pack())
                    sent += 1
                    _pump(s, ("OKAY", local), timeout=0.1)
                else:
                    s.sendall(_packet(rng, online=online, streams=[x for x, _ in live]))
                    sent += 1
                    if not _drain(s):
                        break
        except (OSError, EOFError, P.ProtocolError):
            pass  # the device dropped us: exactly what it should do with much of this
        finally:
            s.close()
    return sent


@pytest.fixture()
def device(tmp_path: Path):
    key_path = ensure_key(tmp_path / "keys" / "adbkey")
    proc, port, root = start_device_process(tmp_path, key_path)
    try:
        yield proc, port, key_path, root
    finally:
        assert stop_device_process(proc) == 0


def test_protocol_fuzz_leaves_the_device_serving(device, tmp_path: Path) -> None:
    proc, port, key_path, root = device
    tr = AdbShellTransport(f"127.0.0.1:{port}", key_path=key_path)
    assert tr.shell("echo warm").stdout == "warm\n"
    tr.close()
    time.sleep(0.3)
    before = _status(proc.pid)

    sent = _fuzz(port, load_private_key(key_path), random.Random(SEED))
    assert sent >= MIN_PACKETS
    assert proc.poll() is None, "the device died under the fuzz"

    deadline = time.monotonic() + 20  # dropped connections and finished services release their threads
    while _status(proc.pid)["Threads"] > before["Threads"] + 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    after = _status(proc.pid)
    assert after["Threads"] <= before["Threads"] + 2, (before, after)
    assert after["VmRSS"] - before["VmRSS"] < 64 * 1024, f"RSS grew by {(after['VmRSS'] - before['VmRSS']) // 1024} MB"
    assert not list(root.rglob("*.mpk-sync-tmp")), "a fuzzed push left a temp file behind"

    tr = AdbShellTransport(f"127.0.0.1:{port}", key_path=key_path)
    try:
        assert tr.shell("echo after-fuzz; false").exit_code == 1
        payload = tmp_path / "p.bin"
        payload.write_bytes(os.urandom(300_000))
        assert tr.push(payload, "/data/local/tmp/after-fuzz.bin") is True
        tr.pull("/data/local/tmp/after-fuzz.bin", tmp_path / "back.bin")
        assert (tmp_path / "back.bin").read_bytes() == payload.read_bytes()
    finally:
        tr.close()
    if shutil.which("adb"):
        _debian_adb_still_works(port, key_path, tmp_path)


def _debian_adb_still_works(port: int, key_path: Path, tmp_path: Path) -> None:
    """Debian's adb with its own key (authorized like a user would), on a private server port and HOME."""
    home = tmp_path / "adbhome"
    (home / ".android").mkdir(parents=True)
    shutil.copy(key_path, home / ".android" / "adbkey")
    shutil.copy(str(key_path) + ".pub", home / ".android" / "adbkey.pub")
    server_port = 20000 + (os.getpid() + 7) % 20000
    env = dict(os.environ, HOME=str(home), ADB_VENDOR_KEYS="")

    def adb(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["adb", "-P", str(server_port), *args], env=env, capture_output=True, text=True,
                              timeout=60, check=False)  # fmt: skip

    try:
        assert adb("connect", f"127.0.0.1:{port}").stdout.startswith("connected to")
        r = adb("-s", f"127.0.0.1:{port}", "shell", "echo", "debian-adb")
        assert (r.returncode, r.stdout) == (0, "debian-adb\n"), r.stderr
    finally:
        adb("kill-server")
