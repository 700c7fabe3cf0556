#!/bin/sh
# Check schemas/workflow.schema.json against the samples with an independent validator
# (check-jsonschema): the schema must itself be a valid draft 2020-12 schema, every file in
# valid/ must pass and every file in invalid/ must fail validation (not merely fail to parse).
# Exits non-zero on any mismatch.
#
#   CHECK_JSONSCHEMA=/tmp/venv/bin/check-jsonschema tests/schema_samples/check.sh
set -u

CHECK="${CHECK_JSONSCHEMA:-check-jsonschema}"
here="$(cd "$(dirname "$0")" && pwd)"
schema="$here/../../schemas/workflow.schema.json"
failures=0

if ! "$CHECK" --check-metaschema "$schema" >/dev/null 2>&1; then
    echo "FAIL schema: not a valid JSON Schema"
    "$CHECK" --check-metaschema "$schema"
    failures=$((failures + 1))
fi

for f in "$here"/valid/*.yaml "$here"/valid/*.yml "$here"/valid/*.json; do
    [ -e "$f" ] || continue
    if out="$("$CHECK" --schemafile "$schema" "$f" 2>&1)"; then
        echo "ok   valid/$(basename "$f")"
    else
        echo "FAIL valid/$(basename "$f") was rejected:"
        echo "$out" | sed 's/^/       /'
        failures=$((failures + 1))
    fi
done

for f in "$here"/invalid/*.yaml "$here"/invalid/*.yml "$here"/invalid/*.json; do
    [ -e "$f" ] || continue
    out="$("$CHECK" --schemafile "$schema" "$f" 2>&1)"
    rc=$?
    if [ "$rc" -eq 0 ]; then
        echo "FAIL invalid/$(basename "$f") was accepted"
        failures=$((failures + 1))
    elif echo "$out" | grep -q "Schema validation errors"; then
        echo "ok   invalid/$(basename "$f"): $(echo "$out" | grep -m1 '::\$' | sed 's/^.*::\$/$/')"
    else
        # Rejected, but not by the schema (a parse error, a missing file): not what we test.
        echo "FAIL invalid/$(basename "$f") was not rejected by the schema:"
        echo "$out" | sed 's/^/       /'
        failures=$((failures + 1))
    fi
done

if [ "$failures" -ne 0 ]; then
    echo "$failures mismatch(es)"
    exit 1
fi
echo "all samples behave as expected"
