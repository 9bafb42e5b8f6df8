"""Run untrusted Python in a real OS sandbox: `run_python(source, *, timeout_s, memory_mb, stdin=None)`.

Contract (public: rewards and user code rely on it): returns an `ExecResult` whose `status` is exactly one of

- ``"passed"``  the program exited with code 0, within every limit, and its output fit in the cap;
- ``"failed"``  it ended by itself with a non-zero exit code (an uncaught exception, a failed assert,
  ``sys.exit(3)``) or was killed by a signal that is none of the limits below (e.g. SIGSEGV, SIGABRT);
- ``"timeout"`` the wall-clock limit (`timeout_s`, enforced by us, startup included) or the CPU limit
  (RLIMIT_CPU = ceil(timeout_s), SIGXCPU) ran out;
- ``"error"``   the sandbox could not start the program, or a resource limit stopped it: memory
  (MemoryError under RLIMIT_AS, or the cgroup OOM killer), output over `max_output_bytes`
  (RLIMIT_FSIZE, SIGXFSZ), or an unexplained SIGKILL.
`reason` says which case it was, in a few words.

Backends (``backend="auto"`` picks the first that works here; the probe runs once per process):

``"bwrap"`` bubblewrap: new user/pid/net/ipc/uts/cgroup/mount namespaces (``--unshare-all``), read-only
  binds of /usr and the /bin, /lib* links (plus the interpreter's prefix when it lives elsewhere), fresh
  /proc and /dev, a read-only root and /dev, size-capped private tmpfs on /tmp (the cwd) and /dev/shm,
  ``--clearenv`` with a minimal environment, ``--new-session``, ``--die-with-parent``, no capabilities,
  no nested user namespaces.
``"unshare"`` fallback, root only: ``unshare --net --pid --fork --mount-proc --ipc --uts`` around a small
  launcher (`_sandbox_launcher.py`) that, in the new mount namespace, puts private size-capped tmpfs on
  /tmp and /dev/shm (the only places the program may write) and hides every top-level path except
  /usr /etc /proc /dev /sys /bin /sbin /lib* (empty tmpfs over directories such as /root /home /run
  /var /work /opt, /dev/null over files), then forks the program as a dedicated uid with rlimits and
  stays as pid 1, so every process of the run dies with it. What stays visible is protected by uid
  permissions only: world-readable files under /usr, /etc and /sys can be read, and /dev and /sys are
  the host's (prefer bwrap).

Both backends, on top (root): the program runs as a dedicated slot uid (see `_sandbox_support`), under
rlimits CPU / AS / FSIZE / NPROC / NOFILE / CORE=0 and, where cgroup v1 is writable, a per-run memory+pids
cgroup. stdout/stderr go to files under RLIMIT_FSIZE (never pipes; we read at most `max_output_bytes`).
Each run's launcher is forked by a per-process fork server (`_sandbox_zygote`), not started as a new
interpreter. The root launcher stays as subreaper / pid 1 and reaps the whole tree before it exits. At the wall-clock
limit every process of the slot uid is SIGKILLed (without root: SIGTERM to the launcher, which kills its
child; its process group is SIGKILLed as a last resort). After every run the cgroup is emptied or,
without one, the slot uid swept until /proc shows none of its processes alive; only then is the slot
reused. Without bwrap and without root there is no sandbox: `SandboxUnavailable` is raised instead of
running code unconfined.

Known limits (design for accidents and reward hacking by generated code, not for kernel exploits):
- No seccomp filter: the whole syscall surface of the kernel is reachable (a kernel bug escapes).
- unshare backend: world-readable host files under /usr, /etc and /sys can be read; /dev is the host's.
- Without a writable cgroup v1, memory is bounded per process (RLIMIT_AS), so a run may use up to
  max_processes x memory_mb; cgroup v2 is not used.
- Without root (bwrap only): no slot uid, so RLIMIT_NPROC is set to our current process count plus
  `max_processes` and is shared with our other processes; cleanup relies on bwrap's pid namespace.
- A program that ignores SIGXCPU is SIGKILLed at the hard CPU limit (soft + 1 s) and reported as
  "error"/"killed (SIGKILL)", unless the wall-clock limit struck first (the usual case).
- `returncode` from bwrap uses the shell encoding: a program that calls ``sys.exit(128 + N)`` reads as
  killed by signal N.
- RLIMIT_AS counts virtual memory: runtimes that reserve a lot of address space need a larger memory_mb.

The program runs with ``python -I`` (isolated mode: no PYTHON* variables, no user site, no script dir on
sys.path). The interpreter must be readable by the sandbox uid: a venv under /root is not, so the probe
tries the caller's interpreter first and then /usr/bin/python3, /usr/local/bin/python3 (override with
``python=`` or SAPO_VL_SANDBOX_PYTHON); `ExecResult.interpreter` reports which one ran.
"""

