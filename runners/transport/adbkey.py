"""ADB RSA keys: mpk's own key pair and Android's public-key wire format.

adbd does not take PEM public keys. It stores and compares keys as base64 of
the C struct ``RSAPublicKey`` (little-endian words: modulus size in 32-bit
words, n0inv = -1/n mod 2^32, the modulus, rr = 2^(2*bits) mod n, and the
exponent) followed by `` user@host``. Both the virtual device (to check keys)
and the transports (to offer them) need that encoding, so it lives here once.
"""

from __future__ import annotations

import base64
import getpass
import os
import socket
import struct
from pathlib import Path

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa, utils

KEY_BITS = 2048
_MOD_BYTES = KEY_BITS // 8
_STRUCT = f"<LL{_MOD_BYTES}s{_MOD_BYTES}sL"


def default_key_path() -> Path:
    """``$XDG_CONFIG_HOME/mpk/adbkey`` (or ``~/.config/mpk/adbkey``): mpk's key, not adb's ``~/.android``."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "mpk" / "adbkey"


def encode_public_key(public_key: rsa.RSAPublicKey, comment: str | None = None) -> str:
    """The ``adb_keys`` line for ``public_key``: base64 RSAPublicKey struct + `` user@host``."""
    nums = public_key.public_numbers()
    if nums.n.bit_length() > KEY_BITS:
        raise ValueError(f"adb keys are {KEY_BITS}-bit RSA; got {nums.n.bit_length()} bits")
    r32 = 1 << 32
    n0inv = (r32 - pow(nums.n % r32, -1, r32)) % r32
    rr = pow(2, 2 * KEY_BITS, nums.n)
    blob = struct.pack(
        _STRUCT,
        _MOD_BYTES // 4,
        n0inv,
        nums.n.to_bytes(_MOD_BYTES, "little"),
        rr.to_bytes(_MOD_BYTES, "little"),
        nums.e,
    )
    if comment is None:
        comment = f"{_user()}@{socket.gethostname()}"
    return base64.b64encode(blob).decode("ascii") + " " + comment


def decode_public_key(line: str | bytes) -> rsa.RSAPublicKey:
    """Parse one ``adb_keys`` line (or an AUTH RSAPUBLICKEY payload) into a public key.

    Raises ValueError on anything that is not a well-formed Android key, so a
    corrupt authorized-keys line is reported rather than silently matching nothing.
    """
    if isinstance(line, bytes):
        line = line.rstrip(b"\0").decode("ascii", "replace")
    b64 = line.strip().split(" ", 1)[0]
    try:
        blob = base64.b64decode(b64, validate=True)
    except ValueError as e:
        raise ValueError(f"not base64: {e}") from None
    if len(blob) != struct.calcsize(_STRUCT):
        raise ValueError(f"RSAPublicKey blob is {len(blob)} bytes, expected {struct.calcsize(_STRUCT)}")
    words, _n0inv, mod, _rr, exponent = struct.unpack(_STRUCT, blob)
    if words != _MOD_BYTES // 4:
        raise ValueError(f"modulus size {words} words, expected {_MOD_BYTES // 4}")
    n = int.from_bytes(mod, "little")
    return rsa.RSAPublicNumbers(exponent, n).public_key()


def verify_token_signature(public_key: rsa.RSAPublicKey, token: bytes, signature: bytes) -> bool:
    """adbd's check: ``signature`` is PKCS#1 v1.5 over ``token`` used *as* a SHA-1 digest.

    adb never hashes the 20-byte token; it signs it as if it were the digest,
    so the verifier must treat it as prehashed.
    """
    try:
        public_key.verify(signature, token, padding.PKCS1v15(), utils.Prehashed(hashes.SHA1()))
    except Exception:  # InvalidSignature, or a token of the wrong length
        return False
    return True


def sign_token(private_key: rsa.RSAPrivateKey, token: bytes) -> bytes:
    return private_key.sign(token, padding.PKCS1v15(), utils.Prehashed(hashes.SHA1()))


def ensure_key(path: Path | None = None) -> Path:
    """Create mpk's adb key pair at ``path`` (mode 0600) once; return the private key path.

    The public key sits next to it as ``adbkey.pub`` in adb's format, so the
    same pair works with adb-shell's signers and can be copied into a device's
    ``adb_keys``.
    """
    path = Path(path) if path else default_key_path()
    pub = path.with_name(path.name + ".pub")
    if path.exists() and pub.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    key = rsa.generate_private_key(public_exponent=65537, key_size=KEY_BITS)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    # Write to a temp name with 0600 from the start, then rename: no window where the key is world-readable.
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    os.replace(tmp, path)
    pub.write_text(encode_public_key(key.public_key()) + "\n")
    return path


def load_private_key(path: Path) -> rsa.RSAPrivateKey:
    key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError(f"{path}: not an RSA private key")
    return key


def public_key_line(path: Path) -> str:
    """The ``adb_keys`` line for the key pair whose private half is at ``path``."""
    pub = Path(path).with_name(Path(path).name + ".pub")
    if pub.exists():
        return pub.read_text().strip()
    return encode_public_key(load_private_key(path).public_key())


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no passwd entry in some containers
        return "unknown"
