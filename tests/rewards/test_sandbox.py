"""Containment tests for sapo_vl.rewards.sandbox: every attack must be contained, leave the host untouched and
end within its time limit. Each runs on every backend; a backend that cannot run here is skipped with the reason."""

import multiprocessing
import os
import resource
import secrets
import signal
import socket
import subprocess
import sys
import time

import pytest

from sapo_vl.rewards import _sandbox_support as support
from sapo_vl.rewards import _sandbox_zygote as zygote
from sapo_vl.rewards import sandbox
from sapo_vl.rewards.sandbox import run_python


@pytest.fixture(params=sandbox.BACKENDS)
def backend(request):
    python, why = sandbox.backend_status(request.param)
    if python is None:
        pytest.skip(f"sandbox backend {request.param!r} cannot run here: {why}")
    return request.param


def run(source, backend, **kw):
    kw.setdefault("timeout_s", 5.0)
    kw.setdefault("memory_mb", 256)
    return run_python(source, backend=backend, **kw)


def processes_with(token: str) -> list[int]:
    """Host pids whose command line contains `token` (the sandbox tags the processes it wants found)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    if token.encode() in f.read():
                        found.append(int(entry))
            except OSError:
                continue
    return found


def world_writable_dir(tmp_path):
    """A host directory the sandbox uid could write to if it could see it: only isolation protects it."""
    d = tmp_path / "host"
    d.mkdir()
    os.chmod(tmp_path, 0o777)
    os.chmod(d, 0o777)
    return d


# ------------------------------------------------------------------------------------------ basics
def test_exit_zero_is_passed_with_stdout(backend):
    res = run("print('hello'); import sys; print('oops', file=sys.stderr)", backend)
    assert (res.status, res.returncode, res.stdout, res.stderr) == ("passed", 0, "hello\n", "oops\n")
    assert res.backend == backend


def test_failed_assert_is_failed(backend):
    res = run("assert 1 == 2, 'nope'", backend)
    assert (res.status, res.returncode) == ("failed", 1)
    assert "AssertionError: nope" in res.stderr


def test_stdin_is_fed_to_the_program(backend):
    res = run("import sys; print(sum(int(x) for x in sys.stdin.read().split()))", backend, stdin="1 2\n39\n")
    assert (res.status, res.stdout) == ("passed", "42\n")


def test_program_runs_without_root(backend):
    res = run("import os; print(os.getuid(), os.geteuid()); open('/etc/shadow').read()", backend)
    uid = res.stdout.split()
    assert uid and uid[0] != "0" and uid[1] != "0"
    assert res.status == "failed" and ("PermissionError" in res.stderr or "FileNotFoundError" in res.stderr)


def test_program_may_write_only_its_private_tmp_and_dev_shm(backend):
    source = (
        "import os, tempfile\n"
        "for d in ['/tmp', '/dev/shm', '/', '/dev', '/usr']:\n"
        "    try:\n"
        "        with tempfile.NamedTemporaryFile(dir=d) as f:\n"
        "            f.write(b'x')\n"
        "        print(d, 'writable')\n"
        "    except OSError:\n"
        "        print(d, 'read-only')\n"
    )
    res = run(source, backend)
    assert res.stdout.split("\n")[:-1] == ["/tmp writable", "/dev/shm writable", "/ read-only",
                                           "/dev read-only", "/usr read-only"]


def test_private_tmpfs_is_size_capped(backend):
    res = run("open('/tmp/big', 'wb').write(b'x' * (64 << 20))", backend, tmpfs_mb=8, max_output_bytes=128 << 20)
    assert res.status == "failed" and "No space left on device" in res.stderr


def test_multiprocessing_pool_works_inside(backend):
    source = "import multiprocessing as mp\nwith mp.Pool(2) as pool:\n    print(pool.map(abs, [-1, -2]))\n"
    assert run(source, backend).stdout == "[1, 2]\n"


# ------------------------------------------------------------------------------------------ attacks
def test_infinite_loop_times_out(backend):
    start = time.monotonic()
    res = run("while True:\n    pass", backend, timeout_s=1.0)
    assert res.status == "timeout"
    assert time.monotonic() - start < 6.0


def test_fork_bomb_is_contained(backend):
    token = "forkbomb" + secrets.token_hex(6)
    bomb = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
    source = f"import os, sys\nos.execv(sys.executable, [sys.executable, '-c', {bomb!r}, {token!r}])\n"
    start = time.monotonic()
    res = run(source, backend, timeout_s=1.5, max_processes=16)
    assert res.status == "timeout"
    assert time.monotonic() - start < 8.0
    assert processes_with(token) == []
    if os.geteuid() == 0:
        assert slot_uid_processes() == []
    assert subprocess.run(["true"]).returncode == 0  # the host can still start processes


def test_memory_bomb_is_stopped(backend):
    start = time.monotonic()
    res = run("chunks = []\nwhile True:\n    chunks.append(b'x' * (16 << 20))", backend, memory_mb=200)
    assert (res.status, res.reason) == ("error", "memory limit")
    assert time.monotonic() - start < 8.0


def test_memory_of_all_processes_is_capped_by_the_cgroup(backend):
    if sandbox._cgroup() is None:
        pytest.skip("no writable cgroup v1 memory+pids hierarchy here: only per-process RLIMIT_AS applies")
    source = (
        "import os, time\n"
        "pids = []\n"
        "for _ in range(4):\n"
        "    pid = os.fork()\n"
        "    if pid == 0:\n"
        "        data = b'x' * (100 << 20)\n"
        "        time.sleep(1)\n"
        "        os._exit(0)\n"
        "    pids.append(pid)\n"
        "codes = [os.waitpid(p, 0)[1] for p in pids]\n"
        "raise SystemExit(0 if all(c == 0 for c in codes) else 1)\n"
    )
    res = run(source, backend, memory_mb=160, timeout_s=10.0)  # 4 x 100 MB, each under RLIMIT_AS
    assert (res.status, res.reason) == ("error", "memory limit")


def test_output_flood_is_truncated_and_host_memory_stays_flat(backend):
    cap = 64 << 10
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    res = run("import sys\nchunk = 'x' * 65536\nfor _ in range(4096):\n    sys.stdout.write(chunk)", backend,
              max_output_bytes=cap)  # 256 MiB if nothing stopped it
    growth_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before
    assert (res.status, res.reason) == ("error", "output limit")
    assert res.stdout_truncated and 0 < len(res.stdout) <= cap
    assert growth_kib < 32 << 10


def test_files_outside_the_sandbox_can_be_neither_written_nor_deleted(backend, tmp_path):
    host = world_writable_dir(tmp_path)
    sentinel = host / "sentinel.txt"
    sentinel.write_text("original")
    os.chmod(sentinel, 0o666)
    repo_probe = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "sandbox_escape_probe")
    targets = [str(sentinel), str(host / "new.txt"), repo_probe, "/root/sandbox_escape_probe",
               "/usr/sandbox_escape_probe", "/etc/passwd"]
    source = (
        "import os\n"
        f"for path in {targets!r}:\n"
        "    for action in (lambda: open(path, 'a').write('pwned'), lambda: os.remove(path)):\n"
        "        try:\n"
        "            action()\n"
        "            print('DID', path)\n"
        "        except OSError:\n"
        "            pass\n"
    )
    with open("/etc/passwd", "rb") as f:
        passwd = f.read()
    try:
        res = run(source, backend)
        assert res.status == "passed" and "DID" not in res.stdout
        assert sentinel.read_text() == "original"
        assert sorted(p.name for p in host.iterdir()) == ["sentinel.txt"]
        assert not os.path.exists(repo_probe)
        with open("/etc/passwd", "rb") as f:
            assert f.read() == passwd
    finally:
        if os.path.exists(repo_probe):
            os.remove(repo_probe)


def test_network_is_unreachable(backend):
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        server.setblocking(False)
        port = server.getsockname()[1]
        source = (
            "import socket\n"
            "try:\n"
            f"    socket.create_connection(('127.0.0.1', {port}), timeout=2)\n"
            "    print('CONNECTED')\n"
            "except OSError as exc:\n"
            "    print('blocked', type(exc).__name__)\n"
        )
        res = run(source, backend)
        assert res.status == "passed" and res.stdout.startswith("blocked")
        with pytest.raises(BlockingIOError):
            server.accept()


def test_cannot_signal_the_parent_or_host_processes(backend):
    victim = subprocess.Popen(["sleep", "30"])
    try:
        source = (
            "import os, signal, subprocess\n"
            f"for pid in (os.getppid(), {os.getpid()}, {victim.pid}, 1, -1):\n"
            "    try:\n"
            "        os.kill(pid, signal.SIGKILL)\n"
            "    except OSError:\n"
            "        pass\n"
            "subprocess.run(['kill', '-9', '-1'])\n"
            "print('done')\n"
        )
        res = run(source, backend)
        assert victim.poll() is None  # the host process survived, and so did we
        assert res.status in ("passed", "failed", "error")  # kill -1 may take the program itself down
    finally:
        victim.kill()
        victim.wait()


def test_parent_environment_is_invisible(backend, monkeypatch):
    secret = "s3cr3t-" + secrets.token_hex(8)
    monkeypatch.setenv("SAPO_VL_TEST_SECRET", secret)
    source = (
        "import os\n"
        "print(dict(os.environ))\n"
        f"for pid in [os.getppid(), {os.getpid()}] + [p for p in os.listdir('/proc') if p.isdigit()]:\n"
        "    try:\n"
        "        print(open(f'/proc/{pid}/environ', 'rb').read())\n"
        "    except OSError:\n"
        "        pass\n"
    )
    res = run(source, backend)
    assert res.status == "passed"
    assert secret not in res.stdout and "SAPO_VL_TEST_SECRET" not in res.stdout
    assert set(eval(res.stdout.splitlines()[0])) <= set(sandbox.SANDBOX_ENV) | {"PWD", "LC_CTYPE"}


def test_detached_grandchild_does_not_survive(backend, tmp_path):
    host = world_writable_dir(tmp_path)
    token = "grandchild" + secrets.token_hex(6)
    late = f"import time; time.sleep(1.0); open({str(host / 'late.txt')!r}, 'w').write('x')"
    source = (
        "import os, sys, time\n"
        "if os.fork() == 0:\n"
        "    os.setsid()\n"
        "    if os.fork() == 0:\n"
        f"        os.execv(sys.executable, [sys.executable, '-c', {late!r}, {token!r}])\n"
        "    os._exit(0)\n"
        "time.sleep(0.3)\n"
        "print('parent exits')\n"
    )
    start = time.monotonic()
    res = run(source, backend)
    assert res.status == "passed" and time.monotonic() - start < 4.0
    assert processes_with(token) == []
    time.sleep(1.3)
    assert processes_with(token) == [] and not (host / "late.txt").exists()


def slot_uid_processes() -> list[tuple[int, int]]:
    """(pid, uid) of host processes, zombies included, owned by a sandbox slot uid not in use here."""
    lo, hi = support.UID_BASE, support.UID_BASE + support.MAX_SLOTS
    found = []
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/status") as f:
                uid = int(next(line for line in f if line.startswith("Uid:")).split()[1])
        except (OSError, StopIteration, ValueError):
            continue
        if lo <= uid < hi and (uid - lo) not in support._held_slots:
            found.append((int(entry), uid))
    return found


@pytest.mark.parametrize("limits", ["cgroup", "rlimits only"])
@pytest.mark.parametrize("ending", ["exit", "timeout"])
def test_no_process_of_a_slot_uid_outlives_its_run(backend, ending, limits, monkeypatch):
    if os.geteuid() != 0:
        pytest.skip("slot uids are used only when the caller is root")
    if limits == "cgroup" and sandbox._cgroup() is None:
        pytest.skip("no writable cgroup v1 memory+pids hierarchy here")
    if limits == "rlimits only":
        monkeypatch.setattr(sandbox, "_cgroup", lambda: None)
    tail = "import time; time.sleep(30)" if ending == "timeout" else "print('ok')"
    source = f"import subprocess\nsubprocess.Popen(['sleep', '60'], start_new_session=True)\n{tail}\n"
    res = run(source, backend, timeout_s=1.0)
    assert res.status == ("timeout" if ending == "timeout" else "passed")
    assert slot_uid_processes() == []


@pytest.mark.parametrize("tools", ["setpriv+kill", "python fallback"])
def test_sweep_kills_every_process_of_the_slot_uid(tools, monkeypatch):
    if os.geteuid() != 0:
        pytest.skip("slot uids are used only when the caller is root")
    if tools == "python fallback":
        monkeypatch.setattr(support.shutil, "which", lambda name, *a, **k: None)
    slot = support.acquire_slot()
    try:
        victims = [subprocess.Popen(["sleep", "30"], user=slot.uid, group=slot.uid, extra_groups=[],
                                    start_new_session=True) for _ in range(3)]
        support.sweep_uid(slot.uid)
        assert [v.wait(timeout=5) for v in victims] == [-signal.SIGKILL] * 3
    finally:
        support.release_slot(slot)


# ------------------------------------------------------------------------------------------ zygote
def test_dead_zygote_is_replaced(backend):
    assert run("print(1)", backend).status == "passed"
    zygote._zygote.proc.kill()
    zygote._zygote.proc.wait()
    assert run("print(2)", backend).stdout == "2\n"


def test_zygote_keeps_no_fds_of_finished_runs(backend):
    run("pass", backend)
    fd_dir = f"/proc/{zygote._zygote.proc.pid}/fd"
    before = len(os.listdir(fd_dir))
    for _ in range(5):
        run("print('x')", backend, stdin="data")
    assert len(os.listdir(fd_dir)) == before


def test_forked_caller_gets_its_own_zygote(backend):
    run("pass", backend)
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(1) as pool:
        status, child_zygote = pool.apply(_run_in_child, (backend,))
    assert status == "passed" and child_zygote != zygote._zygote.proc.pid


def _run_in_child(backend):
    return run("print(1)", backend).status, zygote._zygote.proc.pid


def test_zygote_exits_with_its_caller(backend):
    code = ("from sapo_vl.rewards import sandbox, _sandbox_zygote as z\n"
            f"sandbox.run_python('pass', timeout_s=5, memory_mb=256, backend={backend!r})\n"
            "print(z._zygote.proc.pid)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    pid = int(out.stdout.strip())
    assert not os.path.exists(f"/proc/{pid}")


def test_runs_in_flight_die_with_their_caller(backend):
    token = "orphan" + secrets.token_hex(6)
    sleeper = f"import time; time.sleep(60)  # {token}"
    source = f"import os, sys\nos.execv(sys.executable, [sys.executable, '-c', {sleeper!r}])\n"
    code = (
        "import os, threading, time\n"
        "from sapo_vl.rewards import sandbox\n"
        f"kw = dict(timeout_s=60, memory_mb=256, backend={backend!r})\n"
        f"threading.Thread(target=sandbox.run_python, args=({source!r},), kwargs=kw, daemon=True).start()\n"
        "time.sleep(1.0)\n"
        "os._exit(0)\n"  # dies abruptly: no atexit, no cleanup
    )
    subprocess.run([sys.executable, "-c", code], timeout=60, check=True)
    deadline = time.monotonic() + 5
    while processes_with(token) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert processes_with(token) == []


# ------------------------------------------------------------------------------------------ classification
@pytest.mark.parametrize(
    "returncode, launch_error, timed_out, out_over, oom, stderr, expected",
    [
        (0, "", False, False, False, "", ("passed", "exit 0")),
        (1, "", False, False, False, "AssertionError", ("failed", "exit 1")),
        (-signal.SIGSEGV, "", False, False, False, "", ("failed", "signal SIGSEGV")),
        (None, "", True, False, False, "", ("timeout", "wall-clock limit")),
        (-signal.SIGXCPU, "", False, False, False, "", ("timeout", "cpu-time limit")),
        (-signal.SIGXFSZ, "", False, False, False, "", ("error", "output limit")),
        (0, "", False, True, False, "", ("error", "output limit")),
        (1, "", False, False, False, "Traceback ...\nMemoryError\n", ("error", "memory limit")),
        (-signal.SIGKILL, "", False, False, True, "", ("error", "memory limit")),
        (-signal.SIGKILL, "", False, False, False, "", ("error", "killed (SIGKILL)")),
        (None, "bwrap could not start the program", False, False, False, "", ("error", "sandbox: bwrap could "
                                                                                        "not start the program")),
        (None, "", False, False, False, "", ("error", "sandbox: the program's exit status was lost")),
    ],
)
def test_classify_maps_each_ending_to_one_status(returncode, launch_error, timed_out, out_over, oom, stderr,
                                                 expected):
    assert sandbox._classify(returncode, launch_error, timed_out, out_over, False, oom, stderr) == expected


def test_bwrap_status_lines_decode_signals_and_missing_start():
    started = '{"child-pid": 12}\n{"exit-code": 137}\n'
    assert sandbox._program_outcome("bwrap", started) == (-9, "")
    assert sandbox._program_outcome("bwrap", '{"child-pid": 12}\n{"exit-code": 3}\n') == (3, "")
    assert sandbox._program_outcome("bwrap", "") == (None, "bwrap could not start the program")
    assert sandbox._program_outcome("unshare", "E OSError: mount failed\n") == (None, "OSError: mount failed")


def test_missing_bwrap_is_reported_with_the_fix(monkeypatch):
    monkeypatch.setattr(sandbox.shutil, "which", lambda name, *a, **k: None)
    python, why = sandbox._probe("bwrap")
    assert python is None and "apt-get install -y bubblewrap" in why


def test_bad_arguments_are_rejected_before_running():
    with pytest.raises(ValueError, match="unknown sandbox backend"):
        run_python("pass", timeout_s=1, memory_mb=64, backend="docker")
    with pytest.raises(ValueError, match="must be > 0"):
        run_python("pass", timeout_s=0, memory_mb=64)
    with pytest.raises(TypeError, match="source must be str"):
        run_python(b"pass", timeout_s=1, memory_mb=64)


def test_interpreter_used_is_reported(backend):
    res = run("import sys; print(sys.version_info[0])", backend)
    assert res.stdout == "3\n" and os.path.isfile(res.interpreter)
