"""`mpk emulator start|list|stop` for real: a detached virtual-device process, reached with mpk's transport.
The Android SDK emulator cannot exist here; its discovery is checked with a stand-in `emulator` script."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from mpk.cli import main


@pytest.fixture()
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MPK_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    monkeypatch.delenv("ANDROID_HOME", raising=False)
    monkeypatch.delenv("ANDROID_SDK_ROOT", raising=False)
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    return tmp_path


def test_emulator_start_list_stop(env: Path) -> None:
    from runners.transport import open_transport

    runner = CliRunner()
    r = runner.invoke(main, ["emulator", "start"])
    assert r.exit_code == 0, r.output
    serial = r.output.strip().splitlines()[-1]
    try:
        assert serial.startswith("127.0.0.1:")
        listed = runner.invoke(main, ["emulator", "list"]).output
        assert serial in listed and "no Android SDK emulator" in listed
        with open_transport("adb_shell", serial) as t:  # mpk's key was authorized automatically
            assert t.shell("getprop ro.product.model").stdout == "mpk Virtual Device\n"
    finally:
        r = runner.invoke(main, ["emulator", "stop", serial])
    assert r.exit_code == 0 and f"stopped {serial}" in r.output
    assert serial not in runner.invoke(main, ["emulator", "list"]).output
    r = runner.invoke(main, ["emulator", "stop", serial])
    assert r.exit_code == 2 and "no running emulator" in r.output


def test_ensure_virtual_device_in_process(env: Path) -> None:
    from runners.emulator import ensure_virtual_device
    from runners.transport import open_transport

    serial, stop = ensure_virtual_device(env / "vd")
    try:
        with open_transport("adb_shell", serial) as t:
            assert t.shell("test -d /data/local/tmp").exit_code == 0
    finally:
        stop()


def test_sdk_avd_discovery_with_stand_in(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from runners import emulator as emu

    sdk = env / "sdk"
    (sdk / "emulator").mkdir(parents=True)
    script = sdk / "emulator" / "emulator"
    script.write_text("#!/bin/sh\n[ \"$1\" = -list-avds ] && printf 'INFO    | noise here\\nPixel_7_API_34\\n'\n")
    script.chmod(0o755)
    monkeypatch.setenv("ANDROID_HOME", str(sdk))
    assert emu.find_emulator() == script
    assert emu.list_avds() == ["Pixel_7_API_34"]
    from mpk.errors import UsageError

    with pytest.raises(UsageError, match="did you mean 'Pixel_7_API_34'"):
        emu.boot_avd("Pixel_7_API34", timeout=1)
    assert os.environ["ANDROID_HOME"] == str(sdk)
