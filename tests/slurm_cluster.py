"""A throwaway single-node SLURM cluster from Debian's packages, for tests/test_slurm.py.

One node (this machine) with its real CPUs and memory and one fake GPU (a GRES backed by
/dev/null), no accounting and no cgroups. Job steps read the config only from
/etc/slurm/slurm.conf (the executor strips SLURM_CONF from job environments), so it is
written there, marked, and removed again; state and logs live in a temporary folder.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGES = ["slurmctld", "slurmd", "slurm-client", "munge"]
TOOLS = ["munged", "munge", "slurmctld", "slurmd", "sbatch", "squeue", "sinfo", "scontrol"]
SLURM_ETC = Path("/etc/slurm")
MUNGE_SOCKET_DIR = Path("/run/munge")
MARKER = "# written by circuitry's tests/slurm_cluster.py"
PARTITION = "debug"
STARTUP_TIMEOUT_S = 60


@dataclass
class Cluster:
    """A running cluster: its partition and the folder with its daemons' logs."""

    partition: str
    state_dir: Path

    def daemon_logs(self) -> str:
        """The tail of every daemon's log, for failure messages."""
        tails = []
        for log in sorted(self.state_dir.glob("*.log")):
            lines = log.read_text(errors="replace").splitlines()[-20:]
            tails.append(f"--- {log.name}\n" + "\n".join(lines))
        return "\n".join(tails)


def ensure_slurm_installed() -> None:
    """Install the Debian packages where missing; skip where that is impossible."""
    if all(shutil.which(tool) for tool in TOOLS):
        return
    if not shutil.which("apt-get"):
        pytest.skip(f"SLURM is not installed and cannot be: {' '.join(PACKAGES)} need apt-get")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (
        ["apt-get", "update"],
        ["apt-get", "install", "-y", "--no-install-recommends", *PACKAGES],
    ):
        subprocess.run(cmd, check=True, capture_output=True, env=env, timeout=600)


def check_root_and_no_other_slurm() -> None:
    """Skip without root, and rather than overwrite a SLURM setup this test did not write."""
    if os.geteuid() != 0:
        pytest.skip("a throwaway SLURM cluster needs root (apt-get, /etc/slurm, daemons)")
    conf = SLURM_ETC / "slurm.conf"
    if conf.exists() and MARKER not in conf.read_text(errors="replace"):
        pytest.skip(f"{conf} exists and is not this test's: this machine has its own SLURM")


def slurm_conf(state_dir: Path) -> str:
    """slurm.conf of a one-node cluster sized to this machine, without accounting."""
    node = socket.gethostname().split(".")[0]
    memory_mb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20 - 1024
    return f"""{MARKER}
ClusterName=circuitry-test
SlurmctldHost={node}
SlurmUser=root
AuthType=auth/munge
MpiDefault=none
StateSaveLocation={state_dir}/ctld-state
SlurmdSpoolDir={state_dir}/d-spool
SlurmctldPidFile={state_dir}/slurmctld.pid
SlurmdPidFile={state_dir}/slurmd.pid
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
GresTypes=gpu
ReturnToService=2
NodeName={node} CPUs={os.cpu_count()} RealMemory={memory_mb} Gres=gpu:1 State=UNKNOWN
PartitionName={PARTITION} Nodes=ALL Default=YES MaxTime=INFINITE State=UP
"""


def write_config(state_dir: Path) -> None:
    """slurm.conf and gres.conf (a count-only GPU is dropped by slurmd; a File= is kept)."""
    SLURM_ETC.mkdir(parents=True, exist_ok=True)
    (SLURM_ETC / "slurm.conf").write_text(slurm_conf(state_dir))
    (SLURM_ETC / "gres.conf").write_text(f"{MARKER}\nName=gpu File=/dev/null\n")


def remove_config() -> None:
    for name in ("slurm.conf", "gres.conf"):
        (SLURM_ETC / name).unlink(missing_ok=True)


def start_daemon(cmd: list[str], log: Path, **kwargs) -> subprocess.Popen:
    """A daemon kept in the foreground, so that its PID is ours to stop."""
    with log.open("w") as out:
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, **kwargs)


def start_munged(log: Path) -> subprocess.Popen:
    """munged as its own user; /run/munge is made here where no init system made it."""
    MUNGE_SOCKET_DIR.mkdir(exist_ok=True)
    shutil.chown(MUNGE_SOCKET_DIR, "munge", "munge")
    return start_daemon(["munged", "--foreground"], log, user="munge", group="munge")


def wait_for(ready, what: str, cluster: Cluster, daemons: list[subprocess.Popen]) -> None:
    """Poll until ready() holds; fail with the daemons' logs if one dies or time runs out."""
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while not ready():
        dead = [" ".join(d.args) for d in daemons if d.poll() is not None]
        if dead or time.monotonic() > deadline:
            reason = f"{', '.join(dead)} exited" if dead else f"{STARTUP_TIMEOUT_S} s passed"
            raise RuntimeError(f"SLURM: {what} not ready, {reason}\n{cluster.daemon_logs()}")
        time.sleep(0.5)


def munge_works() -> bool:
    return subprocess.run(["munge", "--no-input"], capture_output=True).returncode == 0


def node_is_idle() -> bool:
    states = subprocess.run(["sinfo", "-h", "-N", "-o", "%T"], capture_output=True, text=True)
    return states.returncode == 0 and states.stdout.split() == ["idle"]


def stop(daemons: list[subprocess.Popen]) -> None:
    """Cancel leftover jobs, then stop the daemons by PID, last started first."""
    with suppress(OSError, subprocess.SubprocessError):
        subprocess.run(["scancel", "--partition", PARTITION], timeout=10, capture_output=True)
    for daemon in reversed(daemons):
        daemon.terminate()
        try:
            daemon.wait(timeout=15)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait()


@contextmanager
def running_cluster(state_dir: Path) -> Iterator[Cluster]:
    """munged, slurmctld and slurmd up until the block ends, also when it fails."""
    cluster = Cluster(PARTITION, state_dir)
    daemons: list[subprocess.Popen] = []
    try:
        write_config(state_dir)
        for folder in ("ctld-state", "d-spool"):
            (state_dir / folder).mkdir()
        if not munge_works():  # else the munge package started its own service
            daemons.append(start_munged(state_dir / "munged.log"))
            wait_for(munge_works, "munged", cluster, daemons)
        daemons.append(start_daemon(["slurmctld", "-D"], state_dir / "slurmctld.log"))
        daemons.append(start_daemon(["slurmd", "-D"], state_dir / "slurmd.log"))
        wait_for(node_is_idle, "the node", cluster, daemons)
        yield cluster
    finally:
        stop(daemons)
        remove_config()
