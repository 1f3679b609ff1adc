"""Nothing the user had is lost: ``mpk bench`` and ``mpk report`` output folders, Ctrl-C, read-only and full disks.

Everything is real: the host runner measures a tiny ONNX model, ``mpk`` runs as a subprocess where a
signal or a file system matters, the read-only folder is a real read-only bind mount and the full disk
a real 96 KiB tmpfs, both made in a user namespace with ``unshare -rm`` (skipped where the kernel does
not allow one).
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mpk.contract import read_results
from runners.bench import BenchConfig, run_bench
from tests.gate_factory import cell, results, samples
from tests.integration.bench_helpers import tiny_package

ROOT = Path(__file__).resolve().parents[2]
DEVICES = """\
version: 1
defaults: {{warmup_iterations: 1, min_iterations: 5, min_seconds: {min_s}, max_seconds: 120, cooldown_s: 0}}
devices:
  - {{id: host, kind: host}}
"""


def _unshare_ok() -> bool:
    try:
        return subprocess.run(["unshare", "-rm", "true"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


needs_unshare = pytest.mark.skipif(not _unshare_ok(), reason="no user namespaces here (unshare -rm refused)")


def mpk(*args: str, **kw) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "mpk", *args], capture_output=True, text=True, env=env,
                          timeout=300, **kw)  # fmt: skip


@pytest.fixture(scope="module")
def pkg(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_package(tmp_path_factory.mktemp("pkg"))


def devices(tmp_path: Path, min_s: float = 0.0) -> Path:
    p = tmp_path / f"devices-{min_s:g}.yaml"
    p.write_text(DEVICES.format(min_s=min_s))
    return p


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_rerun_keeps_the_previous_results_and_foreign_folders_are_refused(pkg: Path, tmp_path: Path) -> None:
    out = tmp_path / "bench"
    config = BenchConfig(manifest=pkg, out=out, devices_file=devices(tmp_path), only_artifacts=("onnx-fp32",))
    first = run_bench(config)
    assert first.exit_code == 0 and first.previous is None
    before = (out / "results.json").read_text()
    second = run_bench(config)
    assert second.previous == tmp_path / "bench.prev"
    assert (tmp_path / "bench.prev" / "results.json").read_text() == before  # the earlier run, untouched
    assert read_results(out / "results.json")["run_id"] != json.loads(before)["run_id"]
    assert not list(tmp_path.glob(".bench.staging-*"))

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "results.json").write_text("my own notes, not mpk's")
    r = mpk("bench", str(pkg), "--devices", str(devices(tmp_path)), "--out", str(mine), "--artifact", "onnx-fp32")
    assert r.returncode == 2 and "holds files mpk did not write" in r.stderr and "--force" in r.stderr
    assert (mine / "results.json").read_text() == "my own notes, not mpk's"
    r = mpk("bench", str(pkg), "--devices", str(devices(tmp_path)), "--out", str(mine), "--artifact", "onnx-fp32",
            "--force")  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "mine.prev" / "results.json").read_text() == "my own notes, not mpk's"  # kept, not lost


def test_ctrl_c_keeps_the_previous_results_and_kills_the_runner(pkg: Path, tmp_path: Path) -> None:
    """SIGINT to mpk alone (as a CI runner cancelling a job sends it): the cell in flight stops on the host
    CPU at once, --out keeps the previous run, and the finished cell is kept in OUT.partial."""
    out = tmp_path / "bench"
    quick = mpk("bench", str(pkg), "--devices", str(devices(tmp_path)), "--out", str(out), "--artifact", "onnx-fp32")
    assert quick.returncode == 0, quick.stderr
    previous = sha(out / "results.json")

    env = dict(os.environ, PYTHONPATH=str(ROOT))
    cmd = [sys.executable, "-m", "mpk", "bench", str(pkg), "--devices", str(devices(tmp_path, min_s=2.0)),
           "--out", str(out), "--artifact", "onnx-fp32", "--artifact", "executorch-fp32"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 120
    second_cell = None
    while time.monotonic() < deadline and second_cell is None:
        time.sleep(0.2)
        second_cell = next(iter(tmp_path.glob(".bench.staging-*/work/*executorch-fp32/spec.json")), None)
    assert second_cell is not None, "the second cell never started"
    time.sleep(1.5)  # the host runner is now timing executorch-fp32
    runners = _processes_mentioning(str(tmp_path))
    assert runners, "no host runner process found while a cell was running"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted:" in err and "was left as it was" in err and "Traceback" not in err
    assert sha(out / "results.json") == previous
    partial = read_results(tmp_path / "bench.partial" / "results.json")
    assert partial["complete"] is False and [c["artifact_id"] for c in partial["cells"]] == ["onnx-fp32"]
    time.sleep(0.5)
    assert not [p for p in runners if _alive(p)], "a host runner kept running after Ctrl-C"
    assert not list(tmp_path.glob(".bench.staging-*"))


def _alive(pid: int) -> bool:
    """Running, not a zombie: a killed runner whose parent (mpk) exited stays a zombie until init reaps it."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def _processes_mentioning(text: str) -> list[int]:
    """Live processes (other than this test) whose command line contains ``text``: the host runners."""
    found = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or int(d.name) == os.getpid():
            continue
        try:
            cmdline = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if "runners.host_runner" in cmdline and text in cmdline:
            found.append(int(d.name))
    return found