from __future__ import annotations

import json
import marshal
import math
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from dataclasses import dataclass

from sapo_vl.rewards import _sandbox_support as support
from sapo_vl.rewards import _sandbox_zygote as zygote

BACKENDS = ("bwrap", "unshare")
STATUS_FD, SOURCE_FD = 3, 4  # the launcher's fds (see _sandbox_launcher); 0-2 are the program's stdio
SANDBOX_ENV = {
    "PATH": "/usr/local/bin:/usr/bin:/bin",
    "HOME": "/tmp",
    "TMPDIR": "/tmp",
    "LANG": "C.UTF-8",
    "LC_ALL": "C.UTF-8",
}
# unshare backend: the only top-level paths left visible (read-only by uid permissions); /tmp is private
VISIBLE_TOP = ("/usr", "/etc", "/proc", "/dev", "/sys", "/tmp", "/bin", "/sbin", "/lib", "/lib32", "/lib64",
               "/libx32")


class SandboxUnavailable(RuntimeError):
    """No backend can confine code on this host (install bubblewrap, or run as root for the fallback)."""


@dataclass(frozen=True)
class ExecResult:
    status: str  # "passed" | "failed" | "timeout" | "error"
    returncode: int | None  # exit code, or -N if killed by signal N; None: never started, or wall-clock kill
    stdout: str  # decoded UTF-8 (errors replaced), at most max_output_bytes
    stderr: str
    reason: str = ""  # e.g. "exit 1", "wall-clock limit", "output limit", "memory limit", "sandbox: ..."
    wall_s: float = 0.0
    backend: str = ""
    interpreter: str = ""
    stdout_truncated: bool = False
    stderr_truncated: bool = False

    @property
    def passed(self) -> bool:
        return self.status == "passed"


@dataclass(frozen=True)
class _Limits:
    timeout_s: float
    memory_mb: int
    max_output_bytes: int
    max_processes: int
    max_open_files: int
    tmpfs_mb: int


def _rlimits(lim: _Limits, slot_uid: int | None) -> dict[str, tuple[int, int]]:
    cpu = max(1, math.ceil(lim.timeout_s))
    nproc = lim.max_processes
    if slot_uid is None:  # not root: RLIMIT_NPROC counts all of our own processes too
        nproc += support.count_user_processes(os.geteuid())
    return {
        "RLIMIT_CPU": (cpu, cpu + 1),
        "RLIMIT_AS": (lim.memory_mb << 20, lim.memory_mb << 20),
        "RLIMIT_FSIZE": (lim.max_output_bytes + 1, lim.max_output_bytes + 1),
        "RLIMIT_NPROC": (nproc, nproc),
        "RLIMIT_NOFILE": (lim.max_open_files, lim.max_open_files),
        "RLIMIT_CORE": (0, 0),
    }


# ------------------------------------------------------------------------------------------ commands
def _interpreter_prefix(python: str) -> str:
    real = os.path.realpath(python)
    return os.path.dirname(os.path.dirname(real))


