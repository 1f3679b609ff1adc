"""Ray, where mpk spreads work over machines: ``mpk bench --ray`` (the device matrix) and ``mpk tune --ray`` (trials).

This module is the one place that talks to Ray itself: it checks addresses, starts and joins nodes, and
connects drivers. Nothing imports Ray unless ``--ray`` was given (``pip install 'mpk[ray]'``).

**Security.** Whoever can reach a Ray cluster's port can run any code on every node of it: Ray's optional
token authentication (``RAY_AUTH_MODE=token``, Ray 2.52+) is a shared secret sent without TLS, and it is
off for clusters started this way unless a token exists. A Ray cluster belongs on a trusted network. So:

* an address that is not loopback (``127.0.0.0/8``, ``::1``, ``localhost``) is refused, exit 2, unless the
  caller passes ``allow_remote`` (the CLI's ``--ray-allow-remote``);
* on loopback every Ray process binds ``127.0.0.1`` only. Ray 2.60 on Linux replaces a loopback
  ``--node-ip-address`` with the machine's routable address and then listens on every interface; it
  keeps a node on loopback only when its node IP is exactly ``127.0.0.1`` and the
  ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` switch stops that replacement. mpk sets it for loopback
  addresses, and starts agent nodes through Ray's ``Node`` (what ``ray start`` calls) because ``ray start``
  refuses to join a cluster with that switch set;
* Ray's usage reporting is off (``RAY_USAGE_STATS_ENABLED=0``) unless the environment says otherwise.

Example::

    address = parse_address("127.0.0.1:6379")          # RayAddress(host='127.0.0.1', port=6379)
    parse_address("10.0.0.5:6379")                     # UsageError (exit 2): not loopback
    ray = connect(address)                              # a driver; disconnect() when done
"""

from __future__ import annotations

import ipaddress
import logging
import os
import socket
from dataclasses import dataclass
from typing import Any

from mpk.errors import InfraError, RuntimeMissing, UsageError

#: the Ray release mpk is tested with (pyproject.toml's ``ray`` extra pins it)
RAY_VERSION = "2.60.0"
#: Ray's switch that, set to 0, keeps loopback addresses loopback (see the module docstring)
LOOPBACK_SWITCH = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
#: the Ray namespace mpk's actors and jobs live in
NAMESPACE = "mpk"
#: refused with its own message: Ray Client is a different protocol with its own port
_CLIENT_SCHEME = "ray://"


