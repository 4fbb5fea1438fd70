"""The documented sbatch array script (examples/slurm/predict_array.sbatch) on a real single-node Slurm
(issue 22): munged, slurmctld and slurmd started in a temporary folder with a generated slurm.conf,
the array submitted with sbatch, a failed task rerun with --resume, the shards gathered; the
daemons stopped after. Skipped with the reason when Slurm or munge is not installed
(Debian: apt-get install slurm-wlm munge) or when not root (slurmd starts jobs as their user)."""

from __future__ import annotations

import contextlib
import csv
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from nnunet_cases import FOLDER, make_case

from liverctl.io import write_image

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "examples" / "slurm" / "predict_array.sbatch"
BINARIES = ("munged", "mungekey", "slurmctld", "slurmd", "sbatch", "squeue", "sinfo")

missing = [b for b in BINARIES if shutil.which(b) is None]
pytestmark = [
    pytest.mark.skipif(
        bool(missing),
        reason=f"Slurm/munge not installed ({', '.join(missing)} missing): apt-get install slurm-wlm munge",
    ),
    pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() != 0, reason="slurmd must run as root to start jobs"),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _memory_mb() -> int:
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20) - 256


def _conf(d: Path, host: str) -> str:
    return f"""ClusterName=liverctl-test
SlurmctldHost={host}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={d}/munge/munge.sock
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
StateSaveLocation={d}/state
SlurmdSpoolDir={d}/spool
SlurmctldPidFile={d}/slurmctld.pid
SlurmdPidFile={d}/slurmd.pid
SlurmctldLogFile={d}/log/slurmctld.log
SlurmdLogFile={d}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/builtin
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
MpiDefault=none
ReturnToService=2
PlugStackConfig=/dev/null
NodeName={host} CPUs={os.cpu_count() or 1} RealMemory={_memory_mb()} State=UNKNOWN
PartitionName=test Nodes=ALL Default=YES MaxTime=INFINITE State=UP
"""


def _stop(pid_file: Path) -> None:
    with contextlib.suppress(OSError, ValueError):
        pid = int(pid_file.read_text().split()[0])
        os.kill(pid, signal.SIGTERM)
        for _ in range(50):
            os.kill(pid, 0)
            time.sleep(0.1)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A one-node Slurm cluster of this machine, for this module only."""
    d = tmp_path_factory.mktemp("slurm")
    for sub in ("munge", "state", "spool", "log"):
        (d / sub).mkdir()
    key = d / "munge" / "munge.key"
    subprocess.run(["mungekey", "-c", "-k", str(key), "-b", "1024"], check=True, capture_output=True)
    key.chmod(0o600)
    conf = d / "slurm.conf"
    conf.write_text(_conf(d, socket.gethostname().split(".")[0]))
    env = {**os.environ, "SLURM_CONF": str(conf)}
    env = {k: v for k, v in env.items() if not k.startswith(("SLURM_ARRAY", "SLURM_JOB"))}
    pids = [d / "slurmd.pid", d / "slurmctld.pid", d / "munge" / "munged.pid"]
    try:
        m = d / "munge"
        subprocess.run(
            ["munged", f"--key-file={key}", f"--socket={m}/munge.sock", f"--pid-file={m}/munged.pid",
             f"--log-file={m}/munged.log", f"--seed-file={m}/seed", "--force"],
            check=True, capture_output=True,
        )  # fmt: skip
        subprocess.run(["slurmctld", "-c", "-f", str(conf)], check=True, capture_output=True, env=env)
        subprocess.run(["slurmd", "-f", str(conf)], check=True, capture_output=True, env=env)
        _wait(lambda: "idle" in subprocess.run(["sinfo", "-h", "-o", "%T"], env=env, capture_output=True, text=True).stdout,
              30, d / "log")  # fmt: skip
        yield env
    finally:
        for pid_file in pids:
            _stop(pid_file)


def _wait(done, seconds: float, logs: Path) -> None:
    deadline = time.monotonic() + seconds
    while not done():
        if time.monotonic() > deadline:
            text = "\n".join(p.read_text()[-2000:] for p in sorted(logs.glob("*.log")))
            raise AssertionError(f"Slurm did not get there in {seconds} s:\n{text}")
        time.sleep(0.5)


def _submit(env: dict[str, str], cwd: Path, *args: str) -> str:
    proc = subprocess.run(["sbatch", "--parsable", f"--chdir={cwd}", *args], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip().split(";")[0]


def _wait_job(env: dict[str, str], job: str, logs: Path) -> None:
    def finished() -> bool:
        out = subprocess.run(["squeue", "-h", "-j", job], env=env, capture_output=True, text=True)
        return out.returncode != 0 or not out.stdout.strip()

    _wait(finished, 400, logs)


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def test_the_documented_array_script_end_to_end(cluster: dict[str, str], tmp_path: Path):
    scans, out, work = tmp_path / "scans", tmp_path / "masks", tmp_path / "work"
    work.mkdir()
    for i, name in enumerate(("native", "native", "native")):
        write_image(make_case(name), scans / f"case{i}.nii.gz")
    env = {
        **cluster,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{cluster['PATH']}",
        "INPUT": str(scans),
        "OUTPUT": str(out),
        "MODEL": f"--weights {FOLDER}",
        "LIVERCTL_NO_PROGRESS": "1",
        "OMP_NUM_THREADS": "1",
    }
    logs = Path(cluster["SLURM_CONF"]).parent / "log"
    job = _submit(env, work, "--array=0-1", "--cpus-per-task=1", "--mem=1G", str(SCRIPT))
    _wait_job(env, job, logs)
    task_logs = sorted(work.glob(f"liverctl-{job}_*.log"))
    assert len(task_logs) == 2, list(work.iterdir())
    for i in (0, 1):
        assert (out / f"summary.shard-{i}-of-2.csv").is_file(), "\n".join(p.read_text() for p in task_logs)
    assert {r["input"] for i in (0, 1) for r in _rows(out / f"summary.shard-{i}-of-2.csv")} == {
        str(scans / f"case{i}.nii.gz") for i in range(3)
    }

    # task 0 "failed" after its first scan: its second mask is gone; gather names it, a rerun of task 0 redoes only it
    (out / "case2.nii.gz").unlink()
    gathered = subprocess.run(
        [sys.executable, "-m", "liverctl", "gather", str(out)], env=env, capture_output=True, text=True
    )
    assert gathered.returncode == 1 and f"unfinished: {scans / 'case2.nii.gz'}" in gathered.stderr
    kept = (out / "case0.nii.gz").stat().st_mtime_ns
    rerun = _submit(env, work, "--array=0", "--cpus-per-task=1", "--mem=1G", str(SCRIPT))
    _wait_job(env, rerun, logs)
    log = (work / f"liverctl-{rerun}_0.log").read_text()
    assert "case0.nii.gz: kept the earlier result" in log and (out / "case2.nii.gz").is_file(), log
    assert (out / "case0.nii.gz").stat().st_mtime_ns == kept

    # the gather step the script's header documents, as a job that waits for the array
    final = _submit(env, work, f"--dependency=afterany:{rerun}", f"--wrap=liverctl gather {out}")
    _wait_job(env, final, logs)
    rows = _rows(out / "summary.csv")
    assert [Path(r["input"]).name for r in rows] == ["case0.nii.gz", "case2.nii.gz", "case1.nii.gz"]
    assert [r["status"] for r in rows] == ["ok"] * 3
