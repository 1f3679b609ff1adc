"""The virtual device against real ADB clients over a real loopback socket: the adb-shell library and mpk's
own adb_shell transport. Nothing is mocked; the 'phone' is runners/vdevice speaking the ADB wire protocol."""

from __future__ import annotations

import json
import os
import socket
import struct
import time
from pathlib import Path

import pytest

from mpk.errors import DeviceUnauthorized
from mpk.files import sha256_file
from runners.transport.adb_shell import AdbShellTransport
from runners.transport.adbkey import ensure_key, public_key_line
from runners.vdevice import protocol as P
from runners.vdevice.server import VirtualDevice
from tests.integration.vdevice_helpers import valid_spec, wait_done, write_runner


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("keys")
    return ensure_key(d / "good" / "adbkey"), ensure_key(d / "bad" / "adbkey")


@pytest.fixture(scope="module")
def vd(tmp_path_factory: pytest.TempPathFactory, keys: tuple[Path, Path]):
    root = tmp_path_factory.mktemp("vd")
    with VirtualDevice(root / "dev", runner_cmd=write_runner(root)) as v:
        v.authorize(public_key_line(keys[0]))
        yield v


@pytest.fixture()
def t(vd: VirtualDevice, keys: tuple[Path, Path]):
    tr = AdbShellTransport(vd.serial, key_path=keys[0])
    yield tr
    tr.close()


def test_shell_exit_codes_and_props(t: AdbShellTransport) -> None:
    r = t.shell("echo hi; false")
    assert (r.exit_code, r.stdout) == (1, "hi\n")
    r = t.shell("nosuch")
    assert r.exit_code == 127 and "sh: nosuch: not found" in r.stdout
    assert t.shell("exit 42").exit_code == 42
    props = t.getprop()
    assert props["ro.product.model"] == "mpk Virtual Device"
    assert props["ro.mpk.emulated"] == "1"


def test_unknown_key_is_unauthorized(vd: VirtualDevice, keys: tuple[Path, Path]) -> None:
    tr = AdbShellTransport(vd.serial, key_path=keys[1], auth_timeout=1.0)
    with pytest.raises(DeviceUnauthorized, match="did not authorize") as e:
        tr.shell("echo hi")
    assert "accept" in e.value.format_message()


def test_push_pull_5mb_checked_and_skipped(t: AdbShellTransport, tmp_path: Path) -> None:
    src = tmp_path / "big.bin"
    src.write_bytes(os.urandom(5 * 1024 * 1024))
    assert t.push(src, "/data/local/tmp/mpk/r1/big.bin") is True
    assert t.sha256("/data/local/tmp/mpk/r1/big.bin") == sha256_file(src)
    assert t.push(src, "/data/local/tmp/mpk/r1/big.bin") is False  # identical: nothing sent
    back = tmp_path / "back.bin"
    t.pull("/data/local/tmp/mpk/r1/big.bin", back)
    assert sha256_file(back) == sha256_file(src)


def test_sandbox_escape_refused_over_adb(vd: VirtualDevice, t: AdbShellTransport, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("host secret")
    (vd.device.fs.root / "data/local/tmp/evil").symlink_to(outside)
    r = t.shell("cat /data/local/tmp/evil/secret")
    assert r.exit_code == 1 and "host secret" not in r.stdout and "Permission denied" in r.stdout
    src = tmp_path / "payload"
    src.write_bytes(b"x")
    from mpk.errors import DeviceError

    with pytest.raises(DeviceError):
        t.push(src, "/data/local/tmp/evil/dropped")
    assert not (outside / "dropped").exists()


def _raw_connect(vd: VirtualDevice) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", vd.port), timeout=5)
    return s


def _closed(s: socket.socket) -> bool:
    try:
        return s.recv(1) == b""
    except (ConnectionResetError, TimeoutError):
        return True


@pytest.mark.parametrize(
    "garbage",
    [
        b"\x00" * 3 + os.urandom(61),
        struct.pack("<6I", P.A_CNXN, P.VERSION, 4096, 0, 0, 0x12345678),  # bad magic
        struct.pack("<6I", P.A_WRTE, 1, 1, 1 << 31, 0, P.A_WRTE ^ 0xFFFFFFFF),  # huge length
    ],
)
def test_malformed_packets_drop_connection_not_server(vd: VirtualDevice, t: AdbShellTransport, garbage: bytes) -> None:
    with _raw_connect(vd) as s:
        s.sendall(garbage)
        assert _closed(s)
    assert t.shell("echo still alive").stdout == "still alive\n"


def test_unauthenticated_client_cannot_open_shell(vd: VirtualDevice, tmp_path: Path) -> None:
    with _raw_connect(vd) as s:
        s.sendall(P.Packet(P.A_CNXN, P.VERSION, 4096, b"host::\0").pack())
        pkt = P.read_packet(s, max_payload=P.MAX_PAYLOAD, check_data=False)
        assert (pkt.name, pkt.arg0) == ("AUTH", P.AUTH_TOKEN)
        s.sendall(P.Packet(P.A_OPEN, 1, 0, b"shell:echo pwned > /data/local/tmp/pwned\0").pack())
        assert _closed(s)
    with _raw_connect(vd) as s:  # a wrong signature only earns a new token
        s.sendall(P.Packet(P.A_CNXN, P.VERSION, 4096, b"host::\0").pack())
        P.read_packet(s, max_payload=P.MAX_PAYLOAD, check_data=False)
        s.sendall(P.Packet(P.A_AUTH, P.AUTH_SIGNATURE, 0, os.urandom(256)).pack())
        pkt = P.read_packet(s, max_payload=P.MAX_PAYLOAD, check_data=False)
        assert (pkt.name, pkt.arg0) == ("AUTH", P.AUTH_TOKEN)
    assert not (vd.device.fs.root / "data/local/tmp/pwned").exists()


def _wait_done(t: AdbShellTransport, run_id: str, timeout: float = 30.0) -> str:
    return wait_done(lambda c: (lambda r: (r.exit_code, r.stdout))(t.shell(c)), run_id, timeout)


def _start_bench(t: AdbShellTransport, tmp_path: Path, run_id: str, **extra: object) -> str:
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps(valid_spec(run_id, **extra)))
    t.push(spec, f"/data/local/tmp/mpk/{run_id}/spec.json")
    t.push(tmp_path / "model.onnx", f"/data/local/tmp/mpk/{run_id}/model.onnx")
    r = t.shell(f"am start -W -n org.mpk.bench/.BenchmarkActivity --es spec /data/local/tmp/mpk/{run_id}/spec.json")
    assert r.exit_code == 0 and "Status: ok" in r.stdout and "TotalTime:" in r.stdout
    return _wait_done(t, run_id)


