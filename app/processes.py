"""Child processes for the demo, tests and local runs: started, awaited, stopped as a supervisor would.

`ManagedProcess` is one child (argv, environment, a log file holding its stdout and
stderr): wait until an HTTP URL of it answers, stop it with SIGTERM and kill it only
if it does not exit in time, read its log. `ProcessGroup` is several of them sharing
a log directory and a base environment, stopped together (a compose topology, the
worker fixtures). `LocalServer` is `retain serve` on the embedded default built on it.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import httpx

REPO_ROOT = Path(__file__).resolve().parent.parent
UVICORN_URL = re.compile(r"(?:Uvicorn running on|Listening at:) (http://[^\s,]+)")
"""uvicorn's startup line, or gunicorn's (`retain serve --workers N`); with --port 0 it is the only place
the chosen port is told."""


class ServiceStartError(RuntimeError):
    """A child process exited or never answered; the message holds its log."""


class ManagedProcess:
    """One child process logging to a file; `stop()` is SIGTERM, then kill after a grace period.

    Reads like the Popen it wraps where tests need that (`poll`, `wait`,
    `send_signal`, `returncode`, `pid`). `killed` tells whether stop() had to kill it.
    """

    def __init__(
        self,
        argv: Sequence[str],
        log_path: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path = REPO_ROOT,
        name: str | None = None,
    ):
        self.argv = [str(part) for part in argv]
        self.log_path = Path(log_path)
        self.env = dict(os.environ if env is None else env)
        self.cwd = Path(cwd)
        self.name = name or self.log_path.stem
        self.popen: subprocess.Popen | None = None
        self.killed = False
        self._terminated = False
        self._log = None

    def start(self) -> ManagedProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("w")
        self.killed = self._terminated = False
        self.popen = subprocess.Popen(self.argv, env=self.env, cwd=self.cwd, stdout=self._log, stderr=subprocess.STDOUT)
        return self

    def __enter__(self) -> ManagedProcess:
        return self.start() if self.popen is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def pid(self) -> int | None:
        return None if self.popen is None else self.popen.pid

    @property
    def returncode(self) -> int | None:
        return None if self.popen is None else self.popen.poll()

    @property
    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def poll(self) -> int | None:
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        """The exit status; raises subprocess.TimeoutExpired if it is still running after timeout."""
        code = self._popen().wait(timeout=timeout)
        self._close_log()
        return code

    def send_signal(self, sig: int) -> None:
        self._popen().send_signal(sig)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def search_log(self, pattern: str | re.Pattern) -> str | None:
        """The first match of pattern in the log (its first group, if it has one), or None."""
        found = re.search(pattern, self.log())
        if found is None:
            return None
        return found.group(1) if found.re.groups else found.group(0)

    def wait_until_answers(
        self,
        url: str | Callable[[], str | None],
        path: str = "",
        timeout: float = 90.0,
        status: int = 200,
        interval: float = 0.25,
    ) -> str:
        """Poll GET url+path until it answers `status`; returns url.

        `url` may be a callable that returns None until the URL is known (read from
        the log, say). Raises ServiceStartError, with the log, if the process exits
        first or nothing answered within timeout.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.running:
                raise ServiceStartError(f"{self.name} exited with {self.returncode}:\n{self.log()}")
            base = url() if callable(url) else url
            if base is not None:
                try:
                    if httpx.get(f"{base}{path}", timeout=2.0).status_code == status:
                        return base
                except httpx.TransportError:
                    pass
            time.sleep(interval)
        raise ServiceStartError(f"{self.name} was not ready after {timeout:.0f}s:\n{self.log()}")

    def terminate(self) -> None:
        """SIGTERM, once: a second one would make uvicorn (and others) skip their graceful shutdown."""
        if self.running and not self._terminated:
            self.popen.send_signal(signal.SIGTERM)
            self._terminated = True

    def stop(self, timeout: float = 60.0) -> int | None:
        """SIGTERM, then kill if it has not exited after timeout; returns the exit status."""
        if self.popen is None:
            return None
        self.terminate()
        return self._reap(timeout)

    def kill(self) -> int | None:
        """SIGKILL at once (a crash, or teardown of something not worth waiting for)."""
        if self.popen is None:
            return None
        if self.popen.poll() is None:
            self.popen.kill()
            self.killed = True
        return self._reap(None)

    def _reap(self, timeout: float | None) -> int:
        try:
            self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.killed = True
            self.popen.wait()
        finally:
            self._close_log()
        return self.popen.returncode

    def _popen(self) -> subprocess.Popen:
        if self.popen is None:
            raise RuntimeError(f"{self.name} was never started")
        return self.popen

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None