@dataclass(frozen=True)
class RayAddress:
    """A Ray cluster's GCS address, ``host:port``."""

    host: str
    port: int

    @property
    def loopback(self) -> bool:
        return is_loopback(self.host)

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def is_loopback(host: str) -> bool:
    """``localhost``, ``127.0.0.0/8`` and ``::1``; a name other than ``localhost`` is not (it may resolve anywhere)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_address(text: str, *, allow_remote: bool = False, flag: str = "--ray", listen: bool = False) -> RayAddress:
    """``host:port`` (IPv6 as ``[::1]:6379``) as a :class:`RayAddress`; UsageError (exit 2, one line) when it is
    malformed, or not loopback and ``allow_remote`` is false. ``listen``: an address to listen at, where port 0
    lets Ray pick one."""
    raw = str(text).strip()
    if raw.startswith(_CLIENT_SCHEME):
        raise UsageError(f"{flag} {raw}: Ray Client addresses are not supported; give the cluster's GCS host:port")
    host, sep, port = raw.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or not port.isdigit() or not (0 if listen else 1) <= int(port) <= 65535:
        raise UsageError(f"{flag}: expected HOST:PORT (e.g. 127.0.0.1:6379), got {raw!r}")
    address = RayAddress(host, int(port))
    if not address.loopback and not allow_remote:
        raise UsageError(
            f"{flag} {raw} is not a loopback address, and a Ray cluster's port lets anyone who reaches it run "
            "code on every node; on a trusted network, pass --ray-allow-remote"
        )
    return address


def _prepare_env(loopback: bool) -> None:
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if loopback:
        os.environ[LOOPBACK_SWITCH] = "0"


def import_ray(*, loopback: bool | None = None) -> Any:
    """``import ray`` with mpk's settings; RuntimeMissing (exit 4) naming the extra when Ray is not installed.

    ``loopback`` sets the loopback switch first. Ray reads it once, at import, into a module constant; a
    process that imported Ray before (a test session) gets the constant set to match.
    """
    if loopback is not None:
        _prepare_env(loopback)
    try:
        import ray
        from ray._private import ray_constants
    except ModuleNotFoundError as e:
        if (e.name or "").partition(".")[0] != "ray":
            raise
        raise RuntimeMissing("this needs Ray, which is not installed: pip install 'mpk[ray]'") from None
    if loopback is not None:
        ray_constants.ENABLE_RAY_CLUSTER = not loopback
    return ray


def check_reachable(address: RayAddress, timeout: float = 5.0) -> None:
    """InfraError (exit 4, one line) when nothing accepts connections at ``address``: Ray itself would retry
    for a minute before it says so."""
    try:
        with socket.create_connection((address.host, address.port), timeout=timeout):
            return
    except OSError as e:
        why = e.strerror or type(e).__name__
        raise InfraError(f"no Ray cluster answers at {address} ({why}); start one with `mpk agent --head`") from None


def connect(address: RayAddress | None, *, num_cpus: int | None = None, object_store_mb: int = 256) -> Any:
    """Connect this process as a Ray driver and return the ``ray`` module; :func:`disconnect` when done.

    ``address=None`` starts a private Ray instance on this machine, on loopback, with ``num_cpus`` CPUs and no
    dashboard; it ends with ``ray.shutdown()``. Otherwise the cluster at ``address`` must already run, with a
    node on this machine (``mpk agent``): Ray drivers attach to a local node.
    """
    if not isinstance(address, RayAddress | None):
        raise TypeError(f"address: expected a RayAddress or None, got {address!r}")
    _SAVED.update({k: os.environ.get(k) for k in _ENV_KEYS if k not in _SAVED})
    if address is None:
        _private_token()
    ray = import_ray(loopback=address is None or address.loopback)
    _reload_auth()
    if ray.is_initialized():  # one driver per process: a caller that left one connected gets a fresh one
        ray.shutdown()
    common: dict[str, Any] = {"namespace": NAMESPACE, "log_to_driver": False, "logging_level": logging.ERROR}
    try:
        if address is None:  # its session folder is its own, and goes with it (disconnect)
            import tempfile

            _PRIVATE_TEMP.append(tempfile.mkdtemp(prefix="mpk-ray-", dir="/tmp" if os.path.isdir("/tmp") else None))
            return _init(ray, num_cpus=num_cpus or os.cpu_count() or 1, include_dashboard=False,
                         object_store_memory=object_store_mb * 2**20, _temp_dir=_PRIVATE_TEMP[-1],
                         **common)  # fmt: skip
        check_reachable(address)
        return _init(ray, address=str(address), **common)
    except InfraError:
        raise
    except Exception as e:  # Ray raises ConnectionError, RuntimeError, ValueError ...: one line, exit 4
        where = "a local Ray instance" if address is None else f"the Ray cluster at {address}"
        raise InfraError(f"cannot connect to {where}: {_first_line(e)}") from None


def disconnect() -> None:
    """``ray.shutdown()`` (which ends a private instance) and the environment as it was before :func:`connect`."""
    import sys

    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        ray.shutdown()
    for k, v in _SAVED.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    _SAVED.clear()
    import shutil

    while _PRIVATE_TEMP:
        shutil.rmtree(_PRIVATE_TEMP.pop(), ignore_errors=True)


#: environment variables :func:`connect` may set, and their values before it did
_ENV_KEYS = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", LOOPBACK_SWITCH, "RAY_USAGE_STATS_ENABLED")
_SAVED: dict[str, str | None] = {}
#: the session folder of a private instance (short, under /tmp: Ray's unix sockets must fit in 107 bytes)
_PRIVATE_TEMP: list[str] = []


def _private_token() -> None:
    """A private instance gets token authentication with a secret of its own, in the environment its processes
    inherit (Ray 2.60 would otherwise write one to ~/.ray/auth_token). A user's own RAY_AUTH_MODE wins."""
    if "RAY_AUTH_MODE" in os.environ:
        return
    import secrets

    os.environ["RAY_AUTH_MODE"] = "token"
    os.environ["RAY_AUTH_TOKEN"] = secrets.token_hex(32)


