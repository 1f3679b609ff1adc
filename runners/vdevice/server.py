"""mpk's virtual Android device: a loopback-only adbd speaking the real ADB transport protocol.

Any ADB client (Debian's ``adb connect``, the adb-shell library, mpk's own
transports) talks to it over TCP exactly as to a phone in wireless-debugging
mode: CNXN, AUTH with RSA keys from an authorized-keys file, then streams
(OPEN/OKAY/WRTE/CLSE) carrying ``shell:``, ``shell,v2:``, ``exec:`` and ``sync:``.
It binds 127.0.0.1 only: a shell on it runs the host runner, so it must never be
reachable from the network.

Limits, so that one client (or a flood of them) cannot take the device or the
host down: at most ``max_connections`` at once (more are accepted and closed,
with a log line); a connection that has not authorized within
``handshake_timeout`` s, or is idle (no packet and no running command) for
``idle_timeout`` s, is closed; packets before AUTH are at most 4 KiB, after it
at most the negotiated size (<= 256 KiB); at most ``max_streams`` open streams
per connection, each holding at most one unacknowledged WRTE (a client that
sends another before our OKAY breaks ADB's flow control and is dropped); SEND
stores at most ``max_push_bytes`` per file. Running out of file descriptors
(EMFILE) is logged and waited out: the accept loop only ends on ``stop()``.

Example::

    with VirtualDevice(tmp_path) as vd:      # vd.serial == "127.0.0.1:<port>"
        vd.authorize(public_key_line(ensure_key()))
        ...
"""

from __future__ import annotations

import errno
import logging
import os
import queue
import socket
import struct
import threading
import time
from pathlib import Path
from typing import Any

from mpk.errors import ConfigError, UsageError
from runners.transport.adbkey import decode_public_key, verify_token_signature
from runners.vdevice import protocol as P
from runners.vdevice.device import DeviceState
from runners.vdevice.shell import Shell
from runners.vdevice.sync import MAX_FILE_BYTES, serve_sync
from runners.vdevice.toolbox import device_shell

log = logging.getLogger("mpk.vdevice")

LOOPBACK = ("127.0.0.1", "localhost")
#: Features we advertise: only what this server implements (adb falls back for the rest).
FEATURES = ("shell_v2", "fixed_push_mkdir")
_WRITE_TIMEOUT = 120.0
#: signatures a connection may try before it is dropped (a phone asks a person after the first failures)
MAX_AUTH_ATTEMPTS = 16
#: an interactive shell line longer than this ends the session
MAX_LINE = 64 * 1024
_FD_ERRORS = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)


class _Every:
    """Rate limit for log lines that a flood would otherwise repeat thousands of times."""

    def __init__(self, seconds: float) -> None:
        self.seconds, self._last, self.suppressed = seconds, float("-inf"), 0

    def __call__(self) -> bool:
        now = time.monotonic()
        if now - self._last >= self.seconds:
            self._last = now
            return True
        self.suppressed += 1
        return False


# shell protocol v2 packet ids
_V2_STDIN, _V2_STDOUT, _V2_STDERR, _V2_EXIT, _V2_CLOSE_STDIN = 0, 1, 2, 3, 4


class StreamClosed(Exception):
    pass


