"""mpk's virtual Android device: a loopback-only adbd speaking the real ADB transport protocol.

Any ADB client (Debian's ``adb connect``, the adb-shell library, mpk's own
transports) talks to it over TCP exactly as to a phone in wireless-debugging
mode: CNXN, AUTH with RSA keys from an authorized-keys file, then streams
(OPEN/OKAY/WRTE/CLSE) carrying ``shell:``, ``shell,v2:``, ``exec:`` and ``sync:``.
It binds 127.0.0.1 only: a shell on it runs the host runner, so it must never be
reachable from the network.

Example::

    with VirtualDevice(tmp_path) as vd:      # vd.serial == "127.0.0.1:<port>"
        vd.authorize(public_key_line(ensure_key()))
        ...
"""

from __future__ import annotations

import logging
import os
import queue
import socket
import struct
import threading
from pathlib import Path
from typing import Any

from mpk.errors import ConfigError, UsageError
from runners.transport.adbkey import decode_public_key, verify_token_signature
from runners.vdevice import protocol as P
from runners.vdevice.device import DeviceState
from runners.vdevice.shell import Shell
from runners.vdevice.sync import SyncError, serve_sync

log = logging.getLogger("mpk.vdevice")

LOOPBACK = ("127.0.0.1", "localhost")
#: Features we advertise: only what this server implements (adb falls back for the rest).
FEATURES = ("shell_v2", "fixed_push_mkdir")
_WRITE_TIMEOUT = 120.0

# shell protocol v2 packet ids
_V2_STDIN, _V2_STDOUT, _V2_STDERR, _V2_EXIT, _V2_CLOSE_STDIN = 0, 1, 2, 3, 4


class StreamClosed(Exception):
    pass


class Stream:
    """One OPENed service. One WRTE in flight per direction: we wait for the peer's OKAY before the next."""

    def __init__(self, conn: Connection, local_id: int, remote_id: int) -> None:
        self.conn = conn
        self.local_id = local_id
        self.remote_id = remote_id
        self._incoming: queue.Queue[bytes | None] = queue.Queue()
        self._buf = bytearray()
        self._may_write = threading.Event()
        self._may_write.set()
        self.closed = False
        self._sent_clse = False
        self._clse_lock = threading.Lock()

    # peer -> us
    def on_data(self, data: bytes) -> None:
        self._incoming.put(data)

    def on_okay(self) -> None:
        self._may_write.set()

    def on_close(self) -> None:
        self.closed = True
        self._incoming.put(None)
        self._may_write.set()

    def _take(self) -> bytes | None:
        data = self._incoming.get()
        if data is None:
            self._incoming.put(None)  # keep EOF visible to later reads
            return None
        if not self.closed:
            # OKAY only once consumed: that is the flow control the peer waits on.
            self.conn.send(P.Packet(P.A_OKAY, self.local_id, self.remote_id))
        return data

    def read(self) -> bytes | None:
        if self._buf:
            out = bytes(self._buf)
            self._buf.clear()
            return out
        return self._take()

    def read_exact(self, n: int) -> bytes:
        while len(self._buf) < n:
            data = self._take()
            if data is None:
                raise EOFError("stream closed")
            self._buf += data
        out = bytes(self._buf[:n])
        del self._buf[:n]
        return out

    # us -> peer
    def write(self, data: bytes) -> None:
        step = self.conn.max_payload
        for i in range(0, len(data), step):
            if not self._may_write.wait(_WRITE_TIMEOUT):
                raise StreamClosed("peer never acknowledged a WRTE")
            if self.closed:
                raise StreamClosed("peer closed the stream")
            self._may_write.clear()
            self.conn.send(P.Packet(P.A_WRTE, self.local_id, self.remote_id, data[i : i + step]))

    def close(self) -> None:
        """Send our CLSE once (also in answer to the peer's: adb-shell waits for that reply)."""
        self.closed = True
        with self._clse_lock:
            send, self._sent_clse = not self._sent_clse, True
        if send:
            self.conn.send(P.Packet(P.A_CLSE, self.local_id, self.remote_id))
        self.conn.drop_stream(self.local_id)


