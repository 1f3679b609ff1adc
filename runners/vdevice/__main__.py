"""``python -m runners.vdevice serve --port N --root DIR``: run mpk's virtual device in the foreground.

``mpk emulator start`` runs this detached. SIGTERM/SIGINT stop it cleanly (exit 0, after killing a running
benchmark); any other end of serving is an error line and exit 4, never a silent 0.
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import signal
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m runners.vdevice")
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve", help="serve a virtual Android device on 127.0.0.1")
    s.add_argument("--port", type=int, default=0)
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--root", type=Path, required=True)
    s.add_argument("--profile", type=Path)
    s.add_argument("--authorized-keys", type=Path)
    s.add_argument("--authorize", type=Path, action="append", default=[], help="an adbkey.pub to authorize")
    s.add_argument("--auto-authorize", action="store_true", help="accept any key the client offers (unsafe)")
    s.add_argument("--ready-file", type=Path, help="write {port} here once listening")
    s.add_argument("--max-connections", type=int, default=16, help="connections served at once (more are refused)")
    s.add_argument("--idle-timeout", type=float, default=300.0, help="close a connection idle this many seconds")
    s.add_argument(
        "--runner",
        help="command that stands in for the benchmark app (default: python -m runners.host_runner); "
        "it is given --spec, --out, --emulated and --device-facts",
    )
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")

    from mpk.errors import MpkError
    from runners.vdevice.server import VirtualDevice

    try:
        vd = VirtualDevice(
            args.root,
            port=args.port,
            host=args.host,
            authorized_keys=args.authorized_keys,
            profile=args.profile,
            auto_authorize=args.auto_authorize,
            max_connections=args.max_connections,
            idle_timeout=args.idle_timeout,
            runner_cmd=shlex.split(args.runner) if args.runner else None,
        )
        for pub in args.authorize:
            vd.authorize(pub.read_text())
        vd.start()
    except MpkError as e:
        print(f"error: {e.format_message()}", file=sys.stderr)
        return e.exit_code
    except OSError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.ready_file:
        args.ready_file.write_text(json.dumps({"port": vd.port, "serial": vd.serial}))

    def _stop(signum: int, frame: object) -> None:
        vd.stop()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    print(f"mpk virtual device on {vd.serial}", flush=True)
    return vd.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