def _reload_auth() -> None:
    """Ray reads RAY_AUTH_MODE and the token once, at import; a process that imported it before the environment
    said how to authenticate (a test session, a library caller) would connect without them."""
    from ray._raylet import AuthenticationTokenLoader, Config

    Config.initialize("")
    AuthenticationTokenLoader.instance().reset_cache()


def _init(ray: Any, **kw: Any) -> Any:
    ray.init(**kw)
    return ray


def start_node(
    address: RayAddress,
    *,
    head: bool,
    resources: dict[str, float] | None = None,
    labels: dict[str, str] | None = None,
    num_cpus: int | None = None,
    object_store_mb: int | None = None,
    temp_dir: str | None = None,
) -> Any:
    """Start a Ray node on this machine: the head listening at ``address``, or a node joining the head there.

    Returns Ray's ``Node``; :func:`stop_node` ends it. This is what ``ray start`` does, minus its loopback
    rewrite (module docstring), so a loopback node binds loopback only.
    """
    import_ray(loopback=address.loopback)
    from ray._private import services
    from ray._private.authentication.authentication_token_setup import (
        ensure_token_if_auth_enabled,
        maybe_enable_token_auth_if_token_available,
    )
    from ray._private.node import Node
    from ray._private.parameter import RayParams

    if address.loopback:
        ip = "127.0.0.1"
    else:
        ip = address.host if head else services.get_node_ip_address(str(address))
    params = RayParams(node_ip_address=ip, node_name=ip, num_cpus=num_cpus, resources=resources or {},
                       labels=labels or {}, include_dashboard=False, temp_dir=temp_dir,
                       object_store_memory=object_store_mb * 2**20 if object_store_mb else None)  # fmt: skip
    if head:
        params.gcs_server_port = address.port
        params.update_if_absent(redis_shard_ports=None, num_redis_shards=None, redis_max_clients=None)
    else:
        check_reachable(address)
        params.gcs_address = str(address)
    maybe_enable_token_auth_if_token_available(warn_if_disabled=False)
    try:
        ensure_token_if_auth_enabled(None, create_token_if_missing=False)
        # shutdown_at_exit=False: Ray's own SIGTERM handler would drain for 30 s and exit 1; the caller stops the
        # node (stop_node) on its own signal. The reaper still ends the node's processes if this one is killed.
        return Node(params, head=head, shutdown_at_exit=False, spawn_reaper=True, connect_only=False)
    except Exception as e:
        what = "start a Ray head" if head else "join the Ray cluster"
        raise InfraError(f"cannot {what} at {address}: {_first_line(e)}") from None


def node_address(node: Any) -> str:
    """The GCS address of the cluster ``node`` belongs to (for a head on port 0: the port Ray chose)."""
    return str(node.gcs_address)


def dead_processes(node: Any) -> list[str]:
    """Names of ``node``'s Ray processes that have exited (the node is then broken)."""
    return [kind for kind, _ in node.dead_processes()]


def stop_node(node: Any) -> None:
    """End every process of ``node`` (its raylet first, so the workers on it go with it)."""
    node.kill_all_processes(check_alive=False, allow_graceful=True, wait=True)


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}".rstrip(": ")
