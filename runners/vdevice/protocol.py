"""The ADB transport packet: a 24-byte little-endian header and an optional payload.

Header fields (AOSP ``protocol.txt``): command, arg0, arg1, data_length,
data_check (byte sum of the payload), magic (command XOR 0xffffffff). Peers at
version 0x01000001 or later may send data_check = 0; older ones must send the
sum and the receiver must check it.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass

A_CNXN = 0x4E584E43
A_AUTH = 0x48545541
A_OPEN = 0x4E45504F
A_OKAY = 0x59414B4F
A_CLSE = 0x45534C43
A_WRTE = 0x45545257
A_STLS = 0x534C5453

NAMES = {A_CNXN: "CNXN", A_AUTH: "AUTH", A_OPEN: "OPEN", A_OKAY: "OKAY", A_CLSE: "CLSE", A_WRTE: "WRTE", A_STLS: "STLS"}

AUTH_TOKEN = 1
AUTH_SIGNATURE = 2
AUTH_RSAPUBLICKEY = 3

VERSION_MIN = 0x01000000
VERSION_SKIP_CHECKSUM = 0x01000001
#: What we offer. Old clients (adb-shell sends 0x01000000) get the older version back and checksums are kept.
VERSION = VERSION_SKIP_CHECKSUM
#: Largest payload we accept or send once a connection is authorized; clients may ask for less in CNXN arg1.
#: (AOSP adb.h: MAX_PAYLOAD is 1 MiB since Android 9; 256 KiB bounds a connection's buffers at 8 streams x 256 KiB.)
MAX_PAYLOAD = 256 * 1024
#: Largest payload before AUTH succeeds (AOSP MAX_PAYLOAD_V1): CNXN banners, tokens, signatures and public keys fit.
MAX_PAYLOAD_PREAUTH = 4 * 1024

HEADER = struct.Struct("<6I")


class ProtocolError(Exception):
    """The peer sent something that is not an ADB packet; the connection is dropped."""


@dataclass(frozen=True)
class Packet:
    command: int
    arg0: int
    arg1: int
    data: bytes = b""

    @property
    def name(self) -> str:
        return NAMES.get(self.command, f"0x{self.command:08x}")

    def pack(self) -> bytes:
        # Always fill in the checksum: it costs little and keeps pre-0x01000001 peers happy.
        return (
            HEADER.pack(
                self.command,
                self.arg0,
                self.arg1,
                len(self.data),
                checksum(self.data),
                self.command ^ 0xFFFFFFFF,
            )
            + self.data
        )


def checksum(data: bytes) -> int:
    return sum(data) & 0xFFFFFFFF


def recv_exact(sock: socket.socket, n: int) -> bytes:
    """Read exactly ``n`` bytes; raise EOFError if the peer closes first."""
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise EOFError("peer closed the connection")
        buf += chunk
    return bytes(buf)


def read_packet(sock: socket.socket, *, max_payload: int, check_data: bool) -> Packet:
    """Read and validate one packet. Raises ProtocolError on a malformed one, EOFError on close."""
    raw = recv_exact(sock, HEADER.size)
    command, arg0, arg1, length, check, magic = HEADER.unpack(raw)
    if magic != command ^ 0xFFFFFFFF:
        raise ProtocolError(f"bad magic 0x{magic:08x} for command 0x{command:08x}")
    if command not in NAMES:
        raise ProtocolError(f"unknown command 0x{command:08x}")
    if length > max_payload:
        raise ProtocolError(f"{NAMES[command]} payload of {length} bytes exceeds the maximum {max_payload}")
    data = recv_exact(sock, length) if length else b""
    if check_data and checksum(data) != check:
        raise ProtocolError(f"{NAMES[command]} payload checksum 0x{checksum(data):08x} != header 0x{check:08x}")
    return Packet(command, arg0, arg1, data)
