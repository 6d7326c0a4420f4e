"""A throwaway single-node SLURM on localhost, built from Debian's packages, for the tests.

`LocalSlurm` installs slurm-wlm and munge with apt-get if they are missing, writes
/etc/slurm/slurm.conf and gres.conf (the plugin's in-job step drops SLURM_* variables,
so SLURM_CONF cannot point elsewhere), makes fake GPUs as character devices, and starts
munged, slurmctld and slurmd in the foreground so that it can stop exactly those PIDs.
Accounting is off: use `squeue` as the plugin's status command.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import stat
import subprocess
import time
from pathlib import Path

PACKAGES = ["slurm-wlm", "slurmctld", "slurmd", "slurm-client", "munge"]
BINARIES = ["munged", "slurmctld", "slurmd", "sbatch", "squeue", "scontrol", "sinfo"]
SLURM_DIR = Path("/etc/slurm")
MARKER = "# written by sdi tests/slurm_cluster.py; safe to delete"
PARTITION = "debug"
MIN_JOB_AGE = 3600  # s: jobs stay in scontrol this long; >= 3x the plugin's init-seconds-before-status-checks


def unavailable_reason() -> str | None:
    """Why a local SLURM cannot be brought up here, or None if it can."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "needs root: installs Debian's slurm-wlm/munge packages and starts their daemons"
    if not all(shutil.which(b, path=_sbin_path()) for b in BINARIES) and not shutil.which("apt-get"):
        return "SLURM is not installed and there is no apt-get to install " + " ".join(PACKAGES)
    conf = SLURM_DIR / "slurm.conf"
    if conf.exists() and MARKER not in conf.read_text(errors="replace"):
        return f"{conf} exists and was not written by these tests; refusing to overwrite a real SLURM setup"
    return None


def _sbin_path() -> str:
    return os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])


def _which(name: str) -> str:
    path = shutil.which(name, path=_sbin_path())
    if path is None:
        raise RuntimeError(f"{name} not found after installing {' '.join(PACKAGES)}")
    return path


def install_packages() -> None:
    """apt-get install the SLURM and munge packages unless their binaries are present."""
    if all(shutil.which(b, path=_sbin_path()) for b in BINARIES):
        return
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env, capture_output=True)
    proc = subprocess.run(["apt-get", "install", "-y", "-qq", *PACKAGES], env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"apt-get install {' '.join(PACKAGES)} failed:\n"
                           f"{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")


def _node_line() -> str:
    """`slurmd -C`'s NodeName line (hostname -s, CPUs, RealMemory as the machine reports them)."""
    out = subprocess.run([_which("slurmd"), "-C"], check=True, capture_output=True, text=True).stdout
    line = next(x for x in out.splitlines() if x.startswith("NodeName="))
    hostname = socket.gethostname().split(".")[0]
    if not line.startswith(f"NodeName={hostname} "):
        raise RuntimeError(f"slurmd -C reports {line.split()[0]} but hostname -s is {hostname}")
    return line


