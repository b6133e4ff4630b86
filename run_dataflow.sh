#!/usr/bin/env bash
# Run ComVint on Google Cloud Dataflow.
#
#   PROJECT=my-project REGION=us-central1 BUCKET=gs://my-bucket ./run_dataflow.sh \
#       --flickr_root gs://my-bucket/flickr30k_entities --vg_regions gs://my-bucket/vg/region_descriptions.json
#
# Extra arguments are passed to the job (any ComVint flag or Beam option).
# DRY_RUN=1 builds and validates the whole Dataflow job offline without submitting it
# (no credentials needed). The API key for --llm openai is never a pipeline option: store it
# in Secret Manager and pass its version, which every worker reads in setup() (README,
# "Running against a paid API"); its service account needs roles/secretmanager.secretAccessor:
#
#   ./run_dataflow.sh --llm openai --llm_api_key_secret projects/$PROJECT/secrets/openai-key/versions/latest \
#       --llm_rpm 3000 --max_num_workers 20 --cache_dir gs://my-bucket/cache
set -euo pipefail
cd "$(dirname "$0")"

PROJECT="${PROJECT:-comvint-dry-run}"
REGION="${REGION:-us-central1}"
BUCKET="${BUCKET:-gs://comvint-dry-run}"
JOB_NAME="${JOB_NAME:-comvint-$(date +%Y%m%d-%H%M%S)}"
PYTHON="${PYTHON:-python}"

extra=()
if [ "${DRY_RUN:-0}" = "1" ]; then
  extra+=(--dry_run=True)
fi

exec "$PYTHON" -m beam_pipeline.main \
  --runner=DataflowRunner \
  --project="$PROJECT" \
  --region="$REGION" \
  --job_name="$JOB_NAME" \
  --temp_location="$BUCKET/tmp" \
  --staging_location="$BUCKET/staging" \
  --output="${OUTPUT:-$BUCKET/comvint/output}" \
  --setup_file=./setup.py \
  --experiments=use_runner_v2 \
  "${extra[@]}" \
  "$@"