class Connection:
    """One client connection: handshake, auth, and the stream table."""

    def __init__(self, server: VirtualDevice, sock: socket.socket, peer: str) -> None:
        self.server = server
        self.sock = sock
        self.peer = peer
        self.version = P.VERSION
        self.max_payload = 4096  # until CNXN tells us more
        self.check_data = True
        self.online = False
        self._token = b""
        self._send_lock = threading.Lock()
        self._streams: dict[int, Stream] = {}
        self._next_id = 1
        self._lock = threading.Lock()

    def send(self, pkt: P.Packet) -> None:
        with self._send_lock:
            self.sock.sendall(pkt.pack())

    def drop_stream(self, local_id: int) -> None:
        with self._lock:
            self._streams.pop(local_id, None)

    def serve(self) -> None:
        try:
            while True:
                pkt = P.read_packet(self.sock, max_payload=P.MAX_PAYLOAD, check_data=self.check_data)
                self._dispatch(pkt)
        except P.ProtocolError as e:
            log.warning("vdevice: dropping %s: malformed packet: %s", self.peer, e)
        except (EOFError, ConnectionError, OSError):
            pass
        finally:
            for s in list(self._streams.values()):
                s.on_close()
            try:
                self.sock.close()
            except OSError:
                pass

    def _dispatch(self, pkt: P.Packet) -> None:
        if pkt.command == P.A_CNXN:
            self._on_cnxn(pkt)
        elif pkt.command == P.A_AUTH:
            self._on_auth(pkt)
        elif not self.online:
            raise P.ProtocolError(f"{pkt.name} before the connection was authorized")
        elif pkt.command == P.A_OPEN:
            self._on_open(pkt)
        elif pkt.command in (P.A_OKAY, P.A_WRTE, P.A_CLSE):
            with self._lock:
                stream = self._streams.get(pkt.arg1)
            if stream is None or (stream.remote_id and pkt.arg0 and stream.remote_id != pkt.arg0):
                if pkt.command == P.A_WRTE:  # tell the peer that stream is gone
                    self.send(P.Packet(P.A_CLSE, 0, pkt.arg0))
                return
            if pkt.command == P.A_OKAY:
                stream.on_okay()
            elif pkt.command == P.A_WRTE:
                stream.on_data(pkt.data)
            else:
                stream.on_close()
                stream.close()
        else:
            raise P.ProtocolError(f"unexpected {pkt.name}")

    def _on_cnxn(self, pkt: P.Packet) -> None:
        if pkt.arg0 < P.VERSION_MIN:
            raise P.ProtocolError(f"CNXN version 0x{pkt.arg0:08x} is older than 0x{P.VERSION_MIN:08x}")
        self.version = min(pkt.arg0, P.VERSION)
        self.check_data = self.version < P.VERSION_SKIP_CHECKSUM
        self.max_payload = max(1024, min(pkt.arg1 or 4096, P.MAX_PAYLOAD))
        self.online = False
        if self.server.auth_required:
            self._send_token()
        else:
            self._go_online()

    def _send_token(self) -> None:
        self._token = os.urandom(20)
        self.send(P.Packet(P.A_AUTH, P.AUTH_TOKEN, 0, self._token))

    def _on_auth(self, pkt: P.Packet) -> None:
        if self.online or not self._token:
            raise P.ProtocolError("AUTH outside the handshake")
        if pkt.arg0 == P.AUTH_SIGNATURE:
            for key in self.server.load_keys():
                if verify_token_signature(key, self._token, pkt.data):
                    self._go_online()
                    return
            self._send_token()  # adbd answers a wrong signature with a fresh token; the client tries its next key
        elif pkt.arg0 == P.AUTH_RSAPUBLICKEY:
            line = pkt.data.rstrip(b"\0").decode("ascii", "replace")
            if self.server.auto_authorize:
                try:
                    decode_public_key(line)
                except ValueError as e:
                    raise P.ProtocolError(f"bad RSAPUBLICKEY: {e}") from None
                self.server.authorize(line)
                log.info("vdevice: auto-authorized key from %s", self.peer)
                self._go_online()
            else:
                # A phone would show "Allow USB debugging?" now. We have nobody to ask: stay unauthorized.
                log.warning(
                    "vdevice: %s offered an unknown key; not authorized (add it to %s)",
                    self.peer,
                    self.server.authorized_keys,
                )
        else:
            raise P.ProtocolError(f"unknown AUTH type {pkt.arg0}")

    def _go_online(self) -> None:
        self.online = True
        props = self.server.device.props
        banner = "device::" + "".join(
            f"{k}={props.get(k, '')};" for k in ("ro.product.name", "ro.product.model", "ro.product.device")
        )
        banner += "features=" + ",".join(FEATURES)
        self.send(P.Packet(P.A_CNXN, self.version, self.max_payload, banner.encode()))

    def _on_open(self, pkt: P.Packet) -> None:
        service = pkt.data.rstrip(b"\0").decode("utf-8", "replace")
        handler = _service_handler(service)
        if handler is None or pkt.arg0 == 0:
            log.info("vdevice: refused service %r", service)
            self.send(P.Packet(P.A_CLSE, 0, pkt.arg0))
            return
        with self._lock:
            local_id = self._next_id
            self._next_id += 1
            stream = Stream(self, local_id, pkt.arg0)
            self._streams[local_id] = stream
        self.send(P.Packet(P.A_OKAY, local_id, pkt.arg0))
        threading.Thread(
            target=self._run_service, args=(handler, stream, service), name=f"vdevice-{service[:20]}", daemon=True
        ).start()

    def _run_service(self, handler: Any, stream: Stream, service: str) -> None:
        try:
            handler(self.server, stream, service)
        except (StreamClosed, EOFError, ConnectionError, OSError):
            pass
        except SyncError as e:
            log.warning("vdevice: sync protocol error: %s", e)
        except Exception:  # a bug in one service must not take the device down
            log.exception("vdevice: service %r crashed", service)
        finally:
            try:
                stream.close()
            except OSError:
                pass


