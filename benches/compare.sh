#!/usr/bin/env bash
# Side-by-side benchmarks of ckflow against its peers, interleaved (../shared/bench/vs.py).
# Usage: benches/compare.sh [validate|noop|shell|all]   (from the repository root)
# Needs: a release build (cargo build --release), ninja-build and make (Debian), and a venv
# with check-jsonschema and snakemake (BENCH_VENV, default target/bench-venv).
set -euo pipefail
cd "$(dirname "$0")/.."
what="${1:-all}"
shared="${CKFLOW_SHARED:-../shared}"
venv="${BENCH_VENV:-$PWD/target/bench-venv}"
bin="$PWD/target/release/ckflow"
work="${BENCH_DIR:-/tmp/ckflow-bench}"
runs="${RUNS:-5}"
[ -x "$bin" ] || cargo build --release
if [ ! -x "$venv/bin/check-jsonschema" ] || [ ! -x "$venv/bin/snakemake" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet check-jsonschema snakemake
fi
command -v ninja >/dev/null || { echo "install ninja-build" >&2; exit 1; }
mkdir -p "$work"
gen() { [ -f "$work/$1-$2/noop.yaml" ] || python3 "$shared/bench/gen_dag.py" "$1" "$2" "$work/$1-$2"; }
peak() { /usr/bin/time -f "%e s wall, %M KB peak RSS" "$@" >/dev/null; }

if [ "$what" = validate ] || [ "$what" = all ]; then
  gen layered 10000
  echo "== validate: 10,000-step layered workflow vs check-jsonschema"
  peak "$bin" validate "$work/layered-10000/workflow.yaml"
  python3 "$shared/bench/vs.py" -n "$runs" \
    -a "$bin validate $work/layered-10000/workflow.yaml" \
    -b "$venv/bin/check-jsonschema --schemafile schemas/workflow.schema.json $work/layered-10000/workflow.yaml"
fi

if [ "$what" = noop ] || [ "$what" = all ]; then
  gen layered 10000
  echo "== run: 10,000 noop steps, end to end"
  peak "$bin" run --json "$work/layered-10000/noop.yaml"
  python3 "$shared/bench/vs.py" -n "$runs" \
    -a "$bin run --json $work/layered-10000/noop.yaml" \
    -b "$bin validate $work/layered-10000/noop.yaml"
fi

if [ "$what" = shell ] || [ "$what" = all ]; then
  gen layered 1000
  d="$work/layered-1000"
  echo "== run: 1,000 shell steps (true), 2 at a time, vs ninja -j2 and make -j2"
  python3 "$shared/bench/vs.py" -n "$runs" \
    -a "$bin run --json --max-parallel 2 $d/workflow.yaml" \
    -b "ninja -C $d -j2"
  python3 "$shared/bench/vs.py" -n "$runs" \
    -a "$bin run --json --max-parallel 2 $d/workflow.yaml" \
    -b "make -C $d -j2"
  echo "-- snakemake -c2, for reference"
  python3 "$shared/bench/vs.py" -n 2 --warmup 0 --setup "rm -rf $d/done $d/.snakemake" \
    -a "$bin run --json --max-parallel 2 $d/workflow.yaml" \
    -b "cd $d && $venv/bin/snakemake -c2 --quiet"
fi
