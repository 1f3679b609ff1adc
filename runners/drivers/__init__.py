"""Runner drivers: how mpk gets a runner result out of one kind of runner on one device.

``DRIVERS`` maps the ``runner`` names of devices.yaml to driver classes; entries
are lazy so importing this package imports no runtime::

    >>> from runners.drivers import DRIVERS
    >>> sorted(DRIVERS.names())
    ['android_app', 'executor_runner', 'host', 'ios_app', 'onnxruntime_perf_test']
"""

from __future__ import annotations

from mpk.registry import Registry
from runners.drivers.base import Driver

DRIVERS: Registry[type[Driver]] = Registry("runner", Driver)
DRIVERS.register("host", "runners.drivers.host:HostDriver")
DRIVERS.register("android_app", "runners.drivers.android_app:AndroidAppDriver")
DRIVERS.register("ios_app", "runners.drivers.ios:IosAppDriver")
DRIVERS.register("executor_runner", "runners.drivers.native_executorch:ExecutorRunnerDriver")
DRIVERS.register("onnxruntime_perf_test", "runners.drivers.native_ort:OrtPerfTestDriver")


def get_driver(name: str) -> Driver:
    """An instance of the driver registered as ``name`` (UnknownNameError with a suggestion otherwise)."""
    return DRIVERS.get(name)()


__all__ = ["DRIVERS", "Driver", "get_driver"]
