"""A self-hosted OpenAI-compatible server next to the job (``--llm_server_cmd``), the way Beam's vLLM handler runs
one: a free port, a subprocess, and readiness on ``GET /v1/models`` within a deadline that fails fast.

The Beam layer shares one :class:`LocalServer` per worker machine among its SDK processes
(``MultiProcessShared``); every stage then sends its calls to it through the same client, cache, throttle
and dead letters as a remote endpoint.
"""

from __future__ import annotations

import os
import shlex
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import weakref
from collections.abc import Callable

POLL_S = 0.2
LOG_TAIL = 2000  # characters of the server's output quoted when it fails to start


class ServerError(RuntimeError):
    """The server exited or never became ready (``pid``: its process, already stopped)."""

    def __init__(self, message: str, pid: int | None = None) -> None:
        super().__init__(message)
        self.pid = pid


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def command_line(command: str, port: int) -> list[str]:
    """The argv of ``command`` with ``{port}`` filled in (a command without it gets no port: it must pick ours)."""
    if "{port}" not in command:
        raise ServerError("--llm_server_cmd must contain {port}, where the server is told to listen")
    return shlex.split(command.replace("{port}", str(port)))


def terminate(process: subprocess.Popen) -> None:
    """Stop a server's process group: SIGTERM, then SIGKILL after 10 s."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def ready(base_url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{base_url}/models", timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


class LocalServer:
    """One server subprocess on 127.0.0.1; ``url()`` is its OpenAI base URL. Its users ``attach()`` (starting it
    again if the last user had stopped it) and ``detach()`` (the last one stops it); it is also stopped when the
    object is collected and at interpreter exit (a finalizer that holds the process, not the object)."""

    def __init__(
        self,
        command: str,
        startup_s: float = 600.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._command, self._startup_s, self._users = command, startup_s, 0
        self._clock, self._sleep = clock, sleep  # injectable: a test of the deadline need not wait for it
        self._start()

    def _start(self) -> None:
        port = free_port()
        self._log = tempfile.NamedTemporaryFile(prefix="comvint-llm-server-", suffix=".log", delete=False)
        self._process = subprocess.Popen(
            command_line(self._command, port),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.base_url = f"http://127.0.0.1:{port}/v1"
        self.stop = weakref.finalize(self, terminate, self._process)
        deadline = self._clock() + self._startup_s
        while not ready(self.base_url):
            code = self._process.poll()
            if code is not None:
                raise ServerError(
                    f"the LLM server exited with code {code} before it was ready: {self.log_tail()}", self._process.pid
                )
            if self._clock() > deadline:
                self.stop()
                raise ServerError(
                    f"the LLM server was not ready within {self._startup_s:g} s (GET {self.base_url}/models): "
                    f"{self.log_tail()}",
                    self._process.pid,
                )
            self._sleep(POLL_S)

    def attach(self) -> str:
        """One more user; the base URL (the server started again if it had been stopped)."""
        if self._process.poll() is not None:
            self._start()
        self._users += 1
        return self.base_url

    def detach(self) -> None:
        """One user fewer: the last one stops the server."""
        self._users -= 1
        if self._users <= 0:
            self.stop()

    def url(self) -> str:
        return self.base_url

    def log_tail(self) -> str:
        self._log.flush()
        with open(self._log.name, errors="replace") as handle:
            return handle.read()[-LOG_TAIL:]
