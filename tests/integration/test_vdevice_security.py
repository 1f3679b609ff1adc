"""The virtual device as an attacker on this machine would try it: specs naming host files, pushes that are too
large, aborted or malformed, connections that never authorize or sit idle, floods, and running out of file
descriptors. Real clients (the adb-shell library through mpk's transport) and a raw ADB peer over loopback;
the only stand-in is the benchmark runner itself (tests/integration/vdevice_helpers.py says why)."""

from __future__ import annotations

import json
import logging
import os
import resource
import socket
import struct
import time
from pathlib import Path

import pytest

from mpk.errors import DeviceError, DeviceUnauthorized
from runners.transport.adb_shell import AdbShellTransport
from runners.transport.adbkey import ensure_key, public_key_line
from runners.vdevice import protocol as P
from runners.vdevice.server import VirtualDevice
from tests.integration.vdevice_helpers import (
    closed,
    open_service,
    raw_auth,
    raw_connect,
    read_pkt,
    sha256,
    start_device_process,
    stop_device_process,
    valid_spec,
    wait_done,
    write_runner,
)

_ID_LEN = struct.Struct("<4sI")


@pytest.fixture(scope="module")
def key(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ensure_key(tmp_path_factory.mktemp("keys") / "adbkey")


@pytest.fixture(scope="module")
def pids(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("pids")


@pytest.fixture(scope="module")
def vd(tmp_path_factory: pytest.TempPathFactory, key: Path, pids: Path):
    root = tmp_path_factory.mktemp("vd")
    old = os.environ.get("MPK_TEST_PIDS")
    os.environ["MPK_TEST_PIDS"] = str(pids)  # the stand-in runner drops runner.pid here: proof that it ran
    try:
        with VirtualDevice(root / "dev", runner_cmd=write_runner(root)) as v:
            v.authorize(public_key_line(key))
            yield v
    finally:
        if old is None:
            os.environ.pop("MPK_TEST_PIDS", None)
        else:
            os.environ["MPK_TEST_PIDS"] = old


@pytest.fixture()
def t(vd: VirtualDevice, key: Path):
    tr = AdbShellTransport(vd.serial, key_path=key)
    yield tr
    tr.close()


def _sh(t: AdbShellTransport):
    return lambda c: (lambda r: (r.exit_code, r.stdout))(t.shell(c))


def _run_spec(t: AdbShellTransport, tmp_path: Path, run_id: str, spec: dict, files: dict[str, bytes],
              vd: VirtualDevice | None = None) -> str:  # fmt: skip
    """Push the spec and its files (or, with ``vd``, place them straight into the sandbox: pushing is tested
    elsewhere and this keeps the many-case tests fast), start the activity and return DONE's text."""
    remote = f"/data/local/tmp/mpk/{run_id}"
    for rel, data in {**files, "spec.json": json.dumps(spec).encode()}.items():
        if vd is not None:
            dst = vd.device.fs.root / remote.lstrip("/") / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.write_bytes(data)
            continue
        local = tmp_path / f"{run_id}-{rel.replace('/', '_')}"
        local.write_bytes(data)
        t.push(local, f"{remote}/{rel}")
    r = t.shell(f"am start -W -n org.mpk.bench/.BenchmarkActivity --es spec {remote}/spec.json")
    assert r.exit_code == 0 and "Status: ok" in r.stdout, r.stdout
    return wait_done(_sh(t), run_id)


def test_spec_naming_host_files_leaks_nothing(vd: VirtualDevice, t: AdbShellTransport, tmp_path: Path,
                                              pids: Path) -> None:  # fmt: skip
    """A spec whose artifact, extra file or reference tensor names a host file -- absolute, through '..', or
    through a symlink planted in the sandbox -- is refused before the runner starts, and the refusal is the same
    text whether the host file exists or not: no existence, size, hash or content gets out."""
    secret = tmp_path / "secret.bin"
    body = b"TOPSECRET-" + os.urandom(12).hex().encode() + b"x" * 12345
    secret.write_bytes(body)
    missing = tmp_path / "missing.bin"
    up = "../" * 30
    run_dir = vd.device.fs.root / "data/local/tmp/mpk"
    cases: list[tuple[str, str, str]] = []  # (label, name for an existing host file, name for a missing one)
    cases.append(("absolute", str(secret), str(missing)))
    cases.append(("dotdot", up + str(secret).lstrip("/"), up + str(missing).lstrip("/")))
    cases.append(("etc", "/etc/passwd", "/etc/no-such-file-here"))
    cases.append(("link", "link-to-secret.bin", "link-to-missing.bin"))
    answers = []
    for label, present, absent in cases:
        texts = []
        for which, name in (("p", present), ("a", absent)):
            for field in ("path", "reference", "extra"):
                rid = f"leak-{label}-{which}-{field}"
                (run_dir / rid).mkdir(parents=True, exist_ok=True)
                (run_dir / rid / "link-to-secret.bin").symlink_to(secret)
                (run_dir / rid / "link-to-missing.bin").symlink_to(missing)
                spec = {
                    "path": valid_spec(rid, path=name),
                    "reference": valid_spec(rid, reference_path=name),
                    "extra": valid_spec(rid, extra_files=[name]),
                }[field]
                done = _run_spec(t, tmp_path, rid, spec, {"model.onnx": b"model"}, vd)
                assert done.startswith("error:"), (label, which, field, done)
                texts.append(done.replace(name, "<NAME>").replace(rid, "<RID>"))
                answers.append(done)
        half = len(texts) // 2
        assert texts[:half] == texts[half:], f"{label}: refusals differ for a present and a missing host file"
    assert not (pids / "runner.pid").exists(), "the runner started on a spec that names a host file"
    logcat = t.shell("logcat -d").stdout
    everything = "\n".join(answers) + logcat
    for p in vd.root.rglob("*"):
        if p.is_file() and not p.is_symlink():
            data = p.read_bytes()
            assert body[:30] not in data and sha256(body).encode() not in data, p
    assert body[:30].decode() not in everything and sha256(body) not in everything and f" {len(body)}" not in everything
    assert len(list((vd.root / "activity").iterdir())) == 0


def test_run_id_cannot_name_a_folder_elsewhere(vd: VirtualDevice, t: AdbShellTransport, tmp_path: Path) -> None:
    spec = valid_spec("../../../../sdcard/evil")
    done = _run_spec(t, tmp_path, "rid-evil", spec, {"model.onnx": b"m"})
    assert done.startswith("error: run_id") and "must be 1-128 of" in done
    assert not (vd.device.fs.root / "sdcard/evil").exists()


def test_legit_spec_runs_on_private_copies(vd: VirtualDevice, t: AdbShellTransport, tmp_path: Path) -> None:
    model, ref = os.urandom(1000), os.urandom(64)
    spec = valid_spec("legit", reference_path="reference/x.bin")
    done = _run_spec(t, tmp_path, "legit", spec, {"model.onnx": model, "reference/x.bin": ref})
    assert done == "ok"
    res = json.loads(t.shell("run-as org.mpk.bench cat files/mpk/legit/result.json").stdout)
    assert res["seen"] == {"model.onnx": sha256(model), "reference/x.bin": sha256(ref)}
    assert len(list((vd.root / "activity").iterdir())) == 0, "private copies were not cleaned up"


def test_push_too_large_fails_with_reason_and_leaves_nothing(vd: VirtualDevice, t: AdbShellTransport,
                                                             tmp_path: Path) -> None:  # fmt: skip
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(3 << 20))
    vd.max_push_bytes = 1 << 20
    try:
        with pytest.raises(DeviceError, match="file too large: mpk's virtual device accepts at most 1048576 bytes"):
            t.push(big, "/data/local/tmp/big.bin")
    finally:
        vd.max_push_bytes = 2 << 30
    assert t.shell("ls /data/local/tmp/big.bin").exit_code == 1
    assert not list(vd.device.fs.root.rglob("*.mpk-sync-tmp"))
    small = tmp_path / "small.bin"
    small.write_bytes(b"s" * 1000)
    assert t.push(small, "/data/local/tmp/small.bin") is True


def _sync_stream(vd: VirtualDevice, key: Path) -> tuple[socket.socket, int]:
    s = raw_auth(vd.port, key)
    remote = open_service(s, "sync:")
    assert remote
    return s, remote


def _wrte(s: socket.socket, remote: int, data: bytes) -> None:
    s.sendall(P.Packet(P.A_WRTE, 1, remote, data).pack())
    ack = read_pkt(s)
    assert ack.name == "OKAY", ack


def test_send_errors_answer_fail_before_close(vd: VirtualDevice, key: Path) -> None:
    """A malformed DATA header mid-SEND: the client reads FAIL with the reason, then CLSE; no temp file stays."""
    s, remote = _sync_stream(vd, key)
    with s:
        path = b"/data/local/tmp/bad.bin,33188"
        _wrte(s, remote, _ID_LEN.pack(b"SEND", len(path)) + path)
        _wrte(s, remote, _ID_LEN.pack(b"DATA", 4) + b"abcd")
        _wrte(s, remote, _ID_LEN.pack(b"JUNK", 0))
        reply = read_pkt(s)
        assert reply.name == "WRTE" and reply.data.startswith(b"FAIL"), reply
        assert b"invalid data message" in reply.data
        s.sendall(P.Packet(P.A_OKAY, 1, remote).pack())
        assert read_pkt(s).name == "CLSE"
    assert not list(vd.device.fs.root.rglob("*.mpk-sync-tmp"))
    assert not (vd.device.fs.root / "data/local/tmp/bad.bin").exists()


def test_aborted_send_leaves_no_temp_file(vd: VirtualDevice, key: Path, t: AdbShellTransport) -> None:
    s, remote = _sync_stream(vd, key)
    path = b"/data/local/tmp/aborted.bin,33188"
    _wrte(s, remote, _ID_LEN.pack(b"SEND", len(path)) + path)
    _wrte(s, remote, _ID_LEN.pack(b"DATA", 60000) + b"x" * 60000)
    tmp = vd.device.fs.root / "data/local/tmp/.aborted.bin.mpk-sync-tmp"
    assert tmp.exists()  # the transfer is under way ...
    s.close()  # ... and the client vanishes
    deadline = time.monotonic() + 5
    while tmp.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not tmp.exists() and not (vd.device.fs.root / "data/local/tmp/aborted.bin").exists()
    assert t.shell("echo alive").stdout == "alive\n"


def test_leftover_temp_files_are_swept_at_start(tmp_path: Path) -> None:
    """A device killed mid-push (nothing runs to clean up) leaves a temp file; the next start removes it."""
    VirtualDevice(tmp_path)
    leftover = tmp_path / "fs/data/local/tmp/.x.bin.mpk-sync-tmp"
    leftover.write_bytes(b"half a file")
    VirtualDevice(tmp_path)
    assert not leftover.exists()


def test_preauth_packets_are_small_and_flow_control_is_enforced(vd: VirtualDevice, key: Path,
                                                                t: AdbShellTransport) -> None:  # fmt: skip
    with raw_connect(vd.port) as s:  # announcing 256 KiB before AUTH: dropped on the header, nothing buffered
        s.sendall(struct.pack("<6I", P.A_CNXN, P.VERSION, 4096, 256 * 1024, 0, P.A_CNXN ^ 0xFFFFFFFF))
        assert closed(s, 2)
    with raw_auth(vd.port, key) as s:  # a second WRTE before our OKAY breaks ADB's flow control
        remote = open_service(s, "shell:sleep 0.5")
        s.sendall(P.Packet(P.A_WRTE, 1, remote, b"a").pack())
        s.sendall(P.Packet(P.A_WRTE, 1, remote, b"b").pack())
        assert closed(s, 3)
    with raw_auth(vd.port, key) as s:  # more than max_streams: the extra OPEN is refused, the connection stays
        ids = [open_service(s, "shell:sleep 0.3", local_id=i + 1) for i in range(vd.max_streams + 1)]
        assert all(ids[:-1]) and ids[-1] == 0
    assert t.shell("echo alive").stdout == "alive\n"


def test_handshake_and_idle_timeouts(tmp_path: Path, key: Path) -> None:
    with VirtualDevice(tmp_path, idle_timeout=0.6, handshake_timeout=0.6) as v:
        v.authorize(public_key_line(key))
        with raw_connect(v.port) as s:
            s.sendall(P.Packet(P.A_CNXN, P.VERSION, 4096, b"host::\0").pack())
            assert closed(s, 3), "a connection that never authorizes must be closed"
        with raw_auth(v.port, key) as s:
            assert closed(s, 3), "an idle authorized connection must be closed"
        with raw_auth(v.port, key) as s:  # busy is not idle: a command running longer than the timeout finishes
            remote = open_service(s, "shell:sleep 1.5; echo finished")
            s.settimeout(5)
            got = b""
            while True:
                pkt = read_pkt(s)
                if pkt.name == "WRTE":
                    got += pkt.data
                    s.sendall(P.Packet(P.A_OKAY, 1, remote).pack())
                elif pkt.name == "CLSE":
                    break
            assert got == b"finished\n"


def test_unknown_key_closed_at_handshake_timeout_reads_as_unauthorized(tmp_path: Path, key: Path) -> None:
    """A device that stops waiting for "Allow" and closes: the client says so, not "cannot connect"."""
    stranger = ensure_key(tmp_path / "stranger" / "adbkey")
    with VirtualDevice(tmp_path / "dev", handshake_timeout=0.5) as v:
        tr = AdbShellTransport(v.serial, key_path=stranger, auth_timeout=10)
        t0 = time.monotonic()
        with pytest.raises(DeviceUnauthorized, match="did not authorize"):
            tr.shell("echo hi", retry=False)
        assert time.monotonic() - t0 < 5


def test_connection_cap_is_logged_and_recovers(tmp_path: Path, key: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="mpk.vdevice")
    with VirtualDevice(tmp_path, max_connections=3) as v:
        v.authorize(public_key_line(key))
        held = [raw_connect(v.port) for _ in range(3)]
        deadline = time.monotonic() + 5
        while v.connections < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        extra = raw_connect(v.port)
        assert closed(extra, 3), "a connection over the cap must be closed"
        assert "3 connections open (the limit); refusing" in caplog.text
        for s in [*held, extra]:
            s.close()
        deadline = time.monotonic() + 5
        while v.connections and time.monotonic() < deadline:
            time.sleep(0.01)
        tr = AdbShellTransport(v.serial, key_path=key)
        try:
            assert tr.shell("echo back").stdout == "back\n"
        finally:
            tr.close()


def _limit_fds() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (40, 40))


def test_out_of_file_descriptors_is_survived_and_logged(tmp_path: Path, key: Path) -> None:
    """With the open-file limit reached the accept loop keeps going (it used to end and the server exited 0
    with no log line); once connections close the device serves again, and SIGTERM still exits 0."""
    proc, port, _root = start_device_process(tmp_path, key, "--max-connections", "1000", preexec_fn=_limit_fds)
    log_path = tmp_path / "vdevice.log"
    try:
        flood = [raw_connect(port) for _ in range(50)]
        deadline = time.monotonic() + 10
        while "Too many open files" not in log_path.read_text() and time.monotonic() < deadline:
            time.sleep(0.05)
        text = log_path.read_text()
        assert "Too many open files" in text and "still serving" in text, text[-2000:]
        assert proc.poll() is None, "the device exited when it ran out of file descriptors"
        for s in flood:
            s.close()
        time.sleep(0.5)
        tr = AdbShellTransport(f"127.0.0.1:{port}", key_path=key)
        try:
            assert tr.shell("echo served").stdout == "served\n"
        finally:
            tr.close()
    finally:
        assert stop_device_process(proc) == 0
