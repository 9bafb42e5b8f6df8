"""Host-side helpers for the code sandbox: per-run uid slots, cgroup v1 limits, process sweeps.

Kept apart from `sandbox.py` so each piece stays small. Nothing here runs user code.

Slots. Every run leases a slot (an flock-ed file, so threads AND other processes on the host never share one).
When we are root the slot maps to a dedicated, otherwise unused uid (`UID_BASE + slot`). The user program
runs as that uid, so
- RLIMIT_NPROC really stops a fork bomb (for root it is not enforced), and only counts this run's tasks;
- the program cannot signal, ptrace or write anything of ours (different uid, no capabilities);
- after the run, `kill -9 -1` executed AS that uid kills every process the run left behind, whatever
  session, process group or pid namespace it fled to.

Cgroups (optional, v1 `memory` + `pids` controllers, root only). RLIMIT_AS caps one process; a program
that forks N children can still use N x memory_mb. When the v1 hierarchies are writable, each run also gets
a cgroup under our own cgroup with `memory.limit_in_bytes` (RSS + tmpfs of the whole run) and `pids.max`.
cgroup v2 is not used (its "no internal processes" rule needs a delegated subtree); rlimits and the uid
slot still apply there.
"""

from __future__ import annotations

import errno
import fcntl
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass

UID_BASE = int(os.environ.get("SAPO_VL_SANDBOX_UID_BASE", "1900000000"))
MAX_SLOTS = 512
CGROUP_ROOT = "/sys/fs/cgroup"

_slot_mutex = threading.Lock()
_held_slots: set[int] = set()


@dataclass
class Slot:
    index: int
    uid: int | None  # dedicated uid (root only); None -> run as the caller
    lock_fd: int


def _slot_dir() -> str:
    path = os.path.join(tempfile.gettempdir(), f"sapo_vl_sandbox_slots_{os.geteuid()}")
    os.makedirs(path, mode=0o700, exist_ok=True)
    return path


def _uid_is_free(uid: int) -> bool:
    try:
        pwd.getpwuid(uid)
    except KeyError:
        return True
    return False