def _bwrap_argv(python: str, lim: _Limits, status_fd: int, source_fd: int) -> list[str]:
    argv = [shutil.which("bwrap"), "--unshare-all", "--unshare-user", "--disable-userns"]
    argv += ["--uid", "65534", "--gid", "65534", "--hostname", "sandbox"]
    argv += ["--die-with-parent", "--new-session", "--cap-drop", "ALL", "--clearenv"]
    for key, value in SANDBOX_ENV.items():
        argv += ["--setenv", key, value]
    argv += ["--ro-bind", "/usr", "/usr"]
    for top in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        if os.path.islink(top):
            argv += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            argv += ["--ro-bind", top, top]
    for etc in ("/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/localtime"):
        argv += ["--ro-bind-try", etc, etc]
    prefix = _interpreter_prefix(python)
    if prefix != "/usr":
        argv += ["--ro-bind", prefix, prefix]
    size = str(lim.tmpfs_mb << 20)
    argv += ["--proc", "/proc", "--dev", "/dev", "--size", size, "--tmpfs", "/dev/shm"]
    argv += ["--size", size, "--tmpfs", "/tmp", "--file", str(source_fd), "/tmp/main.py"]
    argv += ["--remount-ro", "/", "--remount-ro", "/dev", "--chdir", "/tmp"]
    argv += ["--json-status-fd", str(status_fd)]
    return argv + ["--", python, "-I", "main.py"]


def _masks(python: str) -> tuple[list[str], list[str]]:
    """Top-level directories and files hidden in the unshare backend: everything but an allowlist.

    Directories get an empty tmpfs, files a bind of /dev/null. The interpreter's top-level directory
    stays visible when it lives outside the allowlist (e.g. /opt/python).
    """
    keep = set(VISIBLE_TOP)
    keep.add("/" + _interpreter_prefix(python).strip("/").split("/", 1)[0])
    dirs, files = [], []
    for entry in sorted(os.listdir("/")):
        path = "/" + entry
        if path in keep or os.path.islink(path):
            continue
        if os.path.isdir(path):
            dirs.append(path)
        elif os.path.isfile(path):
            files.append(path)
    return dirs, files


def _unshare_cfg(python: str, lim: _Limits, source_path: str) -> dict:
    dirs, files = _masks(python)
    tmpfs = [["/tmp", lim.tmpfs_mb << 20, 0o1777], ["/dev/shm", lim.tmpfs_mb << 20, 0o1777]]
    tmpfs += [[path, 4096, 0o755] for path in dirs]
    return {"mode": "reap", "tmpfs": tmpfs, "mask_files": files, "source_path": source_path,
            "workdir": "/tmp/sandbox", "argv": [python, "-I", "main.py"], "env": dict(SANDBOX_ENV)}


# ------------------------------------------------------------------------------------------ one run
@dataclass
class _RunFiles:
    root: str
    stdin: str
    stdout: str
    stderr: str
    source: str


def _make_files(source: str, stdin: str | bytes | None) -> _RunFiles:
    root = tempfile.mkdtemp(prefix="sapo_vl_run_")  # 0700, ours: the program only gets fds
    files = _RunFiles(root, *(os.path.join(root, n) for n in ("stdin", "stdout", "stderr", "main.py")))
    data = stdin.encode() if isinstance(stdin, str) else (stdin or b"")
    with open(files.stdin, "wb") as f:
        f.write(data)
    with open(files.source, "wb") as f:
        f.write(source.encode())
    return files


def _read_capped(path: str, cap: int) -> tuple[str, bool]:
    with open(path, "rb") as f:
        data = f.read(cap + 1)
    return data[:cap].decode("utf-8", errors="replace"), len(data) > cap


def _launch(backend: str, python: str, lim: _Limits, files: _RunFiles, slot, cgroup_procs, status_w) -> int:
    """Start the run's launcher through the zygote; returns its pid."""
    cfg = {"status_fd": STATUS_FD, "cgroup_procs": cgroup_procs, "rlimits": _rlimits(lim, slot.uid),
           "uid": slot.uid, "gid": slot.uid}
    out_flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC
    fds = [os.open(files.stdin, os.O_RDONLY | os.O_CLOEXEC), os.open(files.stdout, out_flags, 0o600),
           os.open(files.stderr, out_flags, 0o600), status_w]
    if backend == "bwrap":
        fds.append(os.open(files.source, os.O_RDONLY | os.O_CLOEXEC))
        cfg.update(mode="exec", env={}, argv=_bwrap_argv(python, lim, STATUS_FD, SOURCE_FD))
    else:
        cfg.update(_unshare_cfg(python, lim, files.source))
        unshare = [shutil.which("unshare"), "--net", "--pid", "--fork", "--kill-child", "--mount-proc",
                   "--ipc", "--uts", "--"]
        launcher = [sys.executable, "-I", "-S", zygote.LAUNCHER, marshal.dumps(cfg, 4).hex()]
        cfg = {"mode": "unshare", "argv": unshare + launcher, "env": {"LANG": "C.UTF-8"}}
    try:
        return zygote.start_launcher(cfg, fds)
    finally:
        for fd in fds[:3] + fds[4:]:
            os.close(fd)


