#!/usr/bin/env python3
"""ExecuteCustomWorkflow (one noop, durable store) latency of two ckflow builds, side by side.

    python3 benches/mcp_side_by_side.py NEW_BINARY OLD_BINARY [ROUNDS] [CALLS]

Interleaves ROUNDS (default 4) rounds of CALLS (default 250) sequential calls per binary,
each round in a fresh project, over stdio with raw JSON lines, so that both builds see the
same disk noise. Prints p50/p95/p99 in microseconds and the ratios.
"""
import json, os, shutil, subprocess, sys, tempfile, time
def bench(binary, n):
    project = tempfile.mkdtemp(); os.makedirs(project + "/.git")
    p = subprocess.Popen([binary, "mcp", "--project", project], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=project)
    i = [0]
    def rpc(method, params):
        i[0] += 1
        p.stdin.write(json.dumps({"jsonrpc": "2.0", "id": i[0], "method": method, "params": params}).encode() + b"\n"); p.stdin.flush()
        while True:
            msg = json.loads(p.stdout.readline())
            if msg.get("id") == i[0]: return msg
    rpc("initialize", {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "b", "version": "0"}})
    p.stdin.write(b'{"jsonrpc":"2.0","method":"notifications/initialized"}\n'); p.stdin.flush()
    args = {"workflow": "apiVersion: ckflow/v1\nname: one\nsteps:\n  - {id: a, tool: noop}\n"}
    for _ in range(20): rpc("tools/call", {"name": "ExecuteCustomWorkflow", "arguments": args})
    ts = []
    for _ in range(n):
        t0 = time.perf_counter(); m = rpc("tools/call", {"name": "ExecuteCustomWorkflow", "arguments": args}); ts.append((time.perf_counter() - t0) * 1e6)
        assert not m["result"].get("isError"), m
    p.stdin.close(); p.wait(); shutil.rmtree(project, ignore_errors=True)
    return ts
a, b = os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2])
rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 4
n = int(sys.argv[4]) if len(sys.argv) > 4 else 250
A, B = [], []
for r in range(rounds):
    A += bench(a, n); B += bench(b, n)
def pct(xs, q): xs = sorted(xs); return xs[min(len(xs) - 1, int(len(xs) * q))]
for name, xs in (("A " + a, A), ("B " + b, B)):
    print(f"{name}: n={len(xs)} p50={pct(xs,.5):.0f} p95={pct(xs,.95):.0f} p99={pct(xs,.99):.0f} us")
print(f"ratio A/B p50 {pct(A,.5)/pct(B,.5):.2f} p95 {pct(A,.95)/pct(B,.95):.2f}")