class ProcessGroup:
    """Named child processes logging to `<directory>/<name>.log`, on one base environment."""

    def __init__(self, directory: Path, env: Mapping[str, str] | None = None, cwd: Path = REPO_ROOT):
        self.directory = Path(directory)
        self.env = dict(os.environ if env is None else env)
        self.cwd = Path(cwd)
        self.processes: dict[str, ManagedProcess] = {}

    def start(self, name: str, *argv: str, cwd: Path | None = None, **extra_env: str) -> ManagedProcess:
        """Start `argv` as `name`, with extra_env over the group's environment, in ``cwd`` (default:
        the group's; a process of its own directory stands in for one on another machine)."""
        if name in self.processes and self.processes[name].running:
            raise ValueError(f"{name} is already running")
        process = ManagedProcess(argv, self.directory / f"{name}.log", {**self.env, **extra_env}, cwd or self.cwd, name)
        self.processes[name] = process.start()
        return process

    def __getitem__(self, name: str) -> ManagedProcess:
        return self.processes[name]

    def log(self, name: str) -> str:
        return self.processes[name].log()

    def logs(self, tail: int = 3000) -> str:
        """Every process's log, its last `tail` characters each: for an assertion message."""
        return "\n".join(f"--- {name}\n{process.log()[-tail:]}" for name, process in self.processes.items())

    def stop_all(self, timeout: float = 60.0) -> dict[str, int | None]:
        """SIGTERM to every process at once, then wait for each (killing any that overruns); exit statuses by name."""
        for process in self.processes.values():
            process.terminate()
        return {name: process.stop(timeout) for name, process in self.processes.items()}

    def kill_all(self) -> dict[str, int | None]:
        return {name: process.kill() for name, process in self.processes.items()}

    def __enter__(self) -> ProcessGroup:
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill_all()


class LocalServer:
    """The service on its embedded default, as a child process with its own data dir.

    `retain serve` in a subprocess on a free port: SQLite and artifacts under
    `data_dir`, migrated to head before it starts; its admin key file there too
    (`api_key`). Used by the demo and by the
    tests that drive the CLI over real HTTP.
    """

    def __init__(
        self,
        data_dir: Path,
        embedded_worker: bool = True,
        extra_env: dict[str, str] | None = None,
        startup_timeout: float = 90.0,
        command_prefix: Sequence[str] = (),
    ):
        self.data_dir = Path(data_dir)
        self.log_path = self.data_dir / "server.log"
        self.startup_timeout = startup_timeout
        self.env = {
            **os.environ,
            "DATABASE_URL": f"sqlite:///{self.data_dir / 'retain.db'}",
            "RETAIN_ARTIFACT_URI": str(self.data_dir / "artifacts"),
            "RETAIN_EMBEDDED_WORKER": "true" if embedded_worker else "false",
            "RETAIN_ADMIN_KEY_FILE": str(self.data_dir / "admin.key"),
            **(extra_env or {}),
        }
        # Port 0: the kernel picks a free port as uvicorn binds, so parallel runs never collide;
        # the port is read back from uvicorn's "running on" line.
        # ``command_prefix`` runs the server under another program (a profiler: valgrind, perf)
        self.process = ManagedProcess(
            [*command_prefix, sys.executable, "-m", "app.cli", "serve", "--port", "0", "--no-access-log"],
            self.log_path,
            self.env,
            name="the service",
        )
        self.url: str | None = None
        self.api_key: str | None = None
        """The admin key the service wrote to ``data_dir/admin.key`` on its first start (None with
        RETAIN_AUTH=off or a RETAIN_ADMIN_KEY given): what a user on this machine would use."""

    def __enter__(self) -> LocalServer:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.process.start()
        try:
            self.url = self.process.wait_until_answers(
                lambda: self.process.search_log(UVICORN_URL), path="/readyz", timeout=self.startup_timeout
            )
            key_file = Path(self.env["RETAIN_ADMIN_KEY_FILE"])
            self.api_key = key_file.read_text().strip() if key_file.exists() else None
        except BaseException:
            self.stop()
            raise
        return self

    def log(self) -> str:
        return self.process.log()

    def stop(self, timeout: float = 60.0) -> int | None:
        """SIGTERM, as a supervisor would; returns the exit status."""
        return self.process.stop(timeout)

    def __exit__(self, *exc: object) -> None:
        self.stop()