def _program_outcome(backend: str, status_text: str) -> tuple[int | None, str]:
    """(returncode or None, launcher error message or "") from the status channel."""
    error, returncode = "", None
    for line in status_text.splitlines():
        if line.startswith("E "):
            error = line[2:]
        elif line.startswith("S ") and backend == "unshare":
            returncode = os.waitstatus_to_exitcode(int(line[2:]))
        elif line.startswith("{") and backend == "bwrap":
            try:
                doc = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(doc, dict) and isinstance(doc.get("exit-code"), int):
                code = doc["exit-code"]  # shell encoding: 128+N means killed by signal N
                returncode = -(code - 128) if 128 < code < 128 + signal.NSIG else code
    if backend == "bwrap" and not error and '"child-pid"' not in status_text:
        error = "bwrap could not start the program"
    return returncode, error


def _classify(returncode, launch_error, timed_out, out_over, err_over, oom, stderr) -> tuple[str, str]:
    """Map how the run ended to (status, reason); the order encodes precedence."""
    if launch_error:
        return "error", f"sandbox: {launch_error}"
    if timed_out:
        return "timeout", "wall-clock limit"
    if returncode == -signal.SIGXCPU:
        return "timeout", "cpu-time limit"
    if returncode == -signal.SIGXFSZ or out_over or err_over:
        return "error", "output limit"
    last_line = stderr.rstrip().rsplit("\n", 1)[-1]
    if oom or (returncode not in (None, 0) and last_line.startswith("MemoryError")):
        return "error", "memory limit"
    if returncode is None:
        return "error", "sandbox: the program's exit status was lost"
    if returncode == 0:
        return "passed", "exit 0"
    if returncode == -signal.SIGKILL:
        return "error", "killed (SIGKILL)"
    if returncode < 0:
        try:
            return "failed", f"signal {signal.Signals(-returncode).name}"
        except ValueError:  # e.g. a real-time signal
            return "failed", f"signal {-returncode}"
    return "failed", f"exit {returncode}"


def _cleanup(slot, cgroup) -> bool:
    """Kill everything the run left; returns whether the cgroup saw an OOM kill.

    The launcher already reaped its whole tree before exiting; this is the guarantee on top. With a
    cgroup, emptying it is complete (no process can leave it: the cgroupfs belongs to root). Otherwise,
    with a slot uid, `sweep_uid` kills that uid's processes until /proc shows none alive.
    """
    if cgroup is not None:
        oom = cgroup.oom_killed(slot.index)
        cgroup.destroy(slot.index)
        return oom
    if slot.uid is not None:
        support.sweep_uid(slot.uid)
    return False


def _run_once(source, stdin, lim: _Limits, backend: str, python: str) -> ExecResult:
    files = _make_files(source, stdin)
    slot = support.acquire_slot()
    cgroup = _cgroup()
    status_r, status_w = os.pipe2(os.O_CLOEXEC)
    start = time.perf_counter()
    try:
        procs = []
        if cgroup is not None:
            procs = cgroup.create(slot.index, memory_bytes=(lim.memory_mb + 64) << 20,
                                  max_pids=lim.max_processes + 4)
        try:
            pid = _launch(backend, python, lim, files, slot, procs, status_w)
        finally:
            os.close(status_w)
        timed_out, status_text = zygote.wait_run(status_r, pid, lim.timeout_s, slot.uid)
        wall = time.perf_counter() - start
        oom = _cleanup(slot, cgroup)
        returncode, launch_error = _program_outcome(backend, status_text)
        stdout, out_over = _read_capped(files.stdout, lim.max_output_bytes)
        stderr, err_over = _read_capped(files.stderr, lim.max_output_bytes)
    finally:
        os.close(status_r)
        support.release_slot(slot)
        shutil.rmtree(files.root, ignore_errors=True)
    status, reason = _classify(returncode, launch_error, timed_out, out_over, err_over, oom, stderr)
    return ExecResult(status, returncode, stdout, stderr, reason, wall, backend, python, out_over, err_over)


