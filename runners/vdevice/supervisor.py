"""``python -m runners.vdevice.supervisor -- CMD...``: run CMD, and kill it with everything it started as soon as
the virtual device that launched us goes away.

The virtual device starts this in a new session (its own process group) with
stdin on a pipe whose write end only the device holds. CMD (the host runner)
and CMD's own children stay in that group. When the device process ends, even
by SIGKILL, the kernel closes the pipe, our read returns EOF, and we SIGKILL
the whole group: no benchmark keeps timing on the host CPU after its device is
gone. ``am force-stop`` kills the group from the device side. Exit status: CMD's
(128 + signal when a signal ended it). Nothing here is imported by mpk itself.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading


def main(argv: list[str]) -> int:
    if not argv or argv[0] != "--" or len(argv) < 2:
        print("usage: python -m runners.vdevice.supervisor -- CMD...", file=sys.stderr)
        return 2
    child = subprocess.Popen(argv[1:], stdin=subprocess.DEVNULL)

    def wait_child() -> None:
        rc = child.wait()
        os._exit(rc if rc >= 0 else 128 - rc)

    threading.Thread(target=wait_child, daemon=True).start()
    try:
        while os.read(0, 4096):
            pass  # the device never writes; anything read is ignored
    except OSError:
        pass
    if os.getpgrp() == os.getpid():  # started as its own group leader, as the device does
        os.killpg(0, signal.SIGKILL)  # CMD, its children, and this process
    child.kill()
    return 137


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
