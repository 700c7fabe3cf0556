#!/bin/sh
# The application's tests, run by the workflow inside the sandboxed container.
set -e
out=$(/app/greet.sh)
[ "$out" = "Hello, world!" ] || { echo "FAIL: default greeting was '$out'" >&2; exit 1; }
out=$(/app/greet.sh ckflow)
[ "$out" = "Hello, ckflow!" ] || { echo "FAIL: named greeting was '$out'" >&2; exit 1; }
echo "2 tests passed"
