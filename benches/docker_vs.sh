#!/usr/bin/env bash
# 20 `run_container` steps running `true` in the base image, 2 at a time, against the same
# 20 `docker run --rm` commands from a shell with `xargs -P2`, interleaved (vs.py).
# Needs scripts/services.sh (engine + base image) and a release build.
set -euo pipefail
cd "$(dirname "$0")/.."
shared="${CKFLOW_SHARED:-../shared}"
image="${CKFLOW_BASE_IMAGE:-ckflow-base:1}"
work="${BENCH_DIR:-/tmp/ckflow-bench}/docker20"
mkdir -p "$work"
{
  echo "apiVersion: ckflow/v1"
  echo "name: docker-bench"
  echo "steps:"
  for i in $(seq 1 20); do
    echo "  - {id: c$i, tool: run_container, with: {image: \"$image\", command: [\"true\"]}}"
  done
} > "$work/workflow.yaml"
[ -x target/release/ckflow ] || cargo build --release
python3 "$shared/bench/vs.py" -n "${RUNS:-5}" \
  -a "target/release/ckflow run --json --state-dir $work/state --max-parallel 2 $work/workflow.yaml" \
  -b "seq 1 20 | xargs -P2 -I{} docker run --rm --network none --read-only --cap-drop ALL --security-opt no-new-privileges --memory 512m --cpus 1 --pids-limit 256 --tmpfs /tmp $image true"
