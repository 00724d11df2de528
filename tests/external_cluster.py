"""A separately started Dask cluster for integration tests: `dask scheduler` and `dask worker` processes
that share nothing with the test process (the client) but the network.

LocalCluster workers are forks/spawns of the test process: they see its environment (AWS_*, PREFECT_*,
FINEFLOW_HOME), its working directory and the repository's editable install, so a pipeline can pass
there and still fail for a user whose workers run on other machines. Here the workers run fineflow from
a wheel installed into their own virtual environment, in their own working and home directories, with
an environment built from scratch.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import hashlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import warnings
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import psutil

if TYPE_CHECKING:
    from distributed import Client

REPO = Path(__file__).resolve().parent.parent
STAMP = ".fineflow-worker-env"  # inside the venv: hash of what was installed there
SYSTEM_PATH = ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin")
TERMINATE_GRACE = 10.0  # seconds between SIGTERM and SIGKILL in stop()


# ----------------------------------------------------------------------------- worker environment


def _uv() -> str:
    """`uv run` exports the binary it runs as UV; otherwise look it up on PATH."""
    uv = os.environ.get("UV") or shutil.which("uv")
    if not uv:
        raise RuntimeError("worker_environment needs uv (not found in $UV or on PATH)")
    return uv


def _run(cmd: list[str], cwd: Path, stdout: Path | None = None) -> None:
    """Run a build/install command quietly; raise with the tail of its output if it fails."""
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "UV_PROJECT_ENVIRONMENT")}
    with contextlib.ExitStack() as stack:
        out = stack.enter_context(stdout.open("w")) if stdout else subprocess.PIPE
        proc = subprocess.run(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        output = ((proc.stdout or "") + (proc.stderr or "")).strip().splitlines()
        tail = "\n".join(output[-40:])
        raise RuntimeError(f"{' '.join(cmd)} failed (exit {proc.returncode}) in {cwd}:\n{tail}")


def _content_hash(wheel: Path, requirements: Path, python_version: str) -> str:
    """Hash of the wheel's entries (not the zip bytes), the locked requirements and the Python version:
    what decides whether an existing worker venv can be reused."""
    digest = hashlib.sha256()
    digest.update(f"python {python_version}\n".encode())
    digest.update(requirements.read_bytes())
    with zipfile.ZipFile(wheel) as archive:
        for name in sorted(archive.namelist()):
            digest.update(name.encode() + b"\0")
            digest.update(hashlib.sha256(archive.read(name)).digest())
    return digest.hexdigest()


def worker_environment(cache_dir: Path, *, compile_bytecode: bool = True) -> Path:
    """Build fineflow as a wheel and install it (non-editable, with the locked runtime dependencies and
    no dev dependencies or extras) into `cache_dir/worker-venv`; return that venv's `bin/python`.

    The venv is reused when its stamp matches the freshly built wheel, the lock's requirements and the
    Python version. Dependencies are installed with --no-deps from `uv export`, which is the full locked
    closure: resolving again would ignore pyproject's [tool.uv.dependency-metadata] overrides (and
    e.g. pull fasttext-predict in over fasttext-numpy2). Bytecode is compiled at install time, as pip
    does for a user: the workers run with PYTHONDONTWRITEBYTECODE when the client does, and importing
    prefect and distributed from source costs seconds at every worker start.
    """
    cache_dir = Path(cache_dir).resolve()
    cache_dir.mkdir(parents=True, exist_ok=True)
    venv = cache_dir / "worker-venv"
    python = venv / "bin" / "python"
    version = ".".join(map(str, sys.version_info[:3]))
    uv = _uv()
    with (cache_dir / ".lock").open("w") as lock, tempfile.TemporaryDirectory(dir=cache_dir) as tmp:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two sessions sharing a cache wait for each other
        work = Path(tmp)
        _run([uv, "build", "--wheel", "--quiet", "--out-dir", str(work / "dist"), str(REPO)], cwd=REPO)
        wheels = sorted((work / "dist").glob("fineflow-*.whl"))
        if len(wheels) != 1:
            raise RuntimeError(f"uv build produced {[w.name for w in wheels]}, expected one fineflow wheel")
        wheel = wheels[0]
        requirements = work / "requirements.txt"
        _run(
            [uv, "export", "--locked", "--no-dev", "--no-emit-project", "--no-hashes", "--quiet",
             "--format", "requirements-txt"],
            cwd=REPO, stdout=requirements,
        )
        stamp = _content_hash(wheel, requirements, version)
        stamp_file = venv / STAMP
        if python.exists() and stamp_file.exists() and stamp_file.read_text().strip() == stamp:
            return python
        shutil.rmtree(venv, ignore_errors=True)
        # cwd=work: outside the project, so uv reads no pyproject settings for the venv and the install.
        _run([uv, "venv", "--quiet", "--python", version, str(venv)], cwd=work)
        install = [uv, "pip", "install", "--quiet", "--python", str(python), "--no-deps", "--link-mode=hardlink",
                   "-r", str(requirements), str(wheel)]
        if compile_bytecode:
            install.append("--compile-bytecode")
        _run(install, cwd=work)
        stamp_file.write_text(stamp + "\n")
    return python


# ----------------------------------------------------------------------------- processes


def _alive(proc: psutil.Process) -> bool:
    """A zombie counts as gone: in a container nobody may reap orphans re-parented to PID 1."""
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _tree(pid: int) -> list[psutil.Process]:
    """The process and all its descendants (the worker CLI is a nanny that spawns the worker)."""
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _kill_tree(popen: subprocess.Popen, tree: list[psutil.Process], timeout: float = 10.0) -> list[psutil.Process]:
    """SIGKILL the process group (start_new_session made pgid == pid) and every known descendant, and
    wait for them; return the ones still alive."""
    # The group id stays reserved while its leader (popen) or any member lives: only then is killpg safe.
    if popen.poll() is None or any(_alive(p) for p in tree):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(popen.pid, signal.SIGKILL)
    for proc in tree:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()
    with contextlib.suppress(subprocess.TimeoutExpired):
        popen.wait(timeout)
    deadline = time.monotonic() + timeout
    while any(_alive(p) for p in tree) and time.monotonic() < deadline:
        time.sleep(0.05)
    return [p for p in tree if _alive(p)]


def _kill_processes(processes: list[psutil.Process], timeout: float = 10.0) -> list[psutil.Process]:
    """SIGKILL processes whose parent is already gone (re-parented, maybe in another group); return survivors."""
    for proc in processes:
        if _alive(proc):
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.kill()
    deadline = time.monotonic() + timeout
    while any(_alive(p) for p in processes) and time.monotonic() < deadline:
        time.sleep(0.05)
    return [p for p in processes if _alive(p)]


def _tail(path: Path, lines: int) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"


class _Process:
    """One started CLI process: its Popen, its folder and its log."""

    def __init__(self, name: str, cmd: list[str], folder: Path, env: dict[str, str]) -> None:
        self.name = name
        self.folder = folder
        self.log = folder / f"{name}.log"
        with self.log.open("a") as log:
            log.write(f"--- {time.strftime('%H:%M:%S')} {' '.join(cmd)}\n")
            log.flush()
            self.popen = subprocess.Popen(
                cmd, cwd=folder, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def running(self) -> bool:
        return self.popen.poll() is None

    def tree(self) -> list[psutil.Process]:
        return _tree(self.popen.pid) if self.running() else []


_LIVE: set[ExternalCluster] = set()


@atexit.register
def _stop_leftovers() -> None:
    """A session that dies on an exception before its fixture's teardown still leaves nothing behind."""
    for cluster in list(_LIVE):
        with contextlib.suppress(Exception):
            cluster.stop()


