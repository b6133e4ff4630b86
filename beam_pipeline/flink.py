"""Apache Flink for the job: Beam's Flink job server and Flink itself, fetched once into a cache, a
local standalone cluster (a JobManager and TaskManagers, each its own JVM) and Beam's Python worker
pool. ``run_flink.sh``, the Flink test and ``bench/flink_bench.py`` use it.

``python -m beam_pipeline.flink fetch`` prints the job server jar and FLINK_HOME (fetching them when
missing); ``python -m beam_pipeline.flink cluster --taskmanagers 2`` runs a cluster in the foreground.

Versions: Maven Central serves Beam's Flink runner and job service together at 2.62.0 at the
newest (no ``beam-runners-flink-*-job-server`` jar of any version, and no job service for 2.63+
beside a Flink runner), so the job server is Beam 2.62.0's ``FlinkJobServerDriver`` on its resolved
class path (a jar holding only a manifest that names it), for Flink 1.19; the cluster is Flink 1.19.3
from PyPI's ``apache-flink`` (its ``bin/`` scripts) and ``apache-flink-libraries`` (its jars). The
Python SDK (2.77) speaks the portable job API to it: the whole job runs, byte-identical to the local
runner (tests/beam_pipeline/test_flink.py).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.request
import zipfile
from collections.abc import Callable, Sequence

BEAM_JAVA_VERSION = "2.62.0"
FLINK_MINOR = "1.19"
FLINK_VERSION = "1.19.3"
JOB_SERVER_MAIN = "org.apache.beam.runners.flink.FlinkJobServerDriver"
DEFAULT_CACHE = pathlib.Path(
    os.environ.get("COMVINT_FLINK_CACHE", pathlib.Path.home() / ".cache" / "comvint" / "flink")
)

# What every process of a local cluster is started with (``-D`` dynamic properties).
CLUSTER_CONFIG = {
    # A killed TaskManager is noticed after 2 failed heartbeats (5 s apart), and the job is restarted
    # (whole: Beam's batch translation pipelines its exchanges). A live but busy one is given 60 s: at
    # 10 s, TaskManagers starved of CPU on a 2-core machine were declared lost and the job restarted.
    "heartbeat.interval": "5000",
    "heartbeat.timeout": "60000",
    "heartbeat.rpc-failure-threshold": "2",
    # Deploying a task to a TaskManager busy with Python workers took over the default 10 s here.
    "pekko.ask.timeout": "60 s",
    "restart-strategy.type": "fixed-delay",
    "restart-strategy.fixed-delay.attempts": "10",  # one lost TaskManager fails its consumers too: 2 here
    "restart-strategy.fixed-delay.delay": "2 s",
    # The job is a few hundred tasks, some with dozens of inputs: Flink's default 64 MB of network
    # buffers of 32 KB is too few for it; packed records are small, so buffers of 8 KB serve as well.
    # Beam's data channel to the Python workers (gRPC over Netty) takes direct memory outside Flink's network
    # buffers: at the whole Flickr30k train+val set, the default (framework off-heap only, 128 MB) ran out
    # ("OutOfMemoryError: Direct buffer memory") in the stage that merges the method's outputs.
    "taskmanager.memory.process.size": "3g",
    "taskmanager.memory.task.off-heap.size": "512m",
    "taskmanager.memory.segment-size": "8kb",
    "taskmanager.memory.network.min": "512m",
    "taskmanager.memory.network.max": "512m",
    "jobmanager.memory.process.size": "1g",
}


class FlinkError(RuntimeError):
    """Something Flink needs is missing or did not start; the message says what and how to fix it."""


def java() -> str:
    """The ``java`` launcher (``$JAVA_HOME/bin/java`` first), or FlinkError."""
    home = os.environ.get("JAVA_HOME")
    found = str(pathlib.Path(home, "bin", "java")) if home else shutil.which("java")
    if not found or not os.access(found, os.X_OK):
        raise FlinkError("no Java: install a JDK 11 or 17 (Debian: openjdk-17-jre-headless) or set JAVA_HOME")
    return found


def manifest(main_class: str, class_path: Sequence[pathlib.Path]) -> str:
    """A jar manifest naming ``main_class`` and ``class_path`` (absolute file URLs), lines folded at 72 bytes."""
    entries = " ".join(p.resolve().as_uri() for p in class_path)
    lines = ["Manifest-Version: 1.0", f"Main-Class: {main_class}", f"Class-Path: {entries}"]
    folded = []
    for line in lines:
        raw = line.encode()
        folded.append(raw[:72])
        folded.extend(b" " + raw[i : i + 71] for i in range(72, len(raw), 71))
    return "\r\n".join(part.decode() for part in folded) + "\r\n"


def job_server_pom(version: str = BEAM_JAVA_VERSION, flink_minor: str = FLINK_MINOR) -> str:
    """The Maven project whose runtime dependencies are Beam's Flink job server."""
    return f"""<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>comvint</groupId><artifactId>flink-job-server</artifactId><version>{version}</version>
  <dependencies>
    <dependency><groupId>org.apache.beam</groupId><artifactId>beam-runners-flink-{flink_minor}</artifactId>
      <version>{version}</version></dependency>
    <dependency><groupId>org.slf4j</groupId><artifactId>slf4j-simple</artifactId><version>1.7.30</version></dependency>
  </dependencies>
</project>
"""


