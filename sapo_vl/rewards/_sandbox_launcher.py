"""Privileged half of the code sandbox: runs as a stand-alone script, never imported by user code.

`sapo_vl.rewards.sandbox` starts this file with ``python -I -S _sandbox_launcher.py CONFIG`` (a dict,
`marshal`-ed and hex-encoded: no json import, which costs ~10 ms of startup per run) and a minimal
environment. It runs with the caller's privileges (usually root), applies the limits, drops to the
sandbox uid and execs. Keep it free of sapo_vl imports: it must start fast and trust nothing but its argv.

Two modes (``config["mode"]``):

- ``"exec"`` (bubblewrap backend): join the run's cgroups, become a child subreaper, fork; the child sets
  rlimits, drops to the sandbox uid and execs ``argv`` (bwrap, which sets no_new_privs and drops all
  capabilities itself; it reports the program's pid and exit code on ``status_fd`` via
  ``--json-status-fd``). This process stays root and reaps the whole tree, bwrap's orphaned pid 1
  included, so nothing is left as a zombie for the host init when it exits.
- ``"reap"`` (fallback backend, pid 1 of a fresh pid namespace made by ``unshare``): join the cgroups,
  mount a private tmpfs over /tmp and over every hidden path (hidden files get /dev/null), copy the
  program into a private work dir, then fork. The child drops to the sandbox uid, sets rlimits and execs
  the interpreter. This process stays root, reaps, and writes ``S <raw wait status>`` on ``status_fd``
  when the program ends. When it exits, the kernel kills everything left in the pid namespace.

Any failure before the user program starts is written as ``E <message>`` on ``status_fd`` (exit 125).
"""

import _signal
import ctypes
import marshal
import os
import resource
import sys

SIGKILL, SIGTERM = 9, 15  # `_signal`, not `signal`: that one imports enum, and startup is paid per run
PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
PR_SET_NO_NEW_PRIVS = 38
MS_NOSUID, MS_NODEV, MS_BIND = 2, 4, 4096
_LIBC = None


def _libc():
    global _LIBC
    if _LIBC is None:
        _LIBC = ctypes.CDLL(None, use_errno=True)
    return _LIBC


def _check(ret, what):
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _prctl(option, arg):
    _check(_libc().prctl(option, arg, 0, 0, 0), f"prctl({option})")


def _mount_tmpfs(target, size_bytes, mode):
    opts = f"size={int(size_bytes)},mode={mode:o}".encode()
    flags = MS_NOSUID | MS_NODEV
    _check(_libc().mount(b"tmpfs", target.encode(), b"tmpfs", flags, opts), f"mount tmpfs on {target}")


def _mask_file(target):
    _check(_libc().mount(b"/dev/null", target.encode(), None, MS_BIND, None), f"bind /dev/null on {target}")


def _join_cgroups(procs_files):
    for path in procs_files:
        with open(path, "w") as f:
            f.write(str(os.getpid()))


def _set_rlimits(rlimits):
    for name, (soft, hard) in rlimits.items():
        resource.setrlimit(getattr(resource, name), (int(soft), int(hard)))


def _drop_privileges(uid, gid):
    if uid is None:
        return
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)


def _prepare_fs(cfg):
    """Private tmpfs over shared writable dirs and secret paths; program copied into the work dir."""
    with open(cfg["source_path"], "rb") as f:
        source = f.read()
    for target, size, mode in cfg.get("tmpfs", []):
        if os.path.isdir(target):
            _mount_tmpfs(target, size, mode)
    for target in cfg.get("mask_files", []):
        _mask_file(target)
    workdir = cfg["workdir"]
    os.makedirs(workdir, mode=0o700, exist_ok=True)
    main_py = os.path.join(workdir, "main.py")
    with open(main_py, "wb") as f:
        f.write(source)
    if cfg.get("uid") is not None:
        os.chown(workdir, cfg["uid"], cfg["gid"])
        os.chown(main_py, cfg["uid"], cfg["gid"])


def _report_error(status_fd, exc):
    try:
        os.write(status_fd, f"E {type(exc).__name__}: {exc}\n".encode())
    finally:
        os._exit(125)


def _exec_mode(cfg, status_fd):
    """bwrap backend: fork bwrap as the sandbox uid and stay as the subreaper of the whole tree."""
    _join_cgroups(cfg["cgroup_procs"])
    _prctl(PR_SET_CHILD_SUBREAPER, 1)  # orphans (bwrap's pid 1) are reparented to us, not to the host init
    cfg["reaper_pid"] = os.getpid()
    pid = os.fork()
    if pid == 0:
        try:
            _set_rlimits(cfg["rlimits"])
            _drop_privileges(cfg.get("uid"), cfg.get("gid"))  # bwrap sets no_new_privs, drops capabilities
            _prctl(PR_SET_PDEATHSIG, SIGKILL)
            if os.getppid() != cfg["reaper_pid"]:
                os._exit(125)
            os.set_inheritable(status_fd, True)  # bwrap writes its JSON status on it
            os.execve(cfg["argv"][0], cfg["argv"], cfg["env"])
        except BaseException as exc:  # noqa: BLE001
            _report_error(status_fd, exc)
    _reap(pid, status_fd, until_no_children=True)


def _child(cfg, status_fd):
    """Runs in the forked child: becomes the user program."""
    try:
        _set_rlimits(cfg["rlimits"])
        _drop_privileges(cfg.get("uid"), cfg.get("gid"))
        _prctl(PR_SET_NO_NEW_PRIVS, 1)
        _prctl(PR_SET_PDEATHSIG, SIGKILL)  # cleared by the uid change, so set it after
        if os.getppid() != cfg["reaper_pid"]:
            os._exit(125)
        os.chdir(cfg["workdir"])
        os.set_inheritable(status_fd, False)
        os.execve(cfg["argv"][0], cfg["argv"], cfg["env"])
    except BaseException as exc:  # noqa: BLE001 - everything must become an "E" line
        _report_error(status_fd, exc)


def _reap(pid, status_fd, until_no_children):
    """Reap children; report `pid`'s wait status. Returns once `pid` (or, if asked, every child) is gone.

    SIGTERM (the caller's wall-clock limit, when there is no slot uid to sweep) SIGKILLs `pid`, and we
    go on reaping so that nothing is orphaned.
    """
    def on_term(*_):
        try:
            os.kill(pid, SIGKILL)
        except ProcessLookupError:
            pass

    _signal.signal(SIGTERM, on_term)
    status = None
    while True:
        try:
            done, raw = os.waitpid(-1, 0)
        except ChildProcessError:
            break
        if done == pid:
            status = raw
            if not until_no_children:
                break
    if status is not None:
        os.write(status_fd, f"S {status}\n".encode())
    os._exit(0)


def _reap_mode(cfg, status_fd):
    """unshare backend: as pid 1, fork the program; when it ends we exit and the kernel kills the rest."""
    _join_cgroups(cfg["cgroup_procs"])
    _prepare_fs(cfg)
    cfg["reaper_pid"] = os.getpid()
    pid = os.fork()
    if pid == 0:
        _child(cfg, status_fd)
    _reap(pid, status_fd, until_no_children=False)


def main():
    cfg = marshal.loads(bytes.fromhex(sys.argv[1]))
    status_fd = int(cfg["status_fd"])
    try:
        if cfg["mode"] == "exec":
            _exec_mode(cfg, status_fd)
        else:
            _reap_mode(cfg, status_fd)
    except BaseException as exc:  # noqa: BLE001
        _report_error(status_fd, exc)


if __name__ == "__main__":
    main()
