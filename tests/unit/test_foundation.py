import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from mpk.cli import COMMANDS, main
from mpk.errors import ConfigError, UnknownNameError
from mpk.registry import Registry
from runners.stats import LatencyStats, quantile_ci


def test_registry_suggests_nearest_and_rejects_duplicates():
    r: Registry[object] = Registry("backend", object)
    r.register("onnx", "builtins:object")
    r.register("executorch", "builtins:object")
    with pytest.raises(UnknownNameError, match="did you mean 'onnx'"):
        r.get("onxx")
    with pytest.raises(ValueError, match="twice"):
        r.register("onnx", object)
    assert r.get("onnx") is object


def test_registry_checks_base_class():
    r: Registry[type] = Registry("exporter", int)
    with pytest.raises(TypeError):
        r.register("bad", str)


def test_config_error_lists_every_problem_with_path():
    e = ConfigError(
        "devices.yaml", ["devices[2].budgets.p90_ms: expected a number, got 'fast'", "defaults.x: unknown key"]
    )
    assert "2 problem(s)" in e.message and "devices[2].budgets.p90_ms" in e.message and e.exit_code == 2


def test_stats_from_samples_matches_numpy():
    rng = np.random.default_rng(1)
    x = rng.lognormal(1.0, 0.3, 200)
    s = LatencyStats.from_samples(x)
    assert s.n == 200
    assert s.p50_ms == pytest.approx(np.quantile(x, 0.5))
    assert s.p90_ms == pytest.approx(np.quantile(x, 0.9))
    assert s.p50_ci_ms[0] <= s.p50_ms <= s.p50_ci_ms[1]
    assert s.p90_ci_ms[0] <= s.p90_ms <= s.p90_ci_ms[1]
    assert LatencyStats.from_dict(s.to_dict()) == s


def test_quantile_ci_covers_true_median_about_95_percent():
    rng = np.random.default_rng(7)
    hits = sum(lo <= 0.0 <= hi for lo, hi in (quantile_ci(np.sort(rng.normal(size=60)), 0.5) for _ in range(1000)))
    assert 0.93 <= hits / 1000 <= 0.995


def test_stats_reject_bad_samples():
    with pytest.raises(ValueError):
        LatencyStats.from_samples([])
    with pytest.raises(ValueError):
        LatencyStats.from_samples([1.0, float("nan")])


def test_unknown_command_suggests_nearest():
    res = CliRunner().invoke(main, ["pakage"])
    assert res.exit_code == 2 and "did you mean 'package'" in res.output


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_subcommand_has_help(name):
    res = CliRunner().invoke(main, [name, "--help"])
    assert res.exit_code == 0, res.output
    assert "Usage:" in res.output


def test_help_imports_no_torch():
    code = (
        "import sys; from mpk.cli import main; main(['--help'], standalone_mode=False); print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().endswith("False")


def test_ctrl_c_exits_130_not_the_check_failed_code():
    """Click's default turns Ctrl-C into exit 1, which mpk reserves for a failed check."""
    code = (
        "import click, mpk.cli as c\n"
        "@click.command()\n"
        "def boom():\n"
        "    raise KeyboardInterrupt\n"
        "c.COMMANDS['backends'] = ('__main__:boom', 'x')\n"
        "c.run(['backends'])\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 130, (r.returncode, r.stderr)
    assert "interrupted" in r.stderr


@pytest.mark.parametrize(("argv", "code"), [(["--version"], 0), (["package", "--no-such-flag"], 2), (["pakage"], 2)])
def test_console_entry_point_exit_codes(argv, code):
    r = subprocess.run([sys.executable, "-m", "mpk", *argv], capture_output=True, text=True)
    assert r.returncode == code, (r.returncode, r.stdout, r.stderr)
