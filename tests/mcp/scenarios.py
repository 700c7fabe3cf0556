"""MCP scenarios against `ckflow mcp`, driven by tests/mcp.rs through the official Python SDK.

Each scenario is a coroutine taking the parsed arguments (see harness.py); it raises
`Failed` with what it saw when something is off. The project the Rust side prepares holds:
  workflows/hello.yaml     inputs `who` (default "world"), one noop step
  workflows/failing.yaml   a step that fails (render_template of a missing file)
  workflows/broken.yaml    an invalid workflow
  workflows/sleeper.yaml   a shell step that sleeps (pid to a file), a `finally` marker
  workflows/evil.yaml      a symlink to ../outside.yaml (outside workflows/)
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from pathlib import Path

import anyio
from mcp import MCPError

from harness import call, check, connect, main, structured

CKFLOW_TOOLS = [
    "ExecuteWorkflow",
    "ExecuteCustomWorkflow",
    "ValidateWorkflow",
    "ListWorkflows",
    "GetRun",
    "ListRuns",
    "CancelRun",
    "ListTools",
]

HELLO_YAML = """apiVersion: ckflow/v1
name: hi
inputs:
  n: {type: integer, default: 1}
steps:
  - id: first
    tool: noop
    with: {n: "{{inputs.n}}"}
  - id: second
    tool: noop
    needs: [first]
    with: {twice: "{{steps.first.outputs.n}}"}
"""

BAD_YAML = """apiVersion: ckflow/v1
name: bad
steps:
  - id: build
    tool: noop
    needs: [nothing]
  - id: push
    tool: no_such_tool
"""

SHELL_YAML = """apiVersion: ckflow/v1
name: sneaky
steps:
  - id: ok
    tool: noop
  - id: pwn
    tool: shell
    with: {run: "id"}
