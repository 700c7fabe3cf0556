#!/usr/bin/env python3
"""Latency of `ckflow mcp` as a client outside the process sees it, over stdio.

    cargo build --release
    python3 -m venv /tmp/venv-mcp && /tmp/venv-mcp/bin/pip install "mcp>=2,<3"
    /tmp/venv-mcp/bin/python benches/mcp_latency.py [--bin target/release/ckflow] [-n 1000]
                                                    [--mode legacy|modern] [--json]

The official Python SDK spawns the server in a fresh project (a temporary folder with the
durable store under .ckflow/) and makes N sequential calls of each kind, timing each call
from the moment the client sends it to the moment its result is parsed (so the client's own
cost is included; `--raw` also times the same calls over hand-written JSON lines, without the
SDK, which isolates the server; it also reports the time until the response line is read,
before the client parses it). Reports p50/p95/p99 in microseconds.

Targets (docs/mcp.md): ValidateWorkflow (10 steps) and ListTools p95 < 300 µs;
ExecuteCustomWorkflow (one noop step, recorded in the durable store) p95 < 2 ms.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TEN_STEPS = "apiVersion: ckflow/v1\nname: ten\nsteps:\n" + "".join(
    f"  - id: s{i}\n    tool: noop\n    with: {{n: {i}}}\n" + (f"    needs: [s{i - 1}]\n" if i else "") for i in range(10)
)
ONE_NOOP = "apiVersion: ckflow/v1\nname: one\nsteps:\n  - {id: a, tool: noop}\n"

CALLS = [
    ("ValidateWorkflow (10 steps)", "ValidateWorkflow", {"workflow": TEN_STEPS}),
    ("ListTools", "ListTools", {}),
    ("ExecuteCustomWorkflow (1 noop)", "ExecuteCustomWorkflow", {"workflow": ONE_NOOP}),
]


def percentiles(samples: list[float]) -> dict[str, float]:
    s = sorted(samples)

    def pct(p: float) -> float:
        return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]

    return {"p50": pct(50), "p95": pct(95), "p99": pct(99), "mean": statistics.fmean(s), "n": len(s)}


async def with_sdk(binary: str, project: str, n: int, mode: str) -> dict[str, dict[str, float]]:
    from mcp import Client, StdioServerParameters

    params = StdioServerParameters(command=binary, args=["mcp", "--project", project], cwd=project)
    out = {}
    async with Client(params, mode="legacy" if mode == "legacy" else "2026-07-28") as c:
        for label, tool, args in CALLS:
            for _ in range(max(20, n // 20)):  # warm-up
                await c.call_tool(tool, args)
            samples = []
            for _ in range(n):
                t0 = time.perf_counter_ns()
                r = await c.call_tool(tool, args)
                samples.append((time.perf_counter_ns() - t0) / 1000)
                if r.is_error:
                    raise SystemExit(f"{label}: {r.structured_content}")
            out[label] = percentiles(samples)
    return out


def raw(binary: str, project: str, n: int) -> dict[str, dict[str, float]]:
    """The same calls as JSON lines over the pipes, no SDK: the server's own latency."""
    p = subprocess.Popen([binary, "mcp", "--project", project], stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=project)
    assert p.stdin and p.stdout
    ids = iter(range(1, 10**9))

    read_at = [0]

    def rpc(method: str, params: dict) -> dict:
        i = next(ids)
        p.stdin.write(json.dumps({"jsonrpc": "2.0", "id": i, "method": method, "params": params}).encode() + b"\n")
        p.stdin.flush()
        while True:
            line = p.stdout.readline()
            read_at[0] = time.perf_counter_ns()
            msg = json.loads(line)
            if msg.get("id") == i:
                return msg

    rpc("initialize", {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "bench", "version": "0"}})
    p.stdin.write(b'{"jsonrpc":"2.0","method":"notifications/initialized"}\n')
    p.stdin.flush()
    out = {}
    for label, tool, args in CALLS:
        params = {"name": tool, "arguments": args}
        for _ in range(max(20, n // 20)):
            rpc("tools/call", params)
        samples, wire = [], []
        for _ in range(n):
            t0 = time.perf_counter_ns()
            msg = rpc("tools/call", params)
            samples.append((time.perf_counter_ns() - t0) / 1000)
            wire.append((read_at[0] - t0) / 1000)
            if msg.get("result", {}).get("isError"):
                raise SystemExit(f"{label}: {msg}")
        out[label] = percentiles(samples)
        out[label + ", response read, not parsed"] = percentiles(wire)
    p.stdin.close()
    p.wait(timeout=30)
    return out


def show(title: str, results: dict[str, dict[str, float]]) -> None:
    print(f"\n{title}")
    print(f"{'call':58} {'p50 µs':>8} {'p95 µs':>8} {'p99 µs':>8} {'mean µs':>8}")
    for label, r in results.items():
        print(f"{label:58} {r['p50']:8.0f} {r['p95']:8.0f} {r['p99']:8.0f} {r['mean']:8.0f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default=str(Path(__file__).resolve().parent.parent / "target/release/ckflow"))
    ap.add_argument("-n", type=int, default=1000)
    ap.add_argument("--mode", choices=["legacy", "modern"], default="legacy")
    ap.add_argument("--raw", action="store_true", help="also time raw JSON lines without the SDK")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    if not os.access(a.bin, os.X_OK):
        raise SystemExit(f"no binary at {a.bin}: cargo build --release")
    import anyio

    results = {}
    with tempfile.TemporaryDirectory() as project:
        (Path(project) / "workflows").mkdir()
        results["sdk"] = anyio.run(with_sdk, a.bin, project, a.n, a.mode)
    if a.raw:
        with tempfile.TemporaryDirectory() as project:
            (Path(project) / "workflows").mkdir()
            results["raw"] = raw(a.bin, project, a.n)
    if a.json:
        print(json.dumps(results, indent=2))
        return
    show(f"Python SDK client ({a.mode}), stdio, {a.n} sequential calls each", results["sdk"])
    if "raw" in results:
        show(f"raw JSON lines (no SDK), stdio, {a.n} sequential calls each", results["raw"])


if __name__ == "__main__":
    sys.exit(main())