@needs_unshare
def test_read_only_out_is_one_line_exit_4(pkg: Path, tmp_path: Path) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    script = (f"mount --bind {ro} {ro} && mount -o remount,bind,ro {ro} && "
              f"exec {sys.executable} -m mpk bench {pkg} --devices {devices(tmp_path)} --out {ro}/bench")  # fmt: skip
    r = subprocess.run(["unshare", "-rm", "sh", "-c", script], capture_output=True, text=True, timeout=120,
                       env=dict(os.environ, PYTHONPATH=str(ROOT)))  # fmt: skip
    assert r.returncode == 4, r.stderr
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
    assert lines[0].startswith("error: output directory") and "Read-only file system" in lines[0]
    assert "Traceback" not in r.stderr


@needs_unshare
def test_report_on_a_full_disk_leaves_the_old_report_whole(tmp_path: Path) -> None:
    """A real full disk (a 96 KiB tmpfs, then filled): the second report fails with exit 4, the first one is
    still there file for file, and no half-written or 0-byte file or staging folder is left."""
    small = tmp_path / "small.json"
    small.write_text(json.dumps(results([cell("host", "onnx-fp32", samples(10, 40, 1))])))
    big = tmp_path / "big.json"
    cells = [cell("host", f"onnx-a{i}", samples(10, 400, i)) for i in range(8)]
    big.write_text(json.dumps(results(cells)))
    disk = tmp_path / "disk"
    disk.mkdir()
    py = sys.executable
    script = (
        f"mount -t tmpfs -o size=96k tmpfs {disk} && "
        f"{py} -m mpk report {small} --out {disk}/rep >/dev/null && "
        f"sha256sum {disk}/rep/* > {tmp_path}/before.txt && "
        f"(head -c 1000000 /dev/zero > {disk}/filler 2>/dev/null; true) && "
        f"{py} -m mpk report {big} --out {disk}/rep; echo rc=$? && "
        f"sha256sum {disk}/rep/* > {tmp_path}/after.txt && echo LIST && ls -a {disk} {disk}/rep && "
        f"echo EMPTY && find {disk} -empty -type f && echo END"
    )
    r = subprocess.run(["unshare", "-rm", "sh", "-c", script], capture_output=True, text=True, timeout=120,
                       env=dict(os.environ, PYTHONPATH=str(ROOT)))  # fmt: skip
    assert "rc=4" in r.stdout, r.stdout + r.stderr
    assert "No space left on device" in r.stderr and "Traceback" not in r.stderr
    before, after = (tmp_path / "before.txt").read_text(), (tmp_path / "after.txt").read_text()
    assert before == after and "report.html" in before  # the old report, file for file
    listing, _, rest = r.stdout.split("LIST", 1)[1].partition("EMPTY")
    assert ".staging" not in listing and "rep.prev" not in listing
    assert rest.split("END")[0].strip() == "", "an empty file was left behind"


def test_report_refuses_a_folder_with_the_users_own_report(tmp_path: Path) -> None:
    doc = tmp_path / "r.json"
    doc.write_text(json.dumps(results([cell("host", "onnx-fp32", samples(10, 40, 1))])))
    rep = tmp_path / "rep"
    rep.mkdir()
    (rep / "report.md").write_text("# my release notes\n")
    r = mpk("report", str(doc), "--out", str(rep))
    assert r.returncode == 2 and "holds files mpk did not write" in r.stderr
    assert (rep / "report.md").read_text() == "# my release notes\n"
    r = mpk("report", str(doc), "--out", str(rep), "--force")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "rep.prev" / "report.md").read_text() == "# my release notes\n"
    # mpk's own report is replaced and kept; the user's folder in rep.prev is never deleted for it
    again = mpk("report", str(doc), "--out", str(rep))
    assert again.returncode == 0 and f"kept in {tmp_path / 'rep.prev2'}" in again.stdout
    assert (tmp_path / "rep.prev" / "report.md").read_text() == "# my release notes\n"
    assert (tmp_path / "rep.prev2" / "report.json").is_file()