class LocalSlurm:
    """One node, one partition `debug`, `n_gpus` fake GPUs as GRES; state under `state_dir`."""

    def __init__(self, state_dir: Path, n_gpus: int = 2):
        self.state = Path(state_dir)
        self.n_gpus = n_gpus
        self.procs: dict[str, subprocess.Popen] = {}
        self.written: list[Path] = []

    # --- configuration ---------------------------------------------------------------

    def _fake_gpus(self) -> list[Path]:
        """Character devices (slurmd rejects plain files) with /dev/null's numbers."""
        devices = []
        for i in range(self.n_gpus):
            dev = self.state / "dev" / f"fakegpu{i}"
            dev.parent.mkdir(parents=True, exist_ok=True)
            if not dev.exists():
                try:
                    os.mknod(dev, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
                except OSError:  # no mknod in this container: fall back to real devices
                    dev = Path(["/dev/null", "/dev/zero"][i % 2])
            devices.append(dev)
        return devices

    def write_config(self) -> None:
        node = _node_line()
        hostname = node.split()[0].split("=")[1]
        for sub in ("ctld", "d"):
            (self.state / sub).mkdir(parents=True, exist_ok=True)
        gres = "\n".join(f"NodeName={hostname} Name=gpu File={d}" for d in self._fake_gpus())
        slurm_conf = f"""{MARKER}
ClusterName=sditest
SlurmctldHost={hostname}
SlurmUser=root
AuthType=auth/munge
StateSaveLocation={self.state}/ctld
SlurmdSpoolDir={self.state}/d
SlurmctldPidFile={self.state}/slurmctld.pid
SlurmdPidFile={self.state}/slurmd.pid
SlurmctldLogFile={self.state}/slurmctld.log
SlurmdLogFile={self.state}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1000
MinJobAge={MIN_JOB_AGE}
ReturnToService=2
MpiDefault=none
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
GresTypes=gpu
{node} Gres=gpu:{self.n_gpus} State=UNKNOWN
PartitionName={PARTITION} Nodes={hostname} Default=YES MaxTime=INFINITE State=UP
"""
        SLURM_DIR.mkdir(parents=True, exist_ok=True)
        for name, text in (("slurm.conf", slurm_conf), ("gres.conf", f"{MARKER}\nAutoDetect=off\n{gres}\n")):
            path = SLURM_DIR / name
            path.write_text(text)
            self.written.append(path)

    # --- daemons ---------------------------------------------------------------------

    def _start(self, name: str, cmd: list[str], **kwargs) -> None:
        log = open(self.state / f"{name}.out", "w")
        self.procs[name] = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, **kwargs)
        log.close()

    def start(self) -> None:
        install_packages()
        self.write_config()
        munge = pwd.getpwnam("munge")
        run_dir = Path("/run/munge")
        run_dir.mkdir(parents=True, exist_ok=True)
        os.chown(run_dir, munge.pw_uid, munge.pw_gid)
        self._start("munged", [_which("munged"), "--foreground", "--force"], user=munge.pw_uid,
                    group=munge.pw_gid)
        self._wait(lambda: Path("/run/munge/munge.socket.2").exists(), "munged socket")
        self._start("slurmctld", [_which("slurmctld"), "-D", "-c", "-i"])
        self._wait(lambda: self._ok(["scontrol", "ping"], "UP"), "slurmctld to answer scontrol ping")
        self._start("slurmd", [_which("slurmd"), "-D"])
        self._wait(lambda: self._ok(["sinfo", "-h", "-N", "-o", "%T"], "idle"), "the node to become idle")

    def _ok(self, cmd: list[str], needle: str) -> bool:
        proc = subprocess.run(cmd, capture_output=True, text=True)
        return proc.returncode == 0 and needle in proc.stdout

    def _wait(self, ready, what: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"{name} exited ({proc.returncode}) while waiting for {what}:\n"
                                       f"{self.daemon_logs()}")
            if ready():
                return
            time.sleep(0.5)
        raise RuntimeError(f"timed out after {timeout}s waiting for {what}:\n{self.daemon_logs()}")

    def daemon_logs(self) -> str:
        parts = []
        for path in sorted(self.state.glob("*.out")) + sorted(self.state.glob("*.log")):
            parts.append(f"--- {path.name}\n{path.read_text(errors='replace')[-3000:]}")
        return "\n".join(parts)

    def stop(self) -> None:
        """Stop the daemons this object started, by PID, newest first."""
        for name in reversed(list(self.procs)):
            proc = self.procs.pop(name)
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        # Without a controller, a leftover slurm.conf makes every `scontrol` (the SLURM
        # plugin runs one whenever Snakemake starts) wait ~9 s for it; remove what we wrote.
        for path in self.written:
            if path.exists() and MARKER in path.read_text(errors="replace"):
                path.unlink()
        self.written.clear()

    def job_info(self, job_id: str) -> dict[str, str]:
        """`scontrol show job` as {key: value} (kept for MinJobAge after the job ends)."""
        out = subprocess.run(["scontrol", "show", "job", "-o", job_id], check=True, capture_output=True,
                             text=True).stdout
        return dict(item.split("=", 1) for item in out.split() if "=" in item)
