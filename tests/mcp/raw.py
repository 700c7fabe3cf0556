"""Raw checks no SDK would make, driven by tests/mcp.rs:

  raw.py http URL TOKEN                 tokens, paths, body limits, malformed bodies, Host
  raw.py stdio BIN PROJECT              garbage on stdin, then a normal session still works
  raw.py start_sleeper URL TOKEN DIR    start the `sleeper` workflow (wait: false) and return
                                        once its process runs (DIR/sleeper.pid)
  raw.py versions BIN PROJECT URL TOKEN every protocol revision by hand: the handshake ones
                                        (2024-11-05 … 2025-11-25) over stdio, and 2026-07-28
                                        (no initialize) over stdio and stateless HTTP
"""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

INIT = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "raw", "version": "0"}},
}


def fail(msg: str) -> None:
    print(f"FAILED: {msg}", file=sys.stderr)
    sys.exit(1)


def post(url: str, body: bytes, headers: dict[str, str], chunked: bool = False) -> tuple[int, dict, bytes]:
    """POST `body`; a server that answers early (413) and closes is fine: its answer is read."""
    u = urlparse(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    h = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream", **headers}
    conn.putrequest("POST", u.path, skip_host="Host" in h)
    for k, v in h.items():
        conn.putheader(k, v)
    if chunked:
        conn.putheader("Transfer-Encoding", "chunked")
    else:
        conn.putheader("Content-Length", str(len(body)))
    conn.endheaders()
    try:
        step = 64 * 1024
        for i in range(0, len(body), step):
            part = body[i : i + step]
            conn.send(f"{len(part):x}\r\n".encode() + part + b"\r\n" if chunked else part)
        if chunked:
            conn.send(b"0\r\n\r\n")
    except (BrokenPipeError, ConnectionResetError):
        pass
    r = conn.getresponse()
    data = r.read()
    conn.close()
    return r.status, dict(r.getheaders()), data


def http_checks(url: str, token: str) -> None:
    auth = {"Authorization": f"Bearer {token}"}
    good = json.dumps(INIT).encode()
    s, h, _ = post(url, good, {})
    if s != 401 or "Bearer" not in h.get("www-authenticate", ""):
        fail(f"no token: {s} {h}")
    s, _, _ = post(url, good, {"Authorization": f"Bearer {token}x"})
    if s != 401:
        fail(f"wrong token: {s}")
    s, _, _ = post(url, good, {"Authorization": f"Basic {token}"})
    if s != 401:
        fail(f"basic auth: {s}")
    s, _, _ = post(url.replace("/mcp", "/other"), good, auth)
    if s != 404:
        fail(f"another path: {s}")
    big = b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"ValidateWorkflow","arguments":{"workflow":"' + b"x" * (5 * 1024 * 1024) + b'"}}}'
    s, _, _ = post(url, big, auth)
    if s != 413:
        fail(f"a 5 MiB body: {s}")
    s, _, _ = post(url, big, auth, chunked=True)
    if s != 413:
        fail(f"a 5 MiB chunked body: {s}")
    for junk in [b"not json", b"{", b"[]", b"{}", b'{"jsonrpc":"2.0","id":1}', b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":"x"}', b"\xff\xfe\x00"]:
        s, _, data = post(url, junk, auth)
        if not 400 <= s < 500 and not (s == 200 and b"error" in data):
            fail(f"malformed body {junk[:30]!r}: {s} {data[:200]!r}")
    s, _, _ = post(url, good, {**auth, "Host": "evil.example:80"})
    if s != 403:
        fail(f"a foreign Host header on loopback: {s}")
    s, h, data = post(url, good, auth)
    if s != 200:
        fail(f"initialize after all that: {s} {data[:300]!r}")
    print("ok [raw http]")


def stdio_checks(binary: str, project: str) -> None:
    p = subprocess.Popen(
        [binary, "mcp", "--project", project],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert p.stdin and p.stdout

    def send(raw: bytes) -> None:
        p.stdin.write(raw + b"\n")
        p.stdin.flush()

    garbage = [
        b"not json at all",
        b"{",
        b"[]",
        b"{}",
        b"\xff\xfe garbage \x00",
        b'{"jsonrpc":"2.0","id":"x","method":"no/such/method"}',
        b'{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"ListRuns","arguments":"oops"}}',
        b"x" * (2 * 1024 * 1024),
    ]
    for g in garbage:
        send(g)
    send(json.dumps(INIT).encode())
    send(b'{"jsonrpc":"2.0","method":"notifications/initialized"}')
    for g in garbage:
        send(g)
    send(json.dumps({"jsonrpc": "2.0", "id": 99, "method": "tools/call", "params": {"name": "ListRuns", "arguments": {"limit": 1}}}).encode())
    deadline = time.time() + 30
    seen = []
    answered = False
    while time.time() < deadline:
        line = p.stdout.readline()
        if not line:
            break
        try:
            msg = json.loads(line)
        except ValueError:
            fail(f"stdout carried something that is not a protocol message: {line[:200]!r}")
        seen.append(msg)
        if msg.get("id") == 99:
            if "result" not in msg or msg["result"].get("isError"):
                fail(f"the call after garbage: {msg}")
            answered = True
            break
    p.stdin.close()
    try:
        p.wait(timeout=20)
    except subprocess.TimeoutExpired:
        p.kill()
        fail("the server did not exit after stdin closed")
    if not answered:
        fail(f"no answer to the call after garbage; saw {json.dumps(seen)[:2000]}; stderr: {p.stderr.read()[-3000:]!r}")
    if p.returncode != 0:
        fail(f"exit status {p.returncode}; stderr: {p.stderr.read()[-3000:]!r}")
    print("ok [raw stdio]")


def start_sleeper(url: str, token: str, folder: str) -> None:
    import anyio
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client
    from mcp.shared._httpx_utils import create_mcp_http_client

    pid = Path(folder) / "sleeper.pid"
    marker = Path(folder) / "sleeper.finally"

    async def go() -> None:
        async with create_mcp_http_client(headers={"Authorization": f"Bearer {token}"}) as h:
            async with Client(streamable_http_client(url, http_client=h), mode="2026-07-28") as c:
                r = await c.call_tool("ExecuteWorkflow", {"name": "sleeper", "wait": False, "inputs": {"pidfile": str(pid), "marker": str(marker)}})
                if r.is_error:
                    fail(f"start: {r.structured_content}")
        for _ in range(400):
            if pid.exists() and pid.read_text().strip():
                print("ok [sleeper running]")
                return
            await anyio.sleep(0.05)
        fail("the sleeper never wrote its pid")

    anyio.run(go)


HANDSHAKE_VERSIONS = ["2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25"]
MODERN = "2026-07-28"
VALIDATE = {"name": "ValidateWorkflow", "arguments": {"workflow": "apiVersion: ckflow/v1\nname: x\nsteps:\n  - {id: a, tool: noop, needs: [b]}\n"}}


def modern_meta() -> dict:
    return {
        "io.modelcontextprotocol/protocolVersion": MODERN,
        "io.modelcontextprotocol/clientCapabilities": {},
        "io.modelcontextprotocol/clientInfo": {"name": "raw", "version": "0"},
    }


class Lines:
    """A `ckflow mcp` over stdio, spoken to in JSON lines."""

    def __init__(self, binary: str, project: str) -> None:
        self.p = subprocess.Popen([binary, "mcp", "--project", project], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self.next_id = 0

    def request(self, method: str, params: dict) -> dict:
        assert self.p.stdin and self.p.stdout
        self.next_id += 1
        self.p.stdin.write(json.dumps({"jsonrpc": "2.0", "id": self.next_id, "method": method, "params": params}).encode() + b"\n")
        self.p.stdin.flush()
        while True:
            line = self.p.stdout.readline()
            if not line:
                fail(f"the server closed stdout while we waited for {method}")
            msg = json.loads(line)
            if msg.get("id") == self.next_id:
                return msg

    def notify(self, method: str) -> None:
        assert self.p.stdin
        self.p.stdin.write(json.dumps({"jsonrpc": "2.0", "method": method}).encode() + b"\n")
        self.p.stdin.flush()

    def close(self) -> None:
        assert self.p.stdin
        self.p.stdin.close()
        if self.p.wait(timeout=20) != 0:
            fail(f"exit status {self.p.returncode}")


def check_validate_result(msg: dict, where: str) -> None:
    result = msg.get("result") or {}
    sc = result.get("structuredContent") or {}
    if result.get("isError") or sc.get("valid") is not False or sc["diagnostics"][0]["line"] != 4:
        fail(f"{where}: ValidateWorkflow answered {msg}")
    if json.loads(result["content"][0]["text"]) != sc:
        fail(f"{where}: the text content differs from structuredContent")


def versions(binary: str, project: str, url: str, token: str) -> None:
    for v in HANDSHAKE_VERSIONS:
        s = Lines(binary, project)
        init = s.request("initialize", {"protocolVersion": v, "capabilities": {}, "clientInfo": {"name": "raw", "version": "0"}})
        got = init.get("result", {}).get("protocolVersion")
        if got != v:
            fail(f"initialize {v}: negotiated {got} ({init})")
        s.notify("notifications/initialized")
        tools = s.request("tools/list", {})
        if len(tools["result"]["tools"]) < 8:
            fail(f"{v}: tools/list {tools}")
        check_validate_result(s.request("tools/call", VALIDATE), f"stdio {v}")
        s.close()
        print(f"ok [handshake {v} over stdio]")
    # 2026-07-28 over stdio: no initialize; discover, then self-contained requests.
    s = Lines(binary, project)
    disc = s.request("server/discover", {"_meta": modern_meta()})
    if MODERN not in json.dumps(disc.get("result", {})):
        fail(f"server/discover: {disc}")
    listed = s.request("tools/list", {"_meta": modern_meta()})
    if len(listed.get("result", {}).get("tools", [])) < 8:
        fail(f"{MODERN} tools/list: {listed}")
    check_validate_result(s.request("tools/call", {**VALIDATE, "_meta": modern_meta()}), f"stdio {MODERN}")
    s.close()
    print(f"ok [{MODERN} over stdio, no initialize]")
    # 2026-07-28 over HTTP: one POST, no session, no initialize.
    headers = {
        "Authorization": f"Bearer {token}",
        "MCP-Protocol-Version": MODERN,
        "Mcp-Method": "tools/call",
        "Mcp-Name": "ValidateWorkflow",
    }
    body = json.dumps({"jsonrpc": "2.0", "id": 5, "method": "tools/call", "params": {**VALIDATE, "_meta": modern_meta()}}).encode()
    status, h, data = post(url, body, headers)
    if status != 200 or "mcp-session-id" in {k.lower() for k in h}:
        fail(f"stateless POST: {status} {h} {data[:500]!r}")
    text = data.decode()
    if text.lstrip().startswith("{"):
        msg = json.loads(text)
    else:  # an SSE stream: the last `data:` line is the response
        msg = json.loads([ln[5:] for ln in text.splitlines() if ln.startswith("data:") and ln[5:].strip()][-1])
    check_validate_result(msg, f"http {MODERN}")
    print(f"ok [{MODERN} over HTTP, stateless]")


if __name__ == "__main__":
    cmd, *rest = sys.argv[1:]
    {"http": http_checks, "stdio": stdio_checks, "start_sleeper": start_sleeper, "versions": versions}[cmd](*rest)