# A mount namespace of its own; in a user namespace too, so that it works without root where the
# kernel allows unprivileged user namespaces (the process keeps the caller's uid outside).
NAMESPACE = ("unshare", "--user", "--map-root-user", "--mount", "--propagation", "private")


def hiding_works() -> str | None:
    """None if processes can be started with folders hidden from them; else why not."""
    try:
        probe = subprocess.run(
            [*NAMESPACE, "sh", "-c", "mount -t tmpfs -o size=1m fineflow-hidden /mnt"], capture_output=True, text=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"unshare is not available: {error}"
    return None if probe.returncode == 0 else f"cannot hide folders in a mount namespace: {probe.stderr.strip()}"


class ExternalCluster:
    """`dask scheduler` plus `n_workers` single-threaded `dask worker` processes, each its own process
    group in its own folder under `root`, run by `python` (a worker_environment venv)."""

    def __init__(
        self, python: Path, root: Path, n_workers: int = 2, extra_env: dict[str, str] | None = None,
        *, start_timeout: float = 60.0, hide: tuple[Path, ...] = (),
    ) -> None:
        # Not resolved: the venv's bin/python is a symlink to the base interpreter, and only the
        # symlink's location makes Python pick up the venv.
        self.python = Path(os.path.abspath(python))
        self.root = Path(root).resolve()
        self.n_workers = n_workers
        self.extra_env = dict(extra_env or {})
        self.start_timeout = start_timeout
        # Folders the scheduler and workers must not see (the client's checkout and files), as on other
        # machines: each process runs in a mount namespace of its own with an empty tmpfs over them.
        self.hide = tuple(Path(p).resolve() for p in hide)
        clash = [p for p in self.hide if self.root == p or p in self.root.parents or p in self.python.parents]
        if clash:
            raise ValueError(f"the cluster's own folder or Python is under a hidden folder: {clash}")
        self._scheduler: _Process | None = None
        self._workers: dict[int, _Process] = {}
        self._address: str | None = None
        self._seen: list[psutil.Process] = []  # processes seen in a tree, in case a parent died before them

    # -- lifecycle

    def __enter__(self) -> ExternalCluster:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        """Start the scheduler, then the workers; wait until the scheduler sees all of them."""
        if self._scheduler is not None:
            return
        _LIVE.add(self)
        try:
            self._start_scheduler()
            for i in range(self.n_workers):
                self.start_worker(i)
            self.wait_for_workers(self.n_workers, self.start_timeout)
        except BaseException:
            self.stop()
            raise

    def _environment(self, folder: Path) -> dict[str, str]:
        """From scratch, as on another machine: nothing of the client's AWS_*, PREFECT_*, FINEFLOW_HOME,
        PYTHONPATH or VIRTUAL_ENV."""
        tmp = folder / "tmp"
        tmp.mkdir(parents=True, exist_ok=True)
        env = {
            "PATH": os.pathsep.join([str(self.python.parent), *SYSTEM_PATH]),
            "LANG": "C.UTF-8",
            "LC_ALL": "C.UTF-8",
            "HOME": str(folder),
            "TMPDIR": str(tmp),
        }
        if os.environ.get("PYTHONDONTWRITEBYTECODE"):
            env["PYTHONDONTWRITEBYTECODE"] = os.environ["PYTHONDONTWRITEBYTECODE"]
        env.update(self.extra_env)
        return env

    def _start_scheduler(self) -> None:
        folder = self.root / "scheduler"
        folder.mkdir(parents=True, exist_ok=True)
        scheduler_file = folder / "scheduler.json"
        scheduler_file.unlink(missing_ok=True)
        # --show/--no-show is deprecated and does nothing: not passed.
        cmd = [str(self.python), "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1", "--port", "0",
               "--dashboard-address", "127.0.0.1:0", "--scheduler-file", str(scheduler_file)]
        self._scheduler = _Process("scheduler", self._hidden(cmd), folder, self._environment(folder))
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if not self._scheduler.running():
                raise RuntimeError(f"dask scheduler exited with {self._scheduler.popen.returncode}\n{self.logs()}")
            with contextlib.suppress(FileNotFoundError, json.JSONDecodeError, KeyError):
                self._address = json.loads(scheduler_file.read_text())["address"]
                return
            time.sleep(0.1)
        raise RuntimeError(f"no {scheduler_file} after {self.start_timeout:.0f} s\n{self.logs()}")

    def start_worker(self, i: int) -> None:
        """Start worker `i` (again, after kill_worker, or a new index) as its own process group."""
        if i in self._workers and self._workers[i].running():
            raise RuntimeError(f"worker-{i} is already running")
        folder = self.root / f"worker-{i}"
        folder.mkdir(parents=True, exist_ok=True)
        cmd = [str(self.python), "-m", "distributed.cli.dask_worker", self.address, "--nworkers", "1",
               "--nthreads", "1", "--name", f"worker-{i}", "--host", "127.0.0.1",
               "--local-directory", str(folder / "dask"), "--no-dashboard", "--dashboard-address", "127.0.0.1:0"]
        self._workers[i] = _Process(f"worker-{i}", self._hidden(cmd), folder, self._environment(folder))

    def _hidden(self, cmd: list[str]) -> list[str]:
        """``cmd`` in a private mount namespace where the hidden folders are empty (unshare, then exec:
        the process keeps the pid, so killing it works as without)."""
        if not self.hide:
            return cmd
        mounts = " && ".join(f"mount -t tmpfs -o size=1m fineflow-hidden {shlex.quote(str(p))}" for p in self.hide)
        return [*NAMESPACE, "sh", "-c", f'{mounts} && exec "$@"', "sh", *cmd]

    def kill_worker(self, i: int) -> None:
        """SIGKILL worker `i`'s whole tree (the CLI's nanny and the worker it spawned), so that the nanny
        cannot restart it: the scheduler loses that worker as if its machine had gone."""
        worker = self._workers[i]
        tree = worker.tree()
        self._seen += tree
        left = _kill_tree(worker.popen, tree)
        if left:
            raise RuntimeError(f"worker-{i}: processes {[p.pid for p in left]} survived SIGKILL")

    def stop(self) -> None:
        """SIGTERM the workers, then the scheduler, each batch given TERMINATE_GRACE seconds; then SIGKILL
        every group and every descendant seen; raise if any process survives. Workers first: a worker
        whose scheduler closes under it while it shuts down can hang in its heartbeat until the nanny's
        own 8 s kill."""
        workers = list(self._workers.values())
        batches = [workers, [self._scheduler] if self._scheduler else []]
        trees = {p.name: p.tree() for batch in batches for p in batch}
        self._seen += [proc for tree in trees.values() for proc in tree]
        for batch in batches:
            for p in batch:
                if p.running():
                    with contextlib.suppress(ProcessLookupError):
                        p.popen.terminate()
            deadline = time.monotonic() + TERMINATE_GRACE
            for p in batch:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    p.popen.wait(max(0.0, deadline - time.monotonic()))
        left: list[psutil.Process] = []
        for batch in batches:
            for p in batch:
                left += _kill_tree(p.popen, trees[p.name] + p.tree())
        left += _kill_processes(self._seen)
        _LIVE.discard(self)
        if left:
            raise RuntimeError(f"processes {[p.pid for p in left]} survived stop()\n{self.logs()}")

    # -- queries

    @property
    def address(self) -> str:
        if self._address is None:
            raise RuntimeError("the cluster is not started")
        return self._address

    @contextlib.contextmanager
    def client(self, timeout: float = 10.0) -> Iterator[Client]:
        """A distributed.Client from the test process. The project venv holds dev-only packages the
        workers lack (pandas), which distributed reports as a version mismatch: silenced here."""
        from distributed import Client

        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Mismatched versions found")
            client = Client(self.address, timeout=timeout, set_as_default=False)
        try:
            yield client
        finally:
            client.close()

    def wait_for_workers(self, n: int, timeout: float = 60.0) -> list[str]:
        """Wait until the scheduler has exactly `n` workers; return their addresses."""
        deadline = time.monotonic() + timeout
        seen: list[str] = []
        with self.client() as client:
            while True:
                seen = sorted(client.nthreads())
                if len(seen) == n:
                    return seen
                if time.monotonic() > deadline:
                    raise TimeoutError(f"scheduler has {len(seen)} workers, not {n}, after {timeout:.0f} s\n"
                                       f"{self.logs()}")
                time.sleep(0.2)

    def worker_pids(self) -> dict[int, list[int]]:
        """Running workers: index -> [the `dask worker` CLI (nanny) PID, then its descendants' PIDs]."""
        return {i: [p.pid for p in w.tree()] for i, w in sorted(self._workers.items()) if w.running()}

    def pids(self) -> list[int]:
        """Every live process this cluster started, descendants included (empty after stop())."""
        processes = [*([self._scheduler] if self._scheduler else []), *self._workers.values()]
        live = {proc for p in processes for proc in p.tree()} | set(self._seen)
        return sorted(proc.pid for proc in live if _alive(proc))

    def logs(self, lines: int = 30) -> str:
        """The tail of each process's log, for assertion messages."""
        processes = [*([self._scheduler] if self._scheduler else []), *self._workers.values()]
        return "\n".join(f"===== {p.name} ({p.log})\n{_tail(p.log, lines)}" for p in processes)