def test_am_start_runs_runner_and_writes_done(t: AdbShellTransport, tmp_path: Path) -> None:
    (tmp_path / "model.onnx").write_bytes(b"not really a model")
    assert _start_bench(t, tmp_path, "run-ok") == "ok"
    res = json.loads(t.shell("run-as org.mpk.bench cat files/mpk/run-ok/result.json").stdout)
    assert res["emulated"] is True
    assert res["device"]["model"] == "mpk Virtual Device" and res["device"]["host_cpu"]
    assert "MPK_DONE run_id=run-ok status=ok" in t.shell("logcat -d -s MpkBench").stdout
    done = _start_bench(t, tmp_path, "run-bad", device_id="fail")
    assert done.startswith("error:") and "boom" in done
    assert "MPK_DONE run_id=run-bad status=error" in t.shell("logcat -d -s MpkBench").stdout
    assert t.shell("run-as com.other cat x").exit_code == 1


def test_stop_and_restart_port_is_free(tmp_path: Path, keys: tuple[Path, Path]) -> None:
    v = VirtualDevice(tmp_path)
    port = v.start()
    v.authorize(public_key_line(keys[0]))
    assert AdbShellTransport(v.serial, key_path=keys[0]).shell("echo x").stdout == "x\n"
    v.stop()
    time.sleep(0.05)
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()


def test_long_command_outlives_connect_timeout_and_am_start_returns_at_launch(
    tmp_path: Path, keys: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A shell command longer than the transport's connect timeout must be waited for (regression: socket reads
    used the 1 s connect timeout). ``am start -W`` returns once the activity is up, as on a phone, while the
    benchmark runs on (``pidof`` sees it); DONE comes later, and the runner ran exactly once."""
    monkeypatch.setenv("MPK_TEST_PIDS", str(tmp_path))
    with VirtualDevice(tmp_path / "dev", runner_cmd=write_runner(tmp_path / "r")) as v:
        v.authorize(public_key_line(keys[0]))
        tr = AdbShellTransport(v.serial, key_path=keys[0], connect_timeout=1.0)
        try:
            assert tr.shell("sleep 1.5; echo slept", timeout=30).stdout == "slept\n"
            spec, model = tmp_path / "spec.json", tmp_path / "model.onnx"
            spec.write_text(json.dumps(valid_spec("slow", device_id="sleep:2")))
            model.write_bytes(b"m")
            tr.push(spec, "/data/local/tmp/mpk/slow/spec.json")
            tr.push(model, "/data/local/tmp/mpk/slow/model.onnx")
            t0 = time.monotonic()
            r = tr.shell("am start -W -n org.mpk.bench/.BenchmarkActivity --es spec /data/local/tmp/mpk/slow/spec.json",
                         timeout=30, retry=False)  # fmt: skip
            assert r.exit_code == 0 and "Status: ok" in r.stdout, r.stdout
            assert time.monotonic() - t0 < 1.5
            alive = tr.shell("pidof org.mpk.bench")
            assert alive.exit_code == 0 and alive.stdout.strip().isdigit()
            assert _wait_done(tr, "slow") == "ok"
            assert tr.shell("pidof org.mpk.bench").exit_code == 1
            assert (tmp_path / "runner.pid").read_text().isdigit()
            assert len(list((tmp_path / "dev" / "activity").iterdir())) == 0  # private copies cleaned up
        finally:
            tr.close()