"""


async def basics(args) -> None:
    async with connect(args) as c:
        # -- tools/list: every ckflow tool and every registry tool, with schemas and hints
        listed = {t.name: t for t in (await c.list_tools()).tools}
        for name in CKFLOW_TOOLS + ["noop", "shell", "render_template", "push_image"]:
            check(name in listed, f"tools/list has {name}", sorted(listed))
        ann = {n: listed[n].annotations for n in listed}
        for n in ["ValidateWorkflow", "ListWorkflows", "GetRun", "ListRuns", "ListTools"]:
            check(ann[n] and ann[n].read_only_hint is True, f"{n} is readOnly", str(ann[n]))
        for n in ["ExecuteWorkflow", "ExecuteCustomWorkflow", "push_image", "shell"]:
            check(ann[n] and ann[n].destructive_hint is True, f"{n} is destructive", str(ann[n]))
        check(listed["noop"].output_schema is not None, "registry tools carry their output schema")
        check(listed["ExecuteCustomWorkflow"].input_schema["required"] == ["workflow"], "schema", listed["ExecuteCustomWorkflow"].input_schema)

        # -- ListTools: the registry with schemas
        err, lt = await call(c, "ListTools")
        names = {t["name"]: t for t in lt["tools"]}
        check(not err and "shell" in names and names["shell"]["host_exec"] is True, "ListTools", lt)
        check("input_schema" in names["noop"] and "output_schema" in names["noop"], "ListTools schemas", names["noop"])

        # -- ExecuteCustomWorkflow: YAML text, JSON object, JSON text
        err, rep = await call(c, "ExecuteCustomWorkflow", {"workflow": HELLO_YAML, "inputs": {"n": 7}})
        check(not err and rep["status"] == "succeeded", "YAML text runs", rep)
        check(rep["steps"]["first"]["outputs"] == {"n": 7} and rep["steps"]["second"]["outputs"] == {"twice": 7}, "outputs flow", rep)
        check(rep["run_id"] and rep["session_id"], "the report names the run and the session", rep)
        obj = {
            "apiVersion": "ckflow/v1",
            "name": "from-object",
            "steps": [{"id": "a", "tool": "noop", "with": {"k": "v"}}],
        }
        err, rep2 = await call(c, "ExecuteCustomWorkflow", {"workflow": obj})
        check(not err and rep2["steps"]["a"]["outputs"] == {"k": "v"}, "a JSON object runs", rep2)
        check(rep2["session_id"] != rep["session_id"], "a call without session_id gets a new session", rep, rep2)
        err, rep3 = await call(c, "ExecuteCustomWorkflow", {"workflow": json.dumps(obj)})
        check(not err and rep3["workflow"] == "from-object", "JSON text runs", rep3)

        # -- ValidateWorkflow: every problem with line, column and path
        err, v = await call(c, "ValidateWorkflow", {"workflow": BAD_YAML})
        check(not err and v["valid"] is False, "an invalid workflow is reported as invalid", v)
        by_path = {d["path"]: d for d in v["diagnostics"]}
        need = by_path.get("steps[0].needs[0]")
        check(need and need["line"] == 6 and need["column"] > 0 and need["code"] == "E021", "unknown need at line 6", v)
        tool = by_path.get("steps[1].tool")
        check(tool and tool["line"] == 8 and tool["code"] == "E030", "unknown tool at line 8", v)
        for d in v["diagnostics"]:
            check({"code", "message", "path", "line", "column"} <= set(d), "diagnostic fields", d)
        err, v = await call(c, "ValidateWorkflow", {"workflow": HELLO_YAML})
        check(not err and v == {"valid": True, "diagnostics": []}, "a valid workflow", v)
        err, v = await call(c, "ValidateWorkflow", {"workflow": {"apiVersion": "ckflow/v1", "name": "x", "steps": [{"id": "a"}]}})
        check(not err and not v["valid"] and v["diagnostics"][0]["path"].startswith("steps[0]"), "objects are validated too", v)

        # -- an invalid workflow or bad inputs given to Execute* are isError results
        err, r = await call(c, "ExecuteCustomWorkflow", {"workflow": BAD_YAML})
        check(err and r["error"] == "invalid_workflow" and len(r["diagnostics"]) >= 2, "invalid custom workflow", r)
        err, r = await call(c, "ExecuteCustomWorkflow", {"workflow": HELLO_YAML, "inputs": {"n": "many"}})
        check(err and r["error"] == "invalid_inputs", "wrongly typed input", r)
        err, r = await call(c, "ExecuteCustomWorkflow", {"workflow": 42})
        check(err and r["error"] == "invalid_arguments", "a number is not a workflow", r)
        err, r = await call(c, "ExecuteCustomWorkflow", {"workflow": HELLO_YAML, "bogus": 1})
        check(err and "bogus" in r["message"], "unknown arguments are named", r)

        # -- host-executing tools are refused for custom workflows and direct calls
        err, r = await call(c, "ExecuteCustomWorkflow", {"workflow": SHELL_YAML})
        check(err and r["error"] == "host_exec_refused" and "--allow-host-exec" in r["message"] and "shell" in r["message"], "shell refused", r)
        err, v = await call(c, "ValidateWorkflow", {"workflow": SHELL_YAML})
        check(not err and v["valid"] and "pwn" in v["host_exec_refused"][0], "ValidateWorkflow warns of the refusal", v)
        err, r = await call(c, "shell", {"run": "id"})
        check(err and r["error"] == "host_exec_refused" and "--allow-host-exec" in r["message"], "direct shell refused", r)

        # -- paths stay inside the project: in custom workflows and in direct tool calls
        outside = os.path.join(os.path.dirname(os.path.abspath(args.project)), "ckflow-escape.txt")
        escape = ("apiVersion: ckflow/v1\nname: escape\nsteps:\n  - id: w\n    tool: render_template\n"
                  f"    with: {{template: pwned, output: '{outside}'}}\n")
        err, r = await call(c, "ExecuteCustomWorkflow", {"workflow": escape})
        check(err and r["steps"]["w"]["error"]["code"] == "PATH_OUTSIDE_PROJECT" and not os.path.exists(outside),
              "a custom workflow cannot write outside the project", r)
        err, r = await call(c, "ExecuteCustomWorkflow", {"workflow": escape.replace(outside, "../x/../../etc/passwd-copy")})
        check(err and r["steps"]["w"]["error"]["code"] == "PATH_OUTSIDE_PROJECT", "nor with ..", r)
        err, r = await call(c, "validate_dockerfile", {"path": "/etc/passwd"})
        check(err and "PATH_OUTSIDE_PROJECT" in r["message"], "a direct tool call cannot read outside the project", r)
        err, r = await call(c, "ExecuteWorkflow", {"name": "containerize", "inputs": {"image": "x", "path": "/etc"}})
        check(err and r["steps"]["analyze"]["error"]["code"] == "PATH_OUTSIDE_PROJECT",
              "nor a project workflow given an outside path by the client", r)

        # -- ExecuteWorkflow: names only, inside workflows/
        err, r = await call(c, "ExecuteWorkflow", {"name": "hello", "inputs": {"who": "mcp"}})
        check(not err and r["status"] == "succeeded" and r["steps"]["greet"]["outputs"]["greeting"] == "hello mcp", "a project workflow runs", r)
        for bad in ["../outside", "/etc/passwd", "workflows/hello", "..", "hello.yaml", "evil"]:
            err, r = await call(c, "ExecuteWorkflow", {"name": bad})
            check(err and r["error"] == "refused", f"`{bad}` is refused", r)
        err, r = await call(c, "ExecuteWorkflow", {"name": "nope"})
        check(err and r["error"] == "not_found" and "hello" in r["message"], "unknown names list the known ones", r)
        err, r = await call(c, "ExecuteWorkflow", {"name": "broken"})
        check(err and r["error"] == "invalid_workflow" and r["diagnostics"][0]["line"] > 0, "a broken project workflow", r)

        # -- a failed run is an isError result with the report
        err, r = await call(c, "ExecuteWorkflow", {"name": "failing"})
        check(err and r["status"] == "failed" and r["steps"]["render"]["error"]["class"] == "not_found", "failed run", r)

        # -- ListWorkflows
        err, lw = await call(c, "ListWorkflows")
        wfs = {w["name"]: w for w in lw["workflows"]}
        check(not err and {"hello", "failing", "broken", "sleeper"} <= set(wfs) and "evil" not in wfs, "ListWorkflows", lw)
        check(wfs["hello"]["inputs"]["who"]["default"] == "world" and wfs["hello"]["description"], "inputs and description", wfs["hello"])
        check(wfs["broken"]["valid"] is False, "invalid workflows are marked", wfs["broken"])
        check(wfs["hello"]["origin"] == "project" and wfs.get("containerize", {}).get("origin") == "shipped"
              and wfs["containerize"]["valid"] and wfs["containerize"]["inputs"]["image"]["required"],
              "the shipped containerize workflow is listed beside the project's", wfs.get("containerize"))
        # -- a shipped workflow runs by NAME (here on a folder that is not there: a failed run, not a refusal)
        err, r = await call(c, "ExecuteWorkflow", {"name": "containerize", "inputs": {"image": "x", "path": "no-such-dir"}})
        check(err and r.get("workflow") == "containerize" and r["steps"]["analyze"]["error"]["class"] == "not_found",
              "ExecuteWorkflow falls back to the shipped containerize", r)

        # -- wait: false, then GetRun follows the run
        err, started = await call(c, "ExecuteWorkflow", {"name": "hello", "wait": False})
        check(not err and started["run_id"] and started["session_id"], "wait false returns ids", started)
        detail = None
        for _ in range(100):
            err, detail = await call(c, "GetRun", {"run_id": started["run_id"]})
            check(not err, "GetRun", detail)
            if detail["status"] != "running":
                break
            await anyio.sleep(0.05)
        check(detail["status"] == "succeeded" and detail["run"]["session"] == started["session_id"], "GetRun follows it to the end", detail)
        check(any(s["id"] == "greet" and s["status"] == "succeeded" for s in detail["steps"]), "GetRun has the steps", detail)
        err, r = await call(c, "GetRun", {"run_id": "no-such-run"})
        check(err and r["error"] == "not_found", "unknown run", r)
        err, r = await call(c, "GetRun", {"run_id": "../../etc"})
        check(err, "a path is not a run id", r)

        # -- ListRuns
        err, lr = await call(c, "ListRuns", {"limit": 3})
        check(not err and len(lr["runs"]) == 3 and lr["runs"][0]["id"] == started["run_id"], "ListRuns newest first", lr)
        err, lr = await call(c, "ListRuns", {"status": "failed"})
        check(not err and lr["runs"] and all(x["status"] == "failed" for x in lr["runs"]), "ListRuns by status", lr)
        err, r = await call(c, "ListRuns", {"status": "sideways"})
        check(err and r["error"] == "invalid_arguments", "bad status", r)
        err, r = await call(c, "CancelRun", {"run_id": started["run_id"]})
        check(not err and r["outcome"] == "not_running", "cancelling a finished run", r)

        # -- secrets never come back
        secret = "s3cr3t-" + uuid.uuid4().hex
        wf = "apiVersion: ckflow/v1\nname: sec\ninputs:\n  token: {type: string, secret: true}\nsteps:\n  - id: use\n    tool: noop\n    with: {t: \"{{inputs.token}}\"}\n"
        err, r = await call(c, "ExecuteCustomWorkflow", {"workflow": wf, "inputs": {"token": secret}})
        check(not err and secret not in json.dumps(r), "the report is redacted", r)
        err, d = await call(c, "GetRun", {"run_id": r["run_id"]})
        check(secret not in json.dumps(d), "the stored run is redacted", d)

        # -- resources: templates, a run, a step log
        templates = [t.uri_template for t in (await c.list_resource_templates()).resource_templates]
        check("ckflow://runs/{id}" in templates and "ckflow://runs/{id}/steps/{step}/log" in templates, "resource templates", templates)
        res = await c.read_resource(f"ckflow://runs/{rep['run_id']}")
        body = json.loads(res.contents[0].text)
        check(body["run"]["id"] == rep["run_id"] and body["status"] == "succeeded", "a run resource", body)
        res = await c.read_resource(f"ckflow://runs/{rep['run_id']}/steps/first/log")
        check(res.contents[0].mime_type == "text/plain", "a step log resource", str(res))
        listed_res = [r.uri for r in (await c.list_resources()).resources]
        check(f"ckflow://runs/{rep['run_id']}" in listed_res, "runs are listed as resources", listed_res)
        for bad_uri in ["ckflow://runs/nope", "ckflow://runs/..%2F..%2Fetc", "file:///etc/passwd", f"ckflow://runs/{rep['run_id']}/steps/nope/log"]:
            try:
                await c.read_resource(bad_uri)
                check(False, f"{bad_uri} should not be readable")
            except MCPError:
                pass

        # -- registry tools called directly
        err, r = await call(c, "noop", {"echo": [1, 2]})
        check(not err and r == {"echo": [1, 2]}, "noop directly", r)
        err, r = await call(c, "render_template", {"nope": 1})
        check(err and r["error"] == "invalid_arguments", "arguments are checked against the tool's schema", r)

        # -- an unknown tool is a protocol error; the server goes on
        try:
            await c.call_tool("NoSuchTool", {})
            check(False, "an unknown tool must be a protocol error")
        except MCPError:
            pass
        err, r = await call(c, "ListRuns", {"limit": 1})
        check(not err, "still serving after errors", r)


async def sessions(args) -> None:
    publish = "apiVersion: ckflow/v1\nname: publish\nsteps:\n  - id: share\n    tool: share_context\n    with: {key: color, value: blue}\n"
    read = "apiVersion: ckflow/v1\nname: read\nsteps:\n  - id: look\n    tool: noop\n    with: {color: \"{{default context.color 'none'}}\"}\n"
    async with connect(args) as c:
        err, r1 = await call(c, "ExecuteCustomWorkflow", {"workflow": publish})
        check(not err, "publishing context", r1)
        sid = r1["session_id"]
        err, r2 = await call(c, "ExecuteCustomWorkflow", {"workflow": read, "session_id": sid})
        check(not err and r2["session_id"] == sid, "the same session", r2)
        check(r2["steps"]["look"]["outputs"]["color"] == "blue", "context from the earlier call is visible", r2)
        err, r3 = await call(c, "ExecuteCustomWorkflow", {"workflow": read})
        check(not err and r3["session_id"] != sid and r3["steps"]["look"]["outputs"]["color"] == "none", "another session does not see it", r3)
        err, lr = await call(c, "ListRuns", {"session_id": sid})
        check(not err and {x["id"] for x in lr["runs"]} == {r1["run_id"], r2["run_id"]}, "runs by session", lr)
        err, r = await call(c, "ExecuteCustomWorkflow", {"workflow": read, "session_id": "../escape"})
        check(err and r["error"] == "invalid_arguments", "a bad session id", r)
    # A new connection (a new MCP session, a new process for stdio) sees the same ckflow session.
    async with connect(args) as c:
        err, r4 = await call(c, "ExecuteCustomWorkflow", {"workflow": read, "session_id": sid})
        check(not err and r4["steps"]["look"]["outputs"]["color"] == "blue", "sessions outlive connections", r4)


def ckflow_sessions(args, *rest: str) -> tuple[int, object]:
    """`ckflow sessions ... --json` on the project's state (`<project>/.ckflow`, where the
    server keeps it): the exit code and the parsed JSON (None when it printed none)."""
    state = os.path.join(os.path.abspath(args.project), ".ckflow")
    env = {k: v for k, v in os.environ.items() if k != "CKFLOW_STATE_DIR"}
    p = subprocess.run([args.bin, "sessions", *rest, "--json", "--state-dir", state],
                       capture_output=True, text=True, env=env, timeout=60)
    return p.returncode, (json.loads(p.stdout) if p.stdout.strip() else None)


async def tool_history(args) -> None:
    """Registry tools called directly with `session_id` are in that session's history
    (SPEC §4: its runs, tool calls and errors); without one they leave no session behind."""
    sid = "direct-" + uuid.uuid4().hex[:12]
    async with connect(args) as c:
        listed = {t.name: t for t in (await c.list_tools()).tools}
        prop = listed["validate_dockerfile"].input_schema["properties"].get("session_id")
        check(prop and prop["type"] == "string" and "session_id" not in listed["validate_dockerfile"].input_schema.get("required", []),
              "registry tools advertise an optional session_id", listed["validate_dockerfile"].input_schema)

        code, before = ckflow_sessions(args, "list")
        before_ids = {x["id"] for x in before or []}
        # Without session_id: nothing is created or recorded, success or failure.
        err, r = await call(c, "validate_dockerfile", {"content": "FROM alpine:3.20\nUSER app\n"})
        check(not err and r["valid"] is True and "session_id" not in r, "a detached direct call", r)
        err, r = await call(c, "validate_dockerfile", {"content": "NOPE\n"})
        check(err and r["tool_error"]["code"] == "DOCKERFILE_INVALID", "a detached failing call", r)
        code, after = ckflow_sessions(args, "list")
        check(code == 0 and {x["id"] for x in after or []} == before_ids, "no session is created without session_id", before, after)

        # With session_id: the session is created, the result is the tool's own.
        err, r = await call(c, "validate_dockerfile", {"content": "FROM alpine:3.20\nUSER app\n", "session_id": sid})
        check(not err and r["valid"] is True and "session_id" not in r, "a direct call in a session", r)
        err, r = await call(c, "validate_dockerfile", {"content": "NOPE\n", "session_id": sid})
        check(err and r["error"] == "tool_failed" and r["tool_error"]["code"] == "DOCKERFILE_INVALID", "a failing call in a session", r)
        err, r = await call(c, "render_template", {"nope": 1, "session_id": sid})
        check(err and r["error"] == "invalid_arguments", "refused arguments in a session", r)
        err, r = await call(c, "noop", {"echo": 1, "session_id": sid})
        check(not err and r == {"echo": 1}, "the tool never sees session_id", r)
        err, r = await call(c, "noop", {"session_id": "../escape"})
        check(err and r["error"] == "invalid_arguments", "a bad session id", r)
        # share_context called directly publishes to the session; a run of it reads it.
        err, r = await call(c, "share_context", {"key": "shade", "value": "teal", "session_id": sid})
        check(not err and r["key"] == "shade", "share_context directly, in a session", r)
        read = "apiVersion: ckflow/v1\nname: read\nsteps:\n  - id: look\n    tool: noop\n    with: {shade: \"{{default context.shade 'none'}}\"}\n"
        err, r = await call(c, "ExecuteCustomWorkflow", {"workflow": read, "session_id": sid})
        check(not err and r["steps"]["look"]["outputs"]["shade"] == "teal", "a run of the session sees it", r)

    code, shown = ckflow_sessions(args, "show", sid)
    check(code == 0 and shown and shown["session"]["id"] == sid and shown["session"]["labels"].get("via") == "mcp",
          "the session exists", code, shown)
    calls = [h for h in shown["history"] if h["kind"] == "tool_call"]
    check([(h["name"], h["data"]["status"]) for h in calls] == [
        ("validate_dockerfile", "succeeded"),
        ("validate_dockerfile", "failed"),
        ("render_template", "failed"),
        ("noop", "succeeded"),
        ("share_context", "succeeded"),
    ], "every direct call is in the history, in order, with its status", shown["history"])
    ok, bad, refused = calls[0], calls[1], calls[2]
    check(ok["data"]["arguments"] == ["content"] and isinstance(ok["data"]["duration_ms"], int)
          and "error" not in ok["data"] and ok.get("run_id") is None, "a succeeded call", ok)
    check(bad["data"]["error"]["error"] == "tool_failed" and bad["data"]["error"]["code"] == "DOCKERFILE_INVALID"
          and bad["data"]["error"]["class"] == "invalid_input" and "DOCKERFILE_INVALID" in bad["message"],
          "a failed call keeps its error", bad)
    check("alpine:3.20" not in json.dumps(calls), "argument values are not stored", calls)
    check(refused["data"]["error"]["error"] == "invalid_arguments" and refused["data"]["arguments"] == ["nope"],
          "a refused call is recorded too", refused)
    check([h["kind"] for h in shown["history"]][-1] == "run", "the run follows the calls", shown["history"])


async def progress(args) -> None:
    steps = "\n".join(
        f"  - id: s{i}\n    tool: noop\n" + (f"    needs: [s{i - 1}]\n" if i else "") for i in range(5)
    )
    wf = f"apiVersion: ckflow/v1\nname: five\nsteps:\n{steps}finally:\n  - id: last\n    tool: noop\n"
    seen: list[tuple[float, float | None, str | None]] = []

    async def on_progress(p: float, total: float | None, message: str | None) -> None:
        seen.append((p, total, message))

    async with connect(args) as c:
        err, r = await call(c, "ExecuteCustomWorkflow", {"workflow": wf}, progress_callback=on_progress)
        check(not err and r["status"] == "succeeded", "the run", r)
        check([p for p, _, _ in seen] == [1, 2, 3, 4, 5, 6], "one notification per finished step, in order, before the result", seen)
        check(all(t == 6 for _, t, _ in seen), "total is the number of steps", seen)
        check([m.split()[0] for _, _, m in seen] == ["s0", "s1", "s2", "s3", "s4", "last"], "messages name the steps", seen)


def pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] not in ("Z", "X")
    except (FileNotFoundError, ProcessLookupError):
        # Gone before the open, or between the open and the read (ESRCH).
        return False


async def wait_for_file(path: Path, seconds: float = 20) -> str:
    for _ in range(int(seconds * 20)):
        if path.exists() and path.read_text().strip():
            return path.read_text().strip()
        await anyio.sleep(0.05)
    raise AssertionError(f"{path} never appeared")


async def wait_gone(pid: int, seconds: float = 15) -> None:
    for _ in range(int(seconds * 20)):
        if not pid_alive(pid):
            return
        await anyio.sleep(0.05)
    check(False, f"process {pid} is still alive after cancel")


async def cancel(args) -> None:
    tmp = Path(args.project) / "tmp" / uuid.uuid4().hex
    tmp.mkdir(parents=True)
    pidfile, marker = tmp / "pid", tmp / "finally"
    async with connect(args) as c:
        # Cancelled from the client: the request is abandoned (notifications/cancelled, or on
        # stateless HTTP the request's stream is closed).
        with anyio.CancelScope() as scope:
            async with anyio.create_task_group() as tg:

                async def run_it() -> None:
                    await c.call_tool("ExecuteWorkflow", {"name": "sleeper", "inputs": {"pidfile": str(pidfile), "marker": str(marker)}})

                tg.start_soon(run_it)
                pid = int(await wait_for_file(pidfile))
                check(pid_alive(pid), "the step's process runs", pid)
                scope.cancel()
        await wait_gone(pid)
        await wait_for_file(marker)
        err, lr = await call(c, "ListRuns", {"limit": 1})
        run_id = lr["runs"][0]["id"]
        for _ in range(100):
            err, d = await call(c, "GetRun", {"run_id": run_id})
            if d["status"] != "running":
                break
            await anyio.sleep(0.05)
        check(d["status"] == "cancelled", "the run is cancelled", d)
        steps = {s["id"]: s for s in d["steps"]}
        check(steps["sleep"]["status"] == "cancelled" and steps["cleanup"]["status"] == "succeeded", "steps killed, finally ran", d)

        # wait: false, then CancelRun.
        pidfile2, marker2 = tmp / "pid2", tmp / "finally2"
        err, started = await call(c, "ExecuteWorkflow", {"name": "sleeper", "wait": False, "inputs": {"pidfile": str(pidfile2), "marker": str(marker2)}})
        check(not err, "started", started)
        pid2 = int(await wait_for_file(pidfile2))
        err, r = await call(c, "CancelRun", {"run_id": started["run_id"]})
        check(not err and r["outcome"] == "requested", "CancelRun", r)
        await wait_gone(pid2)
        await wait_for_file(marker2)
        for _ in range(100):
            err, d = await call(c, "GetRun", {"run_id": started["run_id"]})
            if d["status"] != "running":
                break
            await anyio.sleep(0.05)
        check(d["status"] == "cancelled", "CancelRun cancelled it", d)


async def concurrency(args) -> None:
    n = 50
    results: dict[int, tuple[bool, dict]] = {}

    async with connect(args) as c:

        async def one(i: int) -> None:
            wf = {
                "apiVersion": "ckflow/v1",
                "name": f"conc-{i}",
                "inputs": {"i": {"type": "integer", "required": True}},
                "steps": [
                    {"id": "a", "tool": "noop", "with": {"i": "{{inputs.i}}"}},
                    {"id": "b", "tool": "noop", "needs": ["a"], "with": {"double": "{{steps.a.outputs.i}}{{steps.a.outputs.i}}"}},
                ],
            }
            results[i] = await call(c, "ExecuteCustomWorkflow", {"workflow": wf, "inputs": {"i": i}})

        start = time.monotonic()
        async with anyio.create_task_group() as tg:
            for i in range(n):
                tg.start_soon(one, i)
        elapsed = time.monotonic() - start
    check(len(results) == n, "every call answered", len(results))
    run_ids, session_ids = set(), set()
    for i, (err, r) in results.items():
        check(not err and r["status"] == "succeeded", f"call {i} succeeded", r)
        check(r["workflow"] == f"conc-{i}" and r["steps"]["a"]["outputs"] == {"i": i}, f"call {i} got its own result", r)
        check(r["steps"]["b"]["outputs"] == {"double": f"{i}{i}"}, f"call {i} outputs", r)
        run_ids.add(r["run_id"])
        session_ids.add(r["session_id"])
    check(len(run_ids) == n and len(session_ids) == n, "separate runs and sessions", len(run_ids), len(session_ids))
    print(f"{n} concurrent ExecuteCustomWorkflow calls in {elapsed * 1000:.0f} ms")


async def auth(args) -> None:
    for tok in [None, "wrong-" + (args.token or "")]:
        try:
            async with connect(args, token=tok) as c:
                await c.list_tools()
            check(False, f"connecting with token {tok!r} must fail")
        except Exception as e:  # the SDK raises on the 401 (an exception group under anyio)
            text = repr(e) + "".join(repr(x) for x in getattr(e, "exceptions", []))
            check("401" in text or "nauthorized" in text or "MCPError" in text or "HTTPStatusError" in text, "a 401", text)
    async with connect(args) as c:
        err, r = await call(c, "ListRuns", {"limit": 1})
        check(not err, "the right token works", r)


async def host_exec_allowed(args) -> None:
    async with connect(args) as c:
        err, r = await call(c, "ExecuteCustomWorkflow", {"workflow": "apiVersion: ckflow/v1\nname: sh\nsteps:\n  - id: hi\n    tool: shell\n    with: {run: 'echo hello from shell'}\n"})
        check(not err and r["steps"]["hi"]["outputs"]["stdout"].strip() == "hello from shell", "shell runs with --allow-host-exec", r)
        res = await c.read_resource(f"ckflow://runs/{r['run_id']}/steps/hi/log")
        check("hello from shell" in res.contents[0].text, "the step log", res.contents[0].text)
        err, r = await call(c, "shell", {"run": "echo direct"})
        check(not err and r["stdout"].strip() == "direct", "shell directly", r)
        err, r = await call(c, "validate_dockerfile", {"path": "/nonexistent/Dockerfile"})
        check(err and "PATH_OUTSIDE_PROJECT" not in r["message"] and "DOCKERFILE_NOT_FOUND" in r["message"],
              "a trusted server does not confine paths", r)


if __name__ == "__main__":
    main(
        {
            "basics": basics,
            "sessions": sessions,
            "tool_history": tool_history,
            "progress": progress,
            "cancel": cancel,
            "concurrency": concurrency,
            "auth": auth,
            "host_exec_allowed": host_exec_allowed,
        }
    )