# -- services ---------------------------------------------------------------------------------------------------
def _service_handler(service: str):
    if service.startswith("shell,") or service.startswith("shell:"):
        return _shell_service
    if service.startswith("exec:"):
        return _exec_service
    if service == "sync:":
        return _sync_service
    return None


def _shell_service(server: VirtualDevice, stream: Stream, service: str) -> None:
    head, _, command = service.partition(":")
    v2 = "v2" in head.split(",")[1:]
    shell = Shell(server.device)
    if not command.strip():
        _interactive(shell, stream, v2)
        return
    code, out, err = shell.run(command, merge_stderr=not v2)
    if v2:
        _v2_write(stream, _V2_STDOUT, out)
        _v2_write(stream, _V2_STDERR, err)
        stream.write(struct.pack("<BI", _V2_EXIT, 1) + bytes([code & 0xFF]))
    else:
        stream.write(out + err)


def _exec_service(server: VirtualDevice, stream: Stream, service: str) -> None:
    _code, out, _err = Shell(server.device).run(service.partition(":")[2])
    stream.write(out)


def _sync_service(server: VirtualDevice, stream: Stream, service: str) -> None:
    serve_sync(stream, server.device.fs)


def _v2_write(stream: Stream, ident: int, data: bytes) -> None:
    step = 64 * 1024
    for i in range(0, len(data), step):
        chunk = data[i : i + step]
        stream.write(struct.pack("<BI", ident, len(chunk)) + chunk)


def _interactive(shell: Shell, stream: Stream, v2: bool) -> None:
    """Line-at-a-time ``adb shell`` with no command: enough to poke around, not a tty."""
    pending = b""
    prompt = b"vdevice:/ $ "
    stream.write(_v2_frame(_V2_STDOUT, prompt) if v2 else prompt)
    while True:
        data = stream.read()
        if data is None:
            return
        if v2:
            pending_v2 = data
            chunks = []
            while len(pending_v2) >= 5:
                ident, n = struct.unpack("<BI", pending_v2[:5])
                if ident == _V2_CLOSE_STDIN:
                    return
                chunks.append(pending_v2[5 : 5 + n] if ident == _V2_STDIN else b"")
                pending_v2 = pending_v2[5 + n :]
            data = b"".join(chunks)
        pending += data
        while b"\n" in pending or b"\r" in pending:
            line, _, pending = pending.replace(b"\r\n", b"\n").replace(b"\r", b"\n").partition(b"\n")
            code, out, err = shell.run(line.decode(errors="replace"))
            if line.strip() == b"exit" or line.strip().startswith(b"exit "):
                if v2:
                    stream.write(struct.pack("<BI", _V2_EXIT, 1) + bytes([code & 0xFF]))
                return
            payload = out + err + prompt
            stream.write(_v2_frame(_V2_STDOUT, payload) if v2 else payload)


def _v2_frame(ident: int, data: bytes) -> bytes:
    return struct.pack("<BI", ident, len(data)) + data