class Stream:
    """One OPENed service. One WRTE in flight per direction: each side waits for the other's OKAY."""

    def __init__(self, conn: Connection, local_id: int, remote_id: int) -> None:
        self.conn = conn
        self.local_id = local_id
        self.remote_id = remote_id
        self._incoming: queue.Queue[bytes | None] = queue.Queue()
        self._unacked = 0  # WRTEs received and not yet consumed (= not yet OKAYed)
        self._count_lock = threading.Lock()
        self._buf = bytearray()
        self._may_write = threading.Event()
        self._may_write.set()
        self.closed = False
        self._sent_clse = False
        self._clse_lock = threading.Lock()

    # peer -> us
    def on_data(self, data: bytes) -> None:
        with self._count_lock:
            if self._unacked:
                raise P.ProtocolError(f"WRTE on stream {self.local_id} before our OKAY (flow control)")
            self._unacked += 1
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
        with self._count_lock:
            self._unacked -= 1
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
            try:
                self.conn.send(P.Packet(P.A_CLSE, self.local_id, self.remote_id))
            except ConnectionError:
                pass
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
        self._auth_attempts = 0
        self._send_lock = threading.Lock()
        self._streams: dict[int, Stream] = {}
        self._running = 0  # services (threads) still running on this connection
        self._next_id = 1
        self._lock = threading.Lock()
        self.connected_at = self.last_packet = time.monotonic()
        self.closing: str | None = None

    # -- state the watchdog reads --------------------------------------------------------------------------------
    @property
    def busy(self) -> bool:
        """A command is running: a quiet connection is then waiting on us, not idle."""
        return self._running > 0

    def shut(self, why: str) -> None:
        """End the connection from outside its reader (watchdog, server stop): the reader sees EOF."""
        self.closing = why
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def send(self, pkt: P.Packet) -> None:
        try:
            with self._send_lock:
                self.sock.sendall(pkt.pack())
        except OSError as e:
            self.shut("send failed")
            raise ConnectionError(f"send to {self.peer} failed: {e}") from None

    def drop_stream(self, local_id: int) -> None:
        with self._lock:
            self._streams.pop(local_id, None)

    def serve(self) -> None:
        try:
            while True:
                limit = self.max_payload if self.online else P.MAX_PAYLOAD_PREAUTH
                pkt = P.read_packet(self.sock, max_payload=limit, check_data=self.check_data)
                self.last_packet = time.monotonic()
                self._dispatch(pkt)
        except P.ProtocolError as e:
            log.warning("vdevice: dropping %s: malformed packet: %s", self.peer, e)
        except (EOFError, ConnectionError, OSError):
            if self.closing:
                log.info("vdevice: closed %s: %s", self.peer, self.closing)
        finally:
            with self._lock:
                streams = list(self._streams.values())
                self._streams.clear()
            for s in streams:
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
        if self.online:
            raise P.ProtocolError("CNXN on a connection that is already online")
        self.version = min(pkt.arg0, P.VERSION)
        self.check_data = self.version < P.VERSION_SKIP_CHECKSUM
        self.max_payload = max(1024, min(pkt.arg1 or 4096, P.MAX_PAYLOAD))
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
            self._auth_attempts += 1
            if self._auth_attempts > MAX_AUTH_ATTEMPTS:
                raise P.ProtocolError(f"more than {MAX_AUTH_ATTEMPTS} AUTH signatures")
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
        with self._lock:
            full = len(self._streams) >= self.server.max_streams
        if handler is None or pkt.arg0 == 0 or full:
            if full and self.server.stream_limit_log():
                log.warning("vdevice: %s has %d streams open (the limit); refused %r", self.peer,
                            self.server.max_streams, service[:60])  # fmt: skip
            elif not full:
                log.info("vdevice: refused service %r", service[:200])
            self.send(P.Packet(P.A_CLSE, 0, pkt.arg0))
            return
        with self._lock:
            local_id = self._next_id
            self._next_id = self._next_id % 0x7FFFFFFF + 1
            stream = Stream(self, local_id, pkt.arg0)
            self._streams[local_id] = stream
            self._running += 1
        self.send(P.Packet(P.A_OKAY, local_id, pkt.arg0))
        try:
            threading.Thread(
                target=self._run_service, args=(handler, stream, service), name=f"vdevice-{service[:20]}", daemon=True
            ).start()
        except RuntimeError:  # no thread left: refuse this stream, keep the connection
            with self._lock:
                self._running -= 1
            stream.close()

    def _run_service(self, handler: Any, stream: Stream, service: str) -> None:
        try:
            handler(self.server, stream, service)
        except (StreamClosed, EOFError, ConnectionError, OSError):
            pass
        except Exception:  # a bug in one service must not take the device down
            log.exception("vdevice: service %r crashed", service[:200])
        finally:
            try:
                stream.close()
            except OSError:
                pass
            with self._lock:
                self._running -= 1
            self.last_packet = time.monotonic()  # idle time counts from the end of the last command


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
    shell = device_shell(server.device)
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
    _code, out, _err = device_shell(server.device).run(service.partition(":")[2])
    stream.write(out)


