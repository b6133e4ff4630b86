#!/usr/bin/env bash
# Run ComVint on Apache Flink (Beam's Flink runner; Python workers from Beam's worker pool).
#
#   ./run_flink.sh [job flags]
#       fetches Beam's Flink job server (Maven) and Flink (PyPI) once into ~/.cache/comvint/flink, starts a
#       local standalone cluster (a JobManager and 2 TaskManagers, each its own JVM, with a restart
#       strategy) and a worker pool, runs the job on it, and stops them; logs in build/flink/.
#   FLINK_MASTER=jobmanager:8081 WORKER_POOL=localhost:50000 ./run_flink.sh --output /shared/out [job flags]
#       runs on an existing Flink 1.19 cluster (REST address) whose TaskManagers each reach a worker pool
#       (python -m beam_pipeline.worker_pool --service_port=50000, beside each TaskManager, with this
#       package installed); --output must be a path every TaskManager can write.
#   FLINK_MASTER='[local]' ./run_flink.sh   # the job server's embedded cluster, workers in this process
#
# TASKMANAGERS, SLOTS, PARALLELISM, EXECUTION_MODE (PIPELINED | BATCH_FORCED) tune the run; extra
# arguments are passed to the job (any ComVint flag or Beam option).
set -euo pipefail
cd "$(dirname "$0")"
PYTHON="${PYTHON:-python}"

exec "$PYTHON" -m beam_pipeline.flink run \
  --flink_master="${FLINK_MASTER:-}" \
  --worker_pool="${WORKER_POOL:-}" \
  --taskmanagers="${TASKMANAGERS:-2}" \
  --slots="${SLOTS:-2}" \
  --parallelism="${PARALLELISM:-0}" \
  --execution_mode_for_batch="${EXECUTION_MODE:-PIPELINED}" \
  "$@"
