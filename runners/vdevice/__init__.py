"""mpk's virtual Android device: a loopback adbd over a sandboxed filesystem.

``server.py`` (the ADB transport and its services) uses ``toolbox.py``, the shell's command table:
``posix.py`` (with ``printf.py``) and ``android.py``, handed to ``shell.py``. ``device.py`` holds the
state, ``activity.py`` the benchmark app (run under ``supervisor.py``), ``sync.py`` file transfer and
``sandbox.py`` the path rules. Use ``runners.vdevice.server.VirtualDevice``.
"""