def fetch_job_server(cache: pathlib.Path = DEFAULT_CACHE) -> pathlib.Path:
    """The job server jar, resolved with Maven into ``cache`` on first use (about 150 MB)."""
    home = cache / f"job-server-{BEAM_JAVA_VERSION}-flink-{FLINK_MINOR}"
    jar = home / "flink-job-server.jar"
    if jar.is_file():
        return jar
    mvn = shutil.which("mvn")
    if not mvn:
        raise FlinkError("no Maven (mvn) to fetch Beam's Flink job server: install it (Debian: maven)")
    home.mkdir(parents=True, exist_ok=True)
    (home / "pom.xml").write_text(job_server_pom())
    proc = subprocess.run(
        [
            mvn,
            "-q",
            "-B",
            "-f",
            str(home / "pom.xml"),
            "dependency:copy-dependencies",
            "-DincludeScope=runtime",
            f"-DoutputDirectory={home / 'lib'}",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode:
        raise FlinkError(f"Maven could not resolve Beam {BEAM_JAVA_VERSION}'s Flink job server:\n{proc.stdout[-2000:]}")
    write_manifest_jar(jar, JOB_SERVER_MAIN, sorted((home / "lib").glob("*.jar")))
    return jar


def write_manifest_jar(jar: pathlib.Path, main_class: str, class_path: Sequence[pathlib.Path]) -> None:
    """Write (atomically) a jar that holds only a manifest: ``java -jar`` runs ``main_class`` on ``class_path``."""
    tmp = jar.with_suffix(".tmp")
    with zipfile.ZipFile(tmp, "w") as out:
        out.writestr("META-INF/MANIFEST.MF", manifest(main_class, class_path))
    tmp.replace(jar)


def fetch_flink(cache: pathlib.Path = DEFAULT_CACHE, python: str = sys.executable) -> pathlib.Path:
    """FLINK_HOME for Flink ``FLINK_VERSION``, assembled from PyPI's apache-flink (bin/, conf/) and
    apache-flink-libraries (lib/) without installing them (their pins clash with this job's Beam)."""
    home = cache / f"flink-{FLINK_VERSION}"
    if (home / "bin" / "jobmanager.sh").is_file() and (home / "lib").is_dir():
        return home
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        work = pathlib.Path(tmp)
        for package in ("apache-flink", "apache-flink-libraries"):
            proc = subprocess.run(
                [python, "-m", "pip", "download", "-q", "--no-deps", "-d", str(work), f"{package}=={FLINK_VERSION}"],
                capture_output=True,
                text=True,
                check=False,
            )
            if proc.returncode:
                raise FlinkError(f"pip could not download {package}=={FLINK_VERSION}:\n{proc.stderr[-2000:]}")
        staged = work / "home"
        (wheel,) = work.glob("apache_flink-*.whl")
        with zipfile.ZipFile(wheel) as whl:
            for name in whl.namelist():
                if name.startswith(("pyflink/bin/", "pyflink/conf/")) and not name.endswith("/"):
                    target = staged / name.removeprefix("pyflink/")
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(whl.read(name))
        (sdist,) = work.glob("apache-flink-libraries-*.tar.gz")
        with tarfile.open(sdist) as tar:
            members = [
                m
                for m in tar.getmembers()
                if "/deps/lib/" in m.name or m.name.endswith("/deps/bin/bash-java-utils.jar")
            ]
            tar.extractall(work / "libs", members=members, filter="data")
        deps = next((work / "libs").glob("*/deps"))
        shutil.copytree(deps / "lib", staged / "lib")
        shutil.copy(deps / "bin" / "bash-java-utils.jar", staged / "bin" / "bash-java-utils.jar")
        for script in (staged / "bin").iterdir():
            script.chmod(0o755)
        home.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(home, ignore_errors=True)
        shutil.move(str(staged), home)
    return home


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def rest(address: str, path: str, timeout: float = 5.0) -> dict:
    """GET Flink's REST API at ``address`` (host:port)."""
    with urllib.request.urlopen(f"http://{address}{path}", timeout=timeout) as reply:
        return json.load(reply)


def wait_for(
    check: Callable[[], bool],
    timeout: float,
    what: str,
    clock: Callable[[], float] = time.monotonic,
    pause: Callable[[float], None] = time.sleep,
) -> None:
    """Poll ``check`` until it holds, or raise FlinkError naming ``what`` after ``timeout`` seconds."""
    deadline = clock() + timeout
    while not check():
        if clock() > deadline:
            raise FlinkError(f"timed out after {timeout:.0f} s waiting for {what}")
        pause(0.5)


def registered(address: str, count: int) -> bool:
    """Whether the cluster at ``address`` has ``count`` TaskManagers registered."""
    try:
        return rest(address, "/overview").get("taskmanagers", 0) >= count
    except OSError:
        return False


class LocalCluster:
    """A standalone Flink cluster on this machine: one JobManager and ``taskmanagers`` TaskManagers,
    each its own JVM started by Flink's own scripts, with a restart strategy; logs under ``workdir``."""

    def __init__(
        self,
        flink_home: pathlib.Path,
        workdir: pathlib.Path,
        taskmanagers: int = 2,
        slots: int = 2,
        config: dict[str, str] | None = None,
    ) -> None:
        self.home, self.workdir, self.slots = flink_home, workdir, slots
        self.rest_port, self.rpc_port = free_port(), free_port()
        self.config = {
            **CLUSTER_CONFIG,
            "rest.port": str(self.rest_port),
            "rest.address": "localhost",
            "jobmanager.rpc.address": "localhost",
            "jobmanager.rpc.port": str(self.rpc_port),
            "taskmanager.numberOfTaskSlots": str(slots),
            **(config or {}),
        }
        self.jobmanager: subprocess.Popen | None = None
        self.taskmanagers: list[subprocess.Popen] = []
        self._wanted = taskmanagers

    @property
    def address(self) -> str:
        """host:port of the REST endpoint (``--flink_master``)."""
        return f"localhost:{self.rest_port}"

    def _start(self, script: str, name: str) -> subprocess.Popen:
        env = {
            **os.environ,
            "FLINK_HOME": str(self.home),
            "FLINK_CONF_DIR": str(self.home / "conf"),
            "FLINK_LOG_DIR": str(self.workdir),
            "FLINK_IDENT_STRING": name,
        }
        dynamic = [arg for key, value in self.config.items() for arg in ("-D", f"{key}={value}")]
        if script == "taskmanager.sh":
            dynamic += ["-D", f"taskmanager.resource-id={name}"]
        log = open(self.workdir / f"{name}.out", "ab")  # noqa: SIM115 - the process owns it
        return subprocess.Popen(
            [str(self.home / "bin" / script), "start-foreground", *dynamic],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def add_taskmanager(self) -> subprocess.Popen:
        """Start one more TaskManager (as a supervisor would after losing one)."""
        proc = self._start("taskmanager.sh", f"taskmanager-{len(self.taskmanagers) + 1}")
        self.taskmanagers.append(proc)
        return proc

    def start(self, timeout: float = 120.0) -> LocalCluster:
        """Start the JobManager and the TaskManagers; return once all are registered."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        java()
        self.jobmanager = self._start("jobmanager.sh", "jobmanager")
        for _ in range(self._wanted):
            self.add_taskmanager()
        wait_for(
            lambda: registered(self.address, self._wanted) or self._died(),
            timeout,
            f"{self._wanted} TaskManagers at {self.address} (logs: {self.workdir})",
        )
        if self._died():
            raise FlinkError(f"a Flink process exited at startup: see the logs in {self.workdir}")
        return self

    def _died(self) -> bool:
        return any(p.poll() is not None for p in [self.jobmanager, *self.taskmanagers] if p)

    def kill_taskmanager(self) -> int:
        """SIGKILL the first live TaskManager JVM (a lost machine); returns its pid."""
        proc = next(p for p in self.taskmanagers if p.poll() is None)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        return proc.pid

    def pids(self) -> dict[str, int]:
        """name -> pid of every live process of the cluster."""
        named = {"jobmanager": self.jobmanager, **{f"taskmanager-{i + 1}": p for i, p in enumerate(self.taskmanagers)}}
        return {name: p.pid for name, p in named.items() if p and p.poll() is None}

    def stop(self) -> None:
        """Stop every process of the cluster."""
        for proc in [*self.taskmanagers, self.jobmanager]:
            if proc and proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        for proc in [*self.taskmanagers, self.jobmanager]:
            if proc:
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class WorkerPool:
    """Beam's Python worker pool (``--environment_type=EXTERNAL``): starts SDK worker processes for the
    TaskManagers, with this interpreter's environment (the job's package installed) first on PATH."""

    def __init__(self, workdir: pathlib.Path, python: str = sys.executable, port: int = 0) -> None:
        self.workdir, self.python, self.port = workdir, python, port or free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def address(self) -> str:
        """host:port to pass as ``--environment_config``."""
        return f"localhost:{self.port}"

    def start(self, timeout: float = 60.0) -> WorkerPool:
        """Start the pool; return once it listens."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        bindir = str(pathlib.Path(self.python).parent)
        env = {**os.environ, "PATH": f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}"}
        log = open(self.workdir / f"worker-pool-{self.port}.out", "ab")  # noqa: SIM115 - the process owns it
        self.proc = subprocess.Popen(
            [self.python, "-m", "beam_pipeline.worker_pool", f"--service_port={self.port}"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_for(
            lambda: listening(self.port) or self.proc.poll() is not None, timeout, f"the worker pool on {self.port}"
        )
        if self.proc.poll() is not None:
            raise FlinkError(f"the worker pool exited: see {self.workdir}")
        return self

    def stop(self) -> None:
        """Stop the pool and the SDK workers it started."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()

    def __enter__(self) -> WorkerPool:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def listening(port: int) -> bool:
    """Whether something accepts connections on 127.0.0.1:``port``."""
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def job_flags(
    job_server_jar: pathlib.Path,
    master: str,
    pool: str | None,
    workers: int,
    parallelism: int = 0,
    mode: str = "PIPELINED",
) -> list[str]:
    """The Beam options that run the job on Flink: the cluster at ``master`` (``[local]``: a mini cluster
    inside the job server), Python workers from the pool at ``pool`` (None: inside this process)."""
    flags = [
        "--runner=FlinkRunner",
        f"--flink_master={master}",
        f"--flink_job_server_jar={job_server_jar}",
        f"--llm_workers={workers}",
    ]
    flags += (
        ["--environment_type=EXTERNAL", f"--environment_config={pool}"] if pool else ["--environment_type=LOOPBACK"]
    )
    flags.append(f"--execution_mode_for_batch={mode}")
    return flags + ([f"--parallelism={parallelism}"] if parallelism else [])


def cluster_workers(address: str) -> int:
    """How many TaskManagers the cluster at ``address`` has (each runs one SDK worker for the job)."""
    return max(1, int(rest(address, "/overview").get("taskmanagers", 1)))


def run_job(
    job_args: Sequence[str], master: str, pool: str | None, jar: pathlib.Path, parallelism: int, mode: str
) -> int:
    """Run the job on the cluster at ``master`` (a failed job exits with the job's own status)."""
    from beam_pipeline import main as job  # the job itself, only when running it

    workers = 1 if master == "[local]" else cluster_workers(master)
    job.main([*job_args, *job_flags(jar, master, pool, workers, parallelism, mode)])
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``fetch``: print the job server jar and FLINK_HOME (fetched once). ``cluster``: run a local cluster
    and a worker pool until interrupted, printing their addresses as one JSON line. ``run [job flags]``: run
    the job on ``--flink_master`` (default: a local cluster started for the run and stopped after it)."""
    parser = argparse.ArgumentParser(prog="python -m beam_pipeline.flink", description=main.__doc__)
    parser.add_argument("command", choices=("fetch", "cluster", "run"))
    parser.add_argument("--cache", type=pathlib.Path, default=DEFAULT_CACHE, help="where the jars are kept")
    parser.add_argument(
        "--flink_master",
        default="",
        help="run: an existing cluster's REST address host:port, "
        "or [local] for the job server's embedded cluster (default: start a local cluster)",
    )
    parser.add_argument(
        "--worker_pool",
        default="",
        help="run: the worker pool each TaskManager reaches (host:port; default: one started here)",
    )
    parser.add_argument("--taskmanagers", type=int, default=2, help="TaskManagers of a local cluster")
    parser.add_argument("--slots", type=int, default=2, help="task slots per TaskManager of a local cluster")
    parser.add_argument(
        "--parallelism",
        type=int,
        default=0,
        help="run: the job's parallelism (0: a local cluster's TaskManager count, else the cluster's default)",
    )
    parser.add_argument(
        "--execution_mode_for_batch",
        default="PIPELINED",
        choices=("PIPELINED", "BATCH_FORCED"),
        help="run: Flink's exchanges (BATCH_FORCED: blocking, stage by stage, in less network memory)",
    )
    parser.add_argument("--workdir", type=pathlib.Path, default=pathlib.Path("build/flink"), help="the cluster's logs")
    args, job_args = parser.parse_known_args(argv)
    try:
        jar = fetch_job_server(args.cache)
        if args.command == "run" and args.flink_master:
            with contextlib.ExitStack() as stack:
                pool = args.worker_pool or (
                    None if args.flink_master == "[local]" else stack.enter_context(WorkerPool(args.workdir)).address
                )
                return run_job(job_args, args.flink_master, pool, jar, args.parallelism, args.execution_mode_for_batch)
        home = fetch_flink(args.cache)
        if args.command == "fetch":
            print(json.dumps({"job_server_jar": str(jar), "flink_home": str(home)}))
            return 0
        with (
            LocalCluster(home, args.workdir, args.taskmanagers, args.slots) as cluster,
            WorkerPool(args.workdir) as pool,
        ):
            if args.command == "run":
                return run_job(
                    job_args,
                    cluster.address,
                    pool.address,
                    jar,
                    args.parallelism or args.taskmanagers,
                    args.execution_mode_for_batch,
                )
            print(
                json.dumps(
                    {
                        "flink_master": cluster.address,
                        "worker_pool": pool.address,
                        "job_server_jar": str(jar),
                        "taskmanagers": args.taskmanagers,
                        "pids": cluster.pids(),
                    }
                ),
                flush=True,
            )
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})  # after the children started
            signal.sigwait({signal.SIGINT, signal.SIGTERM})
    except FlinkError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