# ------------------------------------------------------------------------------------------ backends
_probe_lock = threading.Lock()  # held while probing: concurrent first calls wait for one probe
_cgroup_lock = threading.Lock()
_probe_cache: dict[str, tuple[str | None, str]] = {}  # backend -> (working interpreter, why not)
_cgroup_cache: list = []

_PROBE_LIMITS = _Limits(timeout_s=20.0, memory_mb=512, max_output_bytes=4096, max_processes=16,
                        max_open_files=64, tmpfs_mb=4)


def _cgroup():
    with _cgroup_lock:
        if not _cgroup_cache:
            _cgroup_cache.append(support.CgroupV1.detect())
        return _cgroup_cache[0]


def _interpreter_candidates() -> list[str]:
    env = os.environ.get("SAPO_VL_SANDBOX_PYTHON")
    if env:
        return [env]
    found = [os.path.realpath(sys.executable), "/usr/bin/python3", "/usr/local/bin/python3"]
    return [p for i, p in enumerate(found) if os.path.isfile(p) and p not in found[:i]]


def _probe(backend: str) -> tuple[str | None, str]:
    """Find an interpreter that runs inside `backend`: (path, "") or (None, reason)."""
    if backend == "bwrap" and shutil.which("bwrap") is None:
        return None, "bwrap is not installed (apt-get install -y bubblewrap)"
    if backend == "unshare" and (os.geteuid() != 0 or shutil.which("unshare") is None):
        return None, "the unshare fallback needs root and util-linux unshare"
    errors = []
    for python in _interpreter_candidates():
        res = _run_once("print('sandbox-ok')", None, _PROBE_LIMITS, backend, python)
        if res.status == "passed" and res.stdout.strip() == "sandbox-ok":
            return python, ""
        errors.append(f"{python}: {res.reason} {res.stderr.strip()[-300:]}")
    return None, "; ".join(errors)


def backend_status(backend: str) -> tuple[str | None, str]:
    """(interpreter, "") when `backend` works on this host, else (None, why). Probed once, cached."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown sandbox backend {backend!r}; expected one of {BACKENDS}")
    with _probe_lock:
        if backend not in _probe_cache:
            _probe_cache[backend] = _probe(backend)
        return _probe_cache[backend]


def resolve_backend(backend: str = "auto") -> str:
    """The backend `run_python` would use; raises SandboxUnavailable if none works."""
    names = BACKENDS if backend == "auto" else (backend,)
    reasons = []
    for name in names:
        python, why = backend_status(name)
        if python is not None:
            return name
        reasons.append(f"{name}: {why}")
    raise SandboxUnavailable("no sandbox backend works here: " + " | ".join(reasons))


def run_python(
    source: str,
    *,
    timeout_s: float,
    memory_mb: int,
    stdin: str | bytes | None = None,
    backend: str = "auto",
    python: str | None = None,
    max_output_bytes: int = 1 << 20,
    max_processes: int = 32,
    max_open_files: int = 128,
    tmpfs_mb: int = 64,
) -> ExecResult:
    """Run `source` as ``main.py`` in a fresh sandbox; see the module docstring for every guarantee.

    `max_processes` counts tasks (threads too). `max_output_bytes` caps stdout, stderr and every file the
    program writes (RLIMIT_FSIZE). `tmpfs_mb` sizes the private /tmp. Thread-safe: call it from a pool.
    """
    if not isinstance(source, str):
        raise TypeError(f"run_python: source must be str, got {type(source).__name__}")
    if not (timeout_s > 0 and memory_mb > 0 and max_output_bytes > 0 and max_processes > 0):
        raise ValueError("run_python: timeout_s, memory_mb, max_output_bytes and max_processes must be > 0 "
                         f"(got {timeout_s}, {memory_mb}, {max_output_bytes}, {max_processes})")
    name = resolve_backend(backend)
    interpreter = python or backend_status(name)[0]
    lim = _Limits(float(timeout_s), int(memory_mb), int(max_output_bytes), int(max_processes),
                  int(max_open_files), int(tmpfs_mb))
    return _run_once(source, stdin, lim, name, interpreter)
