"""mpk's virtual Android device: a loopback adbd over a sandboxed filesystem.

``server.py`` (the ADB transport and services) <- ``toolbox.py`` (the shell's commands: ``posix.py`` and
``android.py``) <- ``shell.py``; ``device.py`` holds the state, ``activity.py`` the benchmark app,
``sync.py`` file transfer, ``sandbox.py`` the path rules. Import ``runners.vdevice.server.VirtualDevice``.
"""
