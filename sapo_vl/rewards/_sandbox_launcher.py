"""Privileged half of the code sandbox: runs as a stand-alone script, never imported by user code.

Keep it free of sapo_vl imports: it must start fast and trust nothing but what its caller sends.

- ``_sandbox_launcher.py zygote FD``: the fork server of `_sandbox_zygote` (one per caller process, with
  the caller's privileges, usually root). Per request (a `marshal`-ed config plus the run's fds over the
  socket FD) it forks a launcher, which takes its own session and gets the run's fds as 0-4
  (STATUS_FD = 3), then:
- ``"exec"`` mode (bubblewrap backend): join the run's cgroups, become a child subreaper, fork; the child
  sets rlimits, drops to the sandbox uid and execs bwrap (which sets no_new_privs and drops all
  capabilities itself; it reports the program's pid and exit code on the status fd via
  ``--json-status-fd``). The launcher stays root and reaps the whole tree, bwrap's orphaned pid 1
  included, so nothing is left as a zombie for the host init when it exits.
- ``"unshare"`` mode (fallback backend): exec ``unshare --pid --fork --mount-proc ... python -I -S
  _sandbox_launcher.py CONFIG`` (CONFIG hex-encoded `marshal`: no json import, ~10 ms of startup saved),
  which runs ``"reap"`` mode as pid 1 of the fresh pid namespace: join the cgroups, mount a private tmpfs
  over /tmp and over every hidden path (hidden files get /dev/null), copy the program into a private
  work dir, then fork. The child drops to the sandbox uid, sets rlimits and execs the interpreter. pid 1
  stays root, reaps, and writes ``S <raw wait status>`` on the status fd when the program ends. When it
  exits, the kernel kills everything left in the pid namespace.

Any failure before the user program starts is written as ``E <message>`` on ``status_fd`` (exit 125).
"""

import _signal
import ctypes
import marshal
import os
import resource
import sys

SIGKILL, SIGTERM, SIGCHLD = 9, 15, 17  # `_signal`, not `signal`: that one imports enum, and startup is paid per run
STATUS_FD = 3  # a launcher's fds: 0-2 the program's stdio, 3 the status pipe, 4 bwrap's source file
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


def _child(cfg, status_fd, bwrap):
    """Runs in the forked child: becomes bwrap (which sets no_new_privs, drops all capabilities and writes its JSON
    status on the status fd) or, in the unshare backend, the user program."""
    try:
        _set_rlimits(cfg["rlimits"])
        _drop_privileges(cfg.get("uid"), cfg.get("gid"))
        if not bwrap:
            _prctl(PR_SET_NO_NEW_PRIVS, 1)
            os.chdir(cfg["workdir"])
        _prctl(PR_SET_PDEATHSIG, SIGKILL)  # cleared by the uid change, so set it after
        if os.getppid() != cfg["reaper_pid"]:
            os._exit(125)
        os.set_inheritable(status_fd, bwrap)
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


def _launch(cfg, status_fd, bwrap):
    """bwrap backend ("exec"): fork bwrap as the sandbox uid and stay as the subreaper of the whole tree. unshare
    backend ("reap"): as pid 1, prepare the file system and fork the program; when it ends we exit and the kernel
    kills the rest."""
    _join_cgroups(cfg["cgroup_procs"])
    if bwrap:
        _prctl(PR_SET_CHILD_SUBREAPER, 1)  # orphans (bwrap's pid 1) are reparented to us, not to the host init
    else:
        _prepare_fs(cfg)
    cfg["reaper_pid"] = os.getpid()
    pid = os.fork()
    if pid == 0:
        _child(cfg, status_fd, bwrap)
    _reap(pid, status_fd, until_no_children=bwrap)


def _reap_zombies():
    try:
        while os.waitpid(-1, os.WNOHANG)[0] > 0:
            pass
    except ChildProcessError:
        pass


def _launcher_child(cfg, fds, zygote_pid):
    """In a fresh fork of the zygote: own session, the run's fds as 0.., then the launcher proper.

    If the zygote dies (its caller died, closing the socket), this launcher gets SIGKILL, and so does the
    whole run (bwrap's --die-with-parent, unshare's --kill-child, pid namespaces).
    """
    try:
        _signal.signal(SIGCHLD, _signal.SIG_DFL)  # the zygote's reaping handler would steal our statuses
        _prctl(PR_SET_PDEATHSIG, SIGKILL)
        if os.getppid() != zygote_pid:
            os._exit(125)
        os.setsid()
        base = max(fds + [2]) + 1  # park above every received fd, then move down to 0..n-1
        for i, fd in enumerate(fds):
            os.dup2(fd, base + i)
        os.closerange(0, base)
        for i in range(len(fds)):
            os.dup2(base + i, i)
        os.closerange(len(fds), base + len(fds))
    except BaseException:  # noqa: BLE001 - no status fd yet to report on
        os._exit(125)
    try:
        if cfg["mode"] == "exec":
            _launch(cfg, STATUS_FD, bwrap=True)
        os.execve(cfg["argv"][0], cfg["argv"], cfg["env"])  # unshare ... launcher.py CONFIG (mode "reap")
    except BaseException as exc:  # noqa: BLE001
        _report_error(STATUS_FD, exc)


def _zygote(sock_fd):
    """Fork server: one launcher per request; replies with its pid. Exits when the socket closes."""
    import socket  # here: the launcher's startup is paid per run, and only the zygote needs it

    sock = socket.socket(fileno=sock_fd)
    zygote_pid = os.getpid()
    _signal.signal(SIGCHLD, lambda *_: _reap_zombies())
    while True:
        msg, fds, _, _ = socket.recv_fds(sock, 1 << 20, 16)
        if not msg:
            os._exit(0)
        try:
            cfg = marshal.loads(msg)
            pid = os.fork()
        except BaseException as exc:  # noqa: BLE001
            for fd in fds:
                os.close(fd)
            sock.send(f"E{type(exc).__name__}: {exc}".encode())
            continue
        if pid == 0:
            _launcher_child(cfg, fds, zygote_pid)
        for fd in fds:
            os.close(fd)
        sock.send(str(pid).encode())


def main():
    if sys.argv[1] == "zygote":
        _zygote(int(sys.argv[2]))
    cfg = marshal.loads(bytes.fromhex(sys.argv[1]))
    status_fd = int(cfg["status_fd"])
    try:
        _launch(cfg, status_fd, bwrap=False)
    except BaseException as exc:  # noqa: BLE001
        _report_error(status_fd, exc)


if __name__ == "__main__":
    main()