def _sync_service(server: VirtualDevice, stream: Stream, service: str) -> None:
    serve_sync(stream, server.device.fs, max_file_bytes=server.max_push_bytes)


def _v2_write(stream: Stream, ident: int, data: bytes) -> None:
    step = 64 * 1024
    for i in range(0, len(data), step):
        chunk = data[i : i + step]
        stream.write(struct.pack("<BI", ident, len(chunk)) + chunk)


def _interactive(shell: Shell, stream: Stream, v2: bool) -> None:
    """Line-at-a-time ``adb shell`` with no command: enough to poke around, not a tty."""
    pending = b""
    v2buf = b""
    prompt = b"vdevice:/ $ "
    stream.write(_v2_frame(_V2_STDOUT, prompt) if v2 else prompt)
    while True:
        data = stream.read()
        if data is None:
            return
        if v2:
            v2buf += data
            chunks = []
            while len(v2buf) >= 5:
                ident, n = struct.unpack("<BI", v2buf[:5])
                if ident == _V2_CLOSE_STDIN:
                    return
                if n > MAX_LINE:
                    return  # no shell v2 client sends stdin frames this large
                if len(v2buf) < 5 + n:
                    break
                chunks.append(v2buf[5 : 5 + n] if ident == _V2_STDIN else b"")
                v2buf = v2buf[5 + n :]
            data = b"".join(chunks)
        pending += data
        if len(pending) > MAX_LINE and b"\n" not in pending and b"\r" not in pending:
            msg = f"sh: line longer than {MAX_LINE} bytes\n".encode()
            stream.write(_v2_frame(_V2_STDERR, msg) if v2 else msg)
            return
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
    """A virtual Android device on 127.0.0.1. ``root`` holds its filesystem (``root/fs``) and ``adb_keys``.

    Limits (see the module docstring): ``max_connections`` (16), ``idle_timeout`` (300 s),
    ``handshake_timeout`` (30 s), ``max_streams`` per connection (8), ``max_push_bytes`` per file (2 GiB).
    """

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
        max_connections: int = 16,
        idle_timeout: float = 300.0,
        handshake_timeout: float = 30.0,
        max_streams: int = 8,
        max_push_bytes: int = MAX_FILE_BYTES,
    ) -> None:
        if host not in LOOPBACK:
            raise UsageError(
                f"the virtual device binds loopback only, not {host!r}",
                hint="its shell runs code on this host; use an SSH tunnel to reach it from elsewhere",
            )
        if not 0 <= port <= 65535:
            raise UsageError(f"port {port} is out of range 0..65535")
        for name, value in (("max_connections", max_connections), ("max_streams", max_streams),
                            ("idle_timeout", idle_timeout), ("handshake_timeout", handshake_timeout),
                            ("max_push_bytes", max_push_bytes)):  # fmt: skip
            if not value > 0:
                raise UsageError(f"{name} must be > 0, got {value}")
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.authorized_keys = Path(authorized_keys) if authorized_keys else self.root / "adb_keys"
        self.authorized_keys.touch(exist_ok=True)
        self.auto_authorize = auto_authorize
        self.auth_required = auth_required
        self.max_connections = max_connections
        self.idle_timeout = idle_timeout
        self.handshake_timeout = handshake_timeout
        self.max_streams = max_streams
        self.max_push_bytes = max_push_bytes
        self.device = DeviceState(self.root / "fs", profile, runner_cmd=runner_cmd, work_dir=self.root / "activity")
        swept = self.device.fs.sweep_temp()
        if swept:
            log.info("vdevice: removed %d unfinished push(es) a previous run left behind", swept)
        self._requested_port = port
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._watchdog: threading.Thread | None = None
        self._stopping = threading.Event()
        self._conns: set[Connection] = set()
        self._conns_lock = threading.Lock()
        self._keys_lock = threading.Lock()
        self._cap_log = _Every(10.0)
        self._fd_log = _Every(10.0)
        self.stream_limit_log = _Every(10.0)
        self.port = 0

    @property
    def serial(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def connections(self) -> int:
        with self._conns_lock:
            return len(self._conns)

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
        sock.listen(64)
        self._sock = sock
        self.port = sock.getsockname()[1]
        self._stopping.clear()
        self._thread = threading.Thread(target=self._accept_loop, name=f"vdevice-{self.port}", daemon=True)
        self._thread.start()
        self._watchdog = threading.Thread(target=self._watch_idle, name=f"vdevice-idle-{self.port}", daemon=True)
        self._watchdog.start()
        log.info("vdevice: listening on %s (root %s)", self.serial, self.root)
        return self.port

    def serve_forever(self) -> int:
        """Serve until :meth:`stop`; 0 then. 4 (and an error line) if the accept loop ever ended on its own."""
        self.start()
        thread = self._thread  # stop() (e.g. from a signal handler) clears the attribute
        assert thread is not None
        while thread.is_alive():
            thread.join(0.5)
        if self._stopping.is_set():
            return 0
        log.error("vdevice: the accept loop on %s ended unexpectedly; the device is down", self.serial)
        return 4

    def _accept_loop(self) -> None:
        assert self._sock is not None
        while not self._stopping.is_set():
            try:
                client, addr = self._sock.accept()
            except OSError as e:
                if self._stopping.is_set():
                    break
                if e.errno in _FD_ERRORS:
                    if self._fd_log():
                        log.warning("vdevice: cannot accept on %s: %s (open connections: %d); still serving",
                                    self.serial, os.strerror(e.errno), self.connections)  # fmt: skip
                else:
                    log.error("vdevice: accept on %s failed: %s; still serving", self.serial, e)
                time.sleep(0.1)  # the condition passes when connections close; do not spin meanwhile
                continue
            try:
                self._admit(client, f"{addr[0]}:{addr[1]}")
            except Exception:  # never let one connection end the accept loop
                log.exception("vdevice: could not serve %s", addr)
                client.close()

    def _admit(self, client: socket.socket, peer: str) -> None:
        with self._conns_lock:
            full = len(self._conns) >= self.max_connections
        if full:
            if self._cap_log():
                log.warning("vdevice: %d connections open (the limit); refusing %s", self.max_connections, peer)
            client.close()
            return
        try:
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:  # the client is gone already
            client.close()
            return
        conn = Connection(self, client, peer)
        with self._conns_lock:
            self._conns.add(conn)
        try:
            threading.Thread(target=self._serve_conn, args=(conn,), name=f"vdevice-conn-{peer}", daemon=True).start()
        except RuntimeError:
            with self._conns_lock:
                self._conns.discard(conn)
            if self._fd_log():
                log.warning("vdevice: no thread for %s; refused", peer)
            client.close()

    def _serve_conn(self, conn: Connection) -> None:
        try:
            conn.serve()
        finally:
            with self._conns_lock:
                self._conns.discard(conn)

    def _watch_idle(self) -> None:
        """Close connections that never authorize, and authorized ones that sit idle."""
        tick = min(1.0, self.handshake_timeout / 4, self.idle_timeout / 4)
        while not self._stopping.wait(tick):
            now = time.monotonic()
            with self._conns_lock:
                conns = list(self._conns)
            for c in conns:
                if c.closing:
                    continue
                if not c.online and now - c.connected_at > self.handshake_timeout:
                    c.shut(f"not authorized within {self.handshake_timeout:g}s")
                elif c.online and not c.busy and now - c.last_packet > self.idle_timeout:
                    c.shut(f"idle for {self.idle_timeout:g}s")

    def stop(self) -> None:
        """Stop accepting, end every connection, and kill a running benchmark with everything it started."""
        self._stopping.set()
        if self._sock is not None:
            try:
                self._sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self._sock.close()
        with self._conns_lock:
            conns = list(self._conns)
        for c in conns:
            c.shut("the device is stopping")
        self.device.activities.force_stop()
        for t in (self._thread, self._watchdog):
            if t is not None:
                t.join(5)
        self._thread = None
        self._watchdog = None
        self._sock = None

    def __enter__(self) -> VirtualDevice:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