# -- the server -------------------------------------------------------------------------------------------------
class VirtualDevice:
    """A virtual Android device on 127.0.0.1. ``root`` holds its filesystem (``root/fs``) and ``adb_keys``."""

    def __init__(
        self,
        root: Path,
        *,
        port: int = 0,
        host: str = "127.0.0.1",
        authorized_keys: Path | None = None,
        profile: dict[str, Any] | Path | None = None,
        auto_authorize: bool = False,
        auth_required: bool = True,
        runner_cmd: list[str] | None = None,
    ) -> None:
        if host not in LOOPBACK:
            raise UsageError(
                f"the virtual device binds loopback only, not {host!r}",
                hint="its shell runs code on this host; use an SSH tunnel to reach it from elsewhere",
            )
        if not 0 <= port <= 65535:
            raise UsageError(f"port {port} is out of range 0..65535")
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.authorized_keys = Path(authorized_keys) if authorized_keys else self.root / "adb_keys"
        self.authorized_keys.touch(exist_ok=True)
        self.auto_authorize = auto_authorize
        self.auth_required = auth_required
        self.device = DeviceState(self.root / "fs", profile, runner_cmd=runner_cmd)
        self._requested_port = port
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._conns: set[socket.socket] = set()
        self._keys_lock = threading.Lock()
        self.port = 0

    @property
    def serial(self) -> str:
        return f"127.0.0.1:{self.port}"

    # -- keys ---------------------------------------------------------------------------------------------------
    def load_keys(self) -> list[Any]:
        keys = []
        with self._keys_lock:
            lines = self.authorized_keys.read_text().splitlines() if self.authorized_keys.exists() else []
        problems = []
        for i, line in enumerate(lines, 1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            try:
                keys.append(decode_public_key(line))
            except ValueError as e:
                problems.append(f"line {i}: {e}")
        for p in problems:
            log.warning("vdevice: %s: %s (ignored)", self.authorized_keys, p)
        return keys

    def authorize(self, public_key_line: str) -> None:
        """Add an ``adb_keys`` line (base64 Android RSAPublicKey + comment). Idempotent."""
        line = public_key_line.strip()
        try:
            decode_public_key(line)
        except ValueError as e:
            raise ConfigError(str(self.authorized_keys), [f"not an adb public key: {e}"]) from None
        with self._keys_lock:
            existing = self.authorized_keys.read_text() if self.authorized_keys.exists() else ""
            if line.split(" ", 1)[0] not in {ln.split(" ", 1)[0] for ln in existing.splitlines()}:
                with open(self.authorized_keys, "a") as f:
                    f.write(line + "\n")

    # -- lifecycle ----------------------------------------------------------------------------------------------
    def start(self) -> int:
        """Bind, start accepting in a background thread, and return the port."""
        if self._thread is not None:
            return self.port
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", self._requested_port))
        except OSError as e:
            sock.close()
            raise UsageError(f"cannot listen on 127.0.0.1:{self._requested_port}: {e.strerror or e}") from None
        sock.listen(16)
        self._sock = sock
        self.port = sock.getsockname()[1]
        self._stopping.clear()
        self._thread = threading.Thread(target=self._accept_loop, name=f"vdevice-{self.port}", daemon=True)
        self._thread.start()
        log.info("vdevice: listening on %s (root %s)", self.serial, self.root)
        return self.port

    def serve_forever(self) -> None:
        self.start()
        assert self._thread is not None
        while self._thread.is_alive():
            self._thread.join(0.5)

    def _accept_loop(self) -> None:
        assert self._sock is not None
        while not self._stopping.is_set():
            try:
                client, addr = self._sock.accept()
            except OSError:
                break
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._conns.add(client)
            conn = Connection(self, client, f"{addr[0]}:{addr[1]}")
            threading.Thread(target=self._serve_conn, args=(conn, client), daemon=True).start()

    def _serve_conn(self, conn: Connection, client: socket.socket) -> None:
        try:
            conn.serve()
        finally:
            self._conns.discard(client)

    def stop(self) -> None:
        self._stopping.set()
        if self._sock is not None:
            try:
                self._sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self._sock.close()
        for c in list(self._conns):
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self._thread is not None:
            self._thread.join(5)
        self._thread = None
        self._sock = None

    def __enter__(self) -> VirtualDevice:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