def acquire_slot() -> Slot:
    """Lease a free slot; flock makes it exclusive across threads and processes."""
    root = os.geteuid() == 0
    with _slot_mutex:
        for index in range(MAX_SLOTS):
            if index in _held_slots or (root and not _uid_is_free(UID_BASE + index)):
                continue
            fd = os.open(os.path.join(_slot_dir(), f"slot-{index}.lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            _held_slots.add(index)
            return Slot(index, UID_BASE + index if root else None, fd)
    raise RuntimeError(f"sandbox: all {MAX_SLOTS} slots are busy (lock files in {_slot_dir()})")


def release_slot(slot: Slot) -> None:
    with _slot_mutex:
        _held_slots.discard(slot.index)
        os.close(slot.lock_fd)  # closing drops the flock


_SWEEP_SNIPPET = (
    "import os, sys\n"
    "uid = int(sys.argv[1])\n"
    "os.setgroups([]); os.setresgid(uid, uid, uid); os.setresuid(uid, uid, uid)\n"
    "try:\n"
    "    os.kill(-1, 9)\n"
    "except ProcessLookupError:\n"
    "    pass\n"
)


def _sweep_command(uid: int) -> list[str]:
    """`setpriv ... kill -9 -1` (fast, and Popen can vfork it); without util-linux setpriv or a kill
    binary, the same done by our own interpreter (which starts as root and drops to `uid` itself)."""
    kill_bin = shutil.which("kill", path="/usr/bin:/bin")
    setpriv = shutil.which("setpriv", path="/usr/bin:/bin")
    if kill_bin and setpriv:
        return [setpriv, f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--", kill_bin, "-9", "-1"]
    return [sys.executable, "-I", "-S", "-c", _SWEEP_SNIPPET, str(uid)]


def live_processes_of(uid: int) -> list[int]:
    """Pids of processes whose real uid is `uid` and that are not zombies (a zombie cannot run; its parent
    reaps it). Read from /proc/<pid>/status: a non-dumpable process hides its uid from the /proc owner."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/status", "rb") as f:
                fields = dict(line.split(b":", 1) for line in f.read().splitlines() if b":" in line)
            if int(fields[b"Uid"].split()[0]) == uid and fields[b"State"].split()[0] not in (b"Z", b"X"):
                pids.append(int(entry))
        except (OSError, KeyError, ValueError, IndexError):
            continue
    return pids


def sweep_uid(uid: int, max_wait_s: float = 10.0) -> None:
    """SIGKILL every process owned by `uid` (a dedicated slot uid) until /proc shows none alive.

    `kill -9 -1` run as `uid` signals exactly the processes that uid may signal, i.e. its own, whatever
    session, process group or pid namespace they are in. Its return value cannot tell whether any were
    left (kill(-1) also "succeeds" when it only met processes it may not signal), so /proc is checked.
    """
    cmd = _sweep_command(uid)
    deadline = time.monotonic() + max_wait_s
    delay = 0.0005
    while True:
        subprocess.run(cmd, env={}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        if not live_processes_of(uid):
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"sandbox: processes of uid {uid} still alive {max_wait_s} s after SIGKILL")
        time.sleep(delay)
        delay = min(delay * 2, 0.02)


def count_user_processes(uid: int) -> int:
    """Number of tasks (threads included) owned by `uid`, for RLIMIT_NPROC when we are not root."""
    count = 0
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                st = os.stat(f"/proc/{entry}")
                if st.st_uid == uid:
                    count += len(os.listdir(f"/proc/{entry}/task"))
            except OSError:
                continue
    return count


# ---------------------------------------------------------------------------------------------- cgroups
def _own_cgroup_v1_path(controller: str) -> str | None:
    with open("/proc/self/cgroup") as f:
        for line in f:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            if controller in controllers.split(","):
                return path
    return None


def _write(path: str, value) -> None:
    with open(path, "w") as f:
        f.write(str(value))


class CgroupV1:
    """Per-run memory + pids cgroup, created under this process's own v1 cgroups."""

    CONTROLLERS = ("memory", "pids")

    def __init__(self, parents: dict[str, str]):
        self.parents = parents  # controller -> directory that holds our per-slot groups

    @classmethod
    def detect(cls) -> CgroupV1 | None:
        """Return a usable instance, or None (not root, no v1 hierarchies, or read-only cgroupfs)."""
        if os.geteuid() != 0:
            return None
        parents = {}
        try:
            for ctrl in cls.CONTROLLERS:
                own = _own_cgroup_v1_path(ctrl)
                mount = os.path.join(CGROUP_ROOT, ctrl)
                if own is None or not os.path.exists(os.path.join(mount, "cgroup.procs")):
                    return None
                parent = os.path.join(mount + own, "sapo_vl_sandbox")
                os.makedirs(parent, exist_ok=True)
                parents[ctrl] = parent
            probe = cls(parents)
            procs = probe.create(MAX_SLOTS, memory_bytes=64 << 20, max_pids=8)
            probe.destroy(MAX_SLOTS)
            return probe if procs else None
        except OSError:
            return None

    def _dir(self, ctrl: str, index: int) -> str:
        return os.path.join(self.parents[ctrl], f"slot-{index}")

    def create(self, index: int, *, memory_bytes: int, max_pids: int) -> list[str]:
        """Make fresh groups for slot `index`; return the cgroup.procs files the launcher joins."""
        self.destroy(index)  # a crashed earlier run may have left one behind
        for ctrl in self.CONTROLLERS:
            os.mkdir(self._dir(ctrl, index))
        mem = self._dir("memory", index)
        _write(os.path.join(mem, "memory.limit_in_bytes"), memory_bytes)
        if os.path.exists(os.path.join(mem, "memory.memsw.limit_in_bytes")):
            _write(os.path.join(mem, "memory.memsw.limit_in_bytes"), memory_bytes)  # no swap either
        _write(os.path.join(self._dir("pids", index), "pids.max"), max_pids)
        return [os.path.join(self._dir(c, index), "cgroup.procs") for c in self.CONTROLLERS]

    def oom_killed(self, index: int) -> bool:
        """True when the kernel OOM-killed something in the run's memory cgroup."""
        mem = self._dir("memory", index)
        try:
            with open(os.path.join(mem, "memory.oom_control")) as f:
                for line in f:
                    key, _, val = line.partition(" ")
                    if key == "oom_kill":
                        return int(val) > 0
            with open(os.path.join(mem, "memory.failcnt")) as f:
                return int(f.read()) > 0
        except OSError:
            return False

    def _kill_all(self, group: str, rounds: int = 200) -> None:
        procs = os.path.join(group, "cgroup.procs")
        for _ in range(rounds):
            with open(procs) as f:
                pids = [int(p) for p in f.read().split()]
            if not pids:
                return
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.002)

    def destroy(self, index: int) -> None:
        """Kill whatever is still in the slot's groups and remove them."""
        for ctrl in self.CONTROLLERS:
            group = self._dir(ctrl, index)
            if not os.path.isdir(group):
                continue
            self._kill_all(group)
            for _ in range(200):
                try:
                    os.rmdir(group)
                    break
                except OSError as exc:
                    if exc.errno != errno.EBUSY:
                        raise
                    self._kill_all(group, rounds=1)
                    time.sleep(0.002)
