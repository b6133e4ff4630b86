"""``python -m beam_pipeline.worker_pool --service_port 50000``: Beam's Python worker pool for
``--environment_type=EXTERNAL`` (Flink), fixed for what running on Flink showed:

- Beam's own ``apache_beam.runners.worker.worker_pool_main`` starts its SDK workers with no state cache,
  so every read of a side input (the topic step's document frequencies, the scene join) goes back to the
  runner: the bundled sample took 2.5 min on Flink that way against 26 s with the cache that in-process
  (LOOPBACK) workers have.
- It keeps one worker per worker id, but each TaskManager numbers its workers itself ("1-1", "2-1", ...):
  two TaskManagers sharing a pool (one machine) start workers with the same ids, and stopping one
  TaskManager's worker killed the other's, which then waited 3 minutes and failed ("No client connected
  within timeout"). Here a worker is never killed on request: it exits when its TaskManager hangs up.
"""

from __future__ import annotations

import argparse
import logging
import signal
from collections.abc import Sequence

from apache_beam.portability.api import beam_fn_api_pb2
from apache_beam.runners.worker.worker_pool_main import BeamFnExternalWorkerPoolServicer

STATE_CACHE_MB = 100  # Beam's default --state_cache_size for its own workers


class SharedWorkerPool(BeamFnExternalWorkerPoolServicer):
    """A pool that several TaskManagers may share: workers are kept by (worker id, control endpoint) and end
    when their TaskManager closes their control channel, never by id."""

    def StartWorker(self, request, context):  # noqa: N802 - the gRPC method's name
        reply = super().StartWorker(request, context)
        process = self._worker_processes.pop(request.worker_id, None)
        if process is not None:
            self._worker_processes[f"{request.worker_id}@{request.control_endpoint.url}"] = process
        self._reap()
        return reply

    def StopWorker(self, request, context):  # noqa: N802 - the gRPC method's name
        self._reap()
        return beam_fn_api_pb2.StopWorkerResponse()

    def _reap(self) -> None:
        """Forget workers that have exited."""
        for key, process in list(self._worker_processes.items()):
            if process.poll() is not None:
                del self._worker_processes[key]


def main(argv: Sequence[str] | None = None) -> None:
    """Serve the worker pool until SIGTERM or SIGINT."""
    parser = argparse.ArgumentParser(prog="python -m beam_pipeline.worker_pool", description=main.__doc__)
    parser.add_argument("--service_port", type=int, required=True, help="the port TaskManagers reach it on")
    parser.add_argument("--state_cache_mb", type=int, default=STATE_CACHE_MB, help="state cache of each SDK worker")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    stopped: list[int] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda signum, _frame: stopped.append(signum))
    _, server = SharedWorkerPool.start(
        use_process=True, port=args.service_port, state_cache_size=args.state_cache_mb << 20
    )
    while not stopped:
        signal.pause()
    server.stop(0)


if __name__ == "__main__":
    main()
