"""Shared helpers for the MCP scenarios: connect the official Python SDK (`mcp` 2.x) to a
`ckflow mcp` server over stdio (the SDK spawns it) or streamable HTTP, in the handshake-era
mode (`legacy`: initialize) or the current stateless one (`modern`: 2026-07-28, no
initialize), and small assertion helpers that print what they saw when they fail.

Driven by tests/mcp.rs; every scenario gets:
  --bin PATH          the ckflow binary
  --project DIR       the project folder (workflows/, .ckflow/)
  --mode legacy|modern
  --url URL --token T for HTTP (omit for stdio)
  --server-arg ARG    extra `ckflow mcp` arguments for stdio (repeatable)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import AsyncIterator
from typing import Any

from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

MODES = {"legacy": "legacy", "modern": "2026-07-28", "auto": "auto"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    p.add_argument("scenario")
    p.add_argument("--bin", required=True)
    p.add_argument("--project", required=True)
    p.add_argument("--mode", default="legacy", choices=sorted(MODES))
    p.add_argument("--url")
    p.add_argument("--token")
    p.add_argument("--server-arg", action="append", default=[])
    return p.parse_args(argv)


@contextlib.asynccontextmanager
async def connect(args: argparse.Namespace, *, token: str | None = "default") -> AsyncIterator[Client]:
    """A connected client. `token=None` sends no Authorization header (HTTP)."""
    mode = MODES[args.mode]
    if args.url:
        tok = args.token if token == "default" else token
        headers = {"Authorization": f"Bearer {tok}"} if tok else {}
        async with create_mcp_http_client(headers=headers) as http:
            async with Client(streamable_http_client(args.url, http_client=http), mode=mode) as c:
                yield c
    else:
        params = StdioServerParameters(
            command=args.bin,
            args=["mcp", "--project", args.project, *args.server_arg],
            env={"CKFLOW_LOG": os.environ.get("CKFLOW_LOG", "warn")},
            cwd="/",
        )
        async with Client(params, mode=mode) as c:
            yield c


class Failed(AssertionError):
    pass


def check(cond: Any, what: str, *show: Any) -> None:
    if not cond:
        detail = "\n".join(json.dumps(s, indent=2, default=str)[:4000] for s in show)
        raise Failed(f"{what}\n{detail}")


def structured(result: Any) -> dict:
    """The result's structuredContent, checked to equal its text content."""
    sc = result.structured_content
    texts = [c.text for c in result.content if getattr(c, "type", None) == "text"]
    check(texts, "a result carries its JSON as text too", sc)
    check(json.loads(texts[0]) == sc, "the text content is the same JSON as structuredContent", sc, texts[0])
    return sc


async def call(c: Client, name: str, args: dict | None = None, **kw: Any) -> tuple[bool, dict]:
    r = await c.call_tool(name, args or {}, **kw)
    return r.is_error, structured(r)


def main(scenarios: dict) -> None:
    import anyio

    args = parse_args()
    fn = scenarios.get(args.scenario)
    if fn is None:
        print(f"unknown scenario {args.scenario}; known: {', '.join(scenarios)}", file=sys.stderr)
        sys.exit(2)
    try:
        anyio.run(fn, args)
    except Failed as e:
        print(f"FAILED [{args.scenario} {args.mode} {'http' if args.url else 'stdio'}]: {e}", file=sys.stderr)
        sys.exit(1)
    print(f"ok [{args.scenario} {args.mode} {'http' if args.url else 'stdio'}]")
