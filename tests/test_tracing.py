"""Every tool command and model call of a real job is a span in the job's trace, with sizes,
outcome and the GenAI attributes; replay makes no spans; OTLP export sends them when asked."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from temporalio.client import Client, WorkflowFailureError
from temporalio.exceptions import ApplicationError

from agentparallels import tracing, worker
from agentparallels.core.agentjob import PLANNER_MARKER, unit_marker
from agentparallels.core.errors import BREAKER_OPEN, MODEL_RETRYABLE
from agentparallels.core.models import CommandEdit, Limits, RefactorInput
from agentparallels.plugin import plugin_of
from agentparallels.replay import replayer_for
from agentparallels.testing.fake_llm import FakeLLM
from tests.support.cli import cli_env, run_cli
from tests.support.repos import make_repo, start_job
from tests.test_model_refactor import DIFF_B, FILES, GOOD_A
from tests.test_model_refactor import job as model_job

_exporter = InMemorySpanExporter()


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """This process's tracer provider keeps spans in memory (installed once per process)."""
    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        provider = TracerProvider()
        provider.add_span_processor(tracing.Scrubbed(SimpleSpanProcessor(_exporter)))
        tracing.install(provider)
    _exporter.clear()
    yield _exporter


def chain(span: ReadableSpan, finished: tuple[ReadableSpan, ...]) -> list[str]:
    """Names of ``span``'s ancestors, nearest first."""
    by_id = {s.context.span_id: s for s in finished}
    names = []
    while span.parent is not None and span.parent.span_id in by_id:
        span = by_id[span.parent.span_id]
        names.append(span.name)
    return names


def named(finished: tuple[ReadableSpan, ...], prefix: str) -> list[ReadableSpan]:
    return [s for s in finished if s.name.startswith(prefix)]


async def test_tool_commands_are_spans_under_the_job_trace(
    client: Client, spans: InMemorySpanExporter, task_queue: str, tmp_path: Path
) -> None:
    """A codemod job with a check and a test command: one span per command run, with its
    exit code and sizes, under the activity, child workflow and job that ran it."""
    repo = make_repo(tmp_path / "repo", {"pkg/__init__.py": "", "pkg/a.py": "x = 1\n"})
    job = RefactorInput(
        repository=str(repo),
        edit=CommandEdit(command="echo '# edited' >> {file}", files=("pkg/a.py",)),
        check_cmd="grep -q edited {file}",
        test_cmd="test -f pkg/a.py",
    )
    tc = client  # carries the plugin, so the tracing interceptor the CLI's clients carry
    async with worker.build_worker(tc, worker.WorkerOptions(task_queue=task_queue)):
        handle = await start_job(tc, task_queue, job)
        await asyncio.wait_for(handle.result(), 60)
        await handle.query("progress")  # polled while a job is followed: no spans
    finished = spans.get_finished_spans()
    assert not [s for s in finished if "Query" in s.name]

    (edit,) = named(finished, "execute_tool echo")
    assert edit.attributes is not None
    assert edit.attributes["gen_ai.operation.name"] == "execute_tool"
    assert edit.attributes["process.command_line"] == "echo '# edited' >> pkg/a.py"
    assert edit.attributes["process.exit.code"] == 0
    assert edit.attributes["agentparallels.outcome"] == "ok"
    assert edit.attributes["agentparallels.tool.output_bytes"] == 0
    (check,) = named(finished, "execute_tool grep")
    assert check.status.status_code == StatusCode.OK
    assert named(finished, "execute_tool ruff")  # the verification every edit gets
    (test,) = named(finished, "execute_tool test")

    (root,) = [s for s in finished if s.name == "StartWorkflow:RefactorWorkflow"]
    assert chain(check, finished) == [
        "RunActivity:refactor.edit_files",
        "StartActivity:refactor.edit_files",
        "StartChildWorkflow:ShardWorkflow",
        "StartWorkflow:RefactorWorkflow",
    ]
    assert chain(test, finished) == [
        "RunActivity:check.run",
        "StartActivity:check.run",
        "StartWorkflow:RefactorWorkflow",
    ]
    assert {s.context.trace_id for s in named(finished, "execute_tool")} == {root.context.trace_id}
    assert any(s.name == "RunWorkflow:ShardWorkflow" for s in finished)


async def test_failed_tool_command_is_an_error_span(
    client: Client, spans: InMemorySpanExporter, task_queue: str, tmp_path: Path
) -> None:
    """A check command that fails: its span says error, with the exit code."""
    repo = make_repo(tmp_path / "repo", {"a.py": "x = 1\n"})
    job = RefactorInput(
        repository=str(repo),
        edit=CommandEdit(command="echo '# edited' >> {file}"),
        check_cmd="exit 3",
        limits=Limits(breaker_threshold=1),
    )
    tc = client
    async with worker.build_worker(tc, worker.WorkerOptions(task_queue=task_queue)):
        handle = await start_job(tc, task_queue, job)
        with pytest.raises(WorkflowFailureError) as failure:
            await asyncio.wait_for(handle.result(), 60)
    assert isinstance(failure.value.cause, ApplicationError)
    assert BREAKER_OPEN in str(failure.value.cause.type)
    (failed,) = named(spans.get_finished_spans(), "execute_tool exit")
    assert failed.attributes is not None
    assert failed.attributes["process.exit.code"] == 3
    assert failed.attributes["agentparallels.outcome"] == "error"
    assert failed.attributes["error.type"] == "exit"
    assert failed.status.status_code == StatusCode.ERROR
    assert failed.status.description == "exit code 3"


async def test_model_calls_are_genai_spans_and_replay_makes_none(
    client: Client,
    spans: InMemorySpanExporter,
    task_queue: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A model-driven job whose first call gets a 500: three `chat` spans (one error, then two
    answers) with GenAI attributes, token counts and sizes, under the shard's activity; replaying
    the job's histories with the interceptor adds no span."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-tracing")
    repo = make_repo(tmp_path / "repo", FILES)
    script: list[dict[str, Any]] = [
        {"status": 500, "retry_after_ms": 10},
        {"content": GOOD_A, "usage": {"input": 120, "output": 30}},
        {"content": DIFF_B, "usage": {"input": 110, "output": 40}},
    ]
    tc = client
    with FakeLLM(script) as fake:
        async with worker.build_worker(tc, worker.WorkerOptions(task_queue=task_queue)):
            handle = await start_job(tc, task_queue, model_job(repo, fake))
            await asyncio.wait_for(handle.result(), 60)
    finished = spans.get_finished_spans()

    calls = named(finished, "chat fake-coder")
    assert len(calls) == 3
    failed, first, second = sorted(calls, key=lambda s: s.start_time or 0)
    assert failed.attributes is not None and first.attributes is not None
    assert failed.status.status_code == StatusCode.ERROR
    assert failed.attributes["error.type"] == MODEL_RETRYABLE
    assert failed.attributes["agentparallels.outcome"] == "error"
    attrs = dict(first.attributes)
    assert attrs["gen_ai.operation.name"] == "chat"
    assert attrs["gen_ai.provider.name"] == "openai" == attrs["gen_ai.system"]
    assert attrs["gen_ai.request.model"] == "fake-coder"
    assert attrs["gen_ai.usage.input_tokens"] == 120
    assert attrs["gen_ai.usage.output_tokens"] == 30
    assert attrs["gen_ai.response.finish_reasons"] == ("stop",)
    assert attrs["agentparallels.response.bytes"] == len(GOOD_A.encode())
    # The prompt as sent includes the file the step read from git, not only the messages.
    assert attrs["agentparallels.prompt.bytes"] > len(FILES["pkg/a.py"])
    assert attrs["server.address"] == "127.0.0.1"
    assert attrs["agentparallels.outcome"] == "ok"
    assert second.attributes is not None
    assert second.attributes["gen_ai.usage.output_tokens"] == 40
    for span in calls:
        assert chain(span, finished)[:4] == [
            "RunActivity:llm.call",
            "StartActivity:llm.call",
            "StartChildWorkflow:ShardWorkflow",
            "StartWorkflow:RefactorWorkflow",
        ]

    spans.clear()
    replayer = replayer_for(plugin_of(client))  # the worker's interceptor and sandbox
    await replayer.replay_workflow(await handle.fetch_history())
    await replayer.replay_workflow(
        await client.get_workflow_handle(f"{handle.id}/00-pkg").fetch_history()
    )
    assert spans.get_finished_spans() == ()


@pytest.fixture
def receiver() -> Iterator[tuple[str, list[tuple[str, bytes]]]]:
    """A loopback OTLP/HTTP receiver that records the path and body of each POST."""
    posts: list[tuple[str, bytes]] = []

    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
            posts.append((self.path, self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", posts
    finally:
        server.shutdown()
        server.server_close()


def test_otlp_export_sends_the_jobs_spans(
    receiver: tuple[str, list[tuple[str, bytes]]], tmp_path: Path, task_queue: str, address: str
) -> None:
    """With OTEL_EXPORTER_OTLP_ENDPOINT set, `agentparallels refactor` sends its job's spans to
    the receiver over OTLP/HTTP before it exits, named by OTEL_SERVICE_NAME."""
    endpoint, posts = receiver
    repo = make_repo(tmp_path / "repo", {"a.py": "x = 1\n"})
    env = cli_env(
        address,  # the fixture starts the server even when this test runs first
        OTEL_EXPORTER_OTLP_ENDPOINT=endpoint,
        OTEL_SERVICE_NAME="refactor-under-test",
    )
    done = run_cli(
        "refactor",
        str(repo),
        "--edit-cmd",
        "echo '# edited' >> {file}",
        "--task-queue",
        task_queue,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    assert posts and {path for path, _ in posts} == {"/v1/traces"}
    names, services = set(), set()
    for _, body in posts:
        request = ExportTraceServiceRequest.FromString(body)
        for resource_spans in request.resource_spans:
            for attr in resource_spans.resource.attributes:
                if attr.key == "service.name":
                    services.add(attr.value.string_value)
            for scope in resource_spans.scope_spans:
                names.update(span.name for span in scope.spans)
    assert services == {"refactor-under-test"}
    assert {"StartWorkflow:RefactorWorkflow", "execute_tool echo", "execute_tool ruff"} <= names


def test_nothing_is_exported_without_an_endpoint() -> None:
    """Without an OTLP endpoint no tracer provider is set up (spans are no-ops); with one, an
    unsupported protocol is refused with a message naming the supported ones."""
    probe = (
        "from opentelemetry import trace\n"
        "from agentparallels import tracing\n"
        "print(tracing.configure(), type(trace.get_tracer_provider()).__name__)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    plain = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env)
    assert plain.stdout.split() == ["False", "ProxyTracerProvider"], plain.stderr
    env["OTEL_EXPORTER_OTLP_ENDPOINT"] = "http://127.0.0.1:9"
    on = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env)
    assert on.stdout.split() == ["True", "TracerProvider"], on.stderr
    env["OTEL_EXPORTER_OTLP_PROTOCOL"] = "http/json"
    bad = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env)
    assert "OTEL_EXPORTER_OTLP_PROTOCOL=http/json is not supported" in bad.stderr


def test_tool_names() -> None:
    """Span names say what ran, not the path it ran from."""
    assert tracing.tool_name("/venv/bin/ruff check --fix a.py") == "ruff"
    assert tracing.tool_name("python -m pytest -q") == "pytest"
    assert tracing.tool_name("FOO=1 BAR=2 sh -c 'x'") == "sh"
    assert tracing.tool_name("") == "shell"


def test_timed_out_and_unstartable_commands_are_error_spans(
    spans: InMemorySpanExporter, tmp_path: Path
) -> None:
    """A command killed at its time limit, and one that cannot start: both error spans."""
    from agentparallels.activities._proc import run_command

    assert run_command("sleep 30", tmp_path, 0.3).timed_out
    with pytest.raises(FileNotFoundError):
        run_command("true", tmp_path / "missing", 5)
    slept, missing = spans.get_finished_spans()
    assert slept.attributes is not None and missing.attributes is not None
    assert slept.attributes["error.type"] == "timeout"
    assert slept.attributes["agentparallels.tool.timed_out"] is True
    assert slept.attributes["process.exit.code"] == -9
    assert slept.status.description == "timed out"
    assert missing.attributes["error.type"] == "FileNotFoundError"
    assert missing.status.status_code == StatusCode.ERROR


def _everything(span: ReadableSpan) -> str:
    """All the text a span exports: attributes, status, events and their attributes."""
    parts = [span.name, str(dict(span.attributes or {})), span.status.description or ""]
    parts += [f"{e.name} {dict(e.attributes or {})}" for e in span.events]
    return "\n".join(parts)


async def test_spans_carry_no_credential_and_no_file_content(
    client: Client, spans: InMemorySpanExporter, task_queue: str, tmp_path: Path
) -> None:
    """A check command whose line holds a URL with a password and whose output quotes the
    file it checks: the job fails, and no span it made (ours or Temporal's interceptor's)
    holds the password or the file's content; the command line shows the URL redacted."""
    repo = make_repo(
        tmp_path / "repo", {"a.py": "x = 1\n", "b.py": "y = 2\n# CONTENT-OF-THE-FILE\n"}
    )
    job = RefactorInput(
        repository=str(repo),
        edit=CommandEdit(command="echo '# edited' >> {file}", files=("b.py",)),
        check_cmd="echo checked https://bot:S3CRET-PW@127.0.0.1:9/r.git; cat {file}; exit 3",
        limits=Limits(breaker_threshold=1),
    )
    tc = client
    async with worker.build_worker(tc, worker.WorkerOptions(task_queue=task_queue)):
        handle = await start_job(tc, task_queue, job)
        with pytest.raises(WorkflowFailureError) as failure:
            await asyncio.wait_for(handle.result(), 60)
    assert "CONTENT-OF-THE-FILE" in str(failure.value.cause)  # the job's own report has it
    finished = spans.get_finished_spans()
    lines = [str((s.attributes or {}).get("process.command_line")) for s in finished]
    assert "echo checked https://bot:***@127.0.0.1:9/r.git; cat b.py; exit 3" in lines
    (ended,) = [s for s in finished if s.name == "CompleteWorkflow:RefactorWorkflow"]
    (exception,) = [dict(e.attributes or {}) for e in ended.events if e.name == "exception"]
    assert str(exception["exception.message"]).startswith("BreakerOpen: circuit breaker opened")
    assert "exception.stacktrace" not in exception
    for span in finished:
        text = _everything(span)
        assert "S3CRET-PW" not in text, span.name
        assert "CONTENT-OF-THE-FILE" not in text, span.name


async def test_agent_model_and_tool_calls_are_genai_spans_and_replay_makes_none(
    client: Client, spans: InMemorySpanExporter, task_queue: str, tmp_path: Path, fake: FakeLLM
) -> None:
    """An agent job of one unit: each model call a `chat` span and each tool call an
    `execute_tool <tool>` span with the GenAI attributes (tool name, the provider's call id,
    type, the unit's conversation), a refused edit an error span; no span holds the edit's
    text or the file's; replaying the job's and the unit's histories makes no span."""
    from tests.support.agent_script import CHECK, FILES, FINISH, MODEL, edit, plan, tools, unit
    from tests.test_agent import job as agent_job
    from tests.test_agent import start as start_agent

    repo = make_repo(tmp_path / "repo", {**FILES, "pkg/a.py": "def old_name() -> int:\n"
                                         "    return 1  # FILE-CONTENT-MARK\n"})  # fmt: skip
    fake.push_thread(PLANNER_MARKER, plan(unit("rename", ["pkg/a.py"])))
    read = {"name": "read_file", "arguments": {"path": "pkg/a.py"}, "id": "call-read-7"}
    fake.push_thread(
        unit_marker("rename"),
        {"tool_calls": [read], "usage": {"input": 300, "output": 20}},
        tools(edit("pkg/b.py", "old_name", "EDIT-TEXT-MARK")),  # outside its scope: refused
        tools(edit("pkg/a.py", "return 1", "return 1  # EDIT-TEXT-MARK")),
        tools(CHECK),
        tools(FINISH),
    )
    async with worker.build_worker(client, worker.WorkerOptions(task_queue=task_queue)):
        handle = await start_agent(client, task_queue, agent_job(repo, fake, test_cmd=None))
        await asyncio.wait_for(handle.result(), 240)
    finished = spans.get_finished_spans()
    unit_id = f"{handle.id}/unit-rename-1"

    chats = named(finished, "chat fake-coder")
    answered = [s for s in chats if s.status.status_code == StatusCode.OK]
    assert len(answered) == 6  # the plan and five turns (an attempt retried is one more)
    assert all(s.status.status_code == StatusCode.ERROR for s in chats if s not in answered)
    turn = next(s for s in chats if (s.attributes or {}).get("gen_ai.usage.input_tokens") == 300)
    attrs = dict(turn.attributes or {})
    assert attrs["gen_ai.operation.name"] == "chat"
    assert attrs["gen_ai.provider.name"] == "openai" == attrs["gen_ai.system"]
    assert attrs["gen_ai.request.model"] == MODEL.partition(":")[2]
    assert attrs["gen_ai.usage.output_tokens"] == 20
    assert attrs["gen_ai.response.finish_reasons"] == ("tool_calls",)
    assert attrs["gen_ai.conversation.id"] == unit_id
    assert attrs["agentparallels.response.tool_calls"] == 1

    (reading,) = named(finished, "execute_tool read_file")
    attrs = dict(reading.attributes or {})
    assert attrs["gen_ai.operation.name"] == "execute_tool"
    assert attrs["gen_ai.tool.name"] == "read_file"
    assert attrs["gen_ai.tool.call.id"] == "call-read-7"
    assert attrs["gen_ai.tool.type"] == "function"
    assert attrs["gen_ai.conversation.id"] == unit_id
    assert attrs["agentparallels.tool.ok"] is True
    assert attrs["agentparallels.tool.elapsed_ms"] >= 0
    assert reading.status.status_code == StatusCode.OK
    assert chain(reading, finished)[:2] == ["RunActivity:agent.tool", "StartActivity:agent.tool"]
    refused, edited = sorted(
        named(finished, "execute_tool edit_file"), key=lambda s: s.start_time or 0
    )
    assert refused.status.status_code == StatusCode.ERROR
    assert (refused.attributes or {})["error.type"] == "tool_error"
    assert edited.status.status_code == StatusCode.OK
    assert (edited.attributes or {})["agentparallels.tool.changed_files"] == 1
    (check,) = named(finished, "execute_tool run_check")
    assert named(finished, "execute_tool ruff")  # the command, inside the tool's span
    assert (check.attributes or {})["agentparallels.tool.check"] == "passed"
    for span in finished:
        text = _everything(span)
        assert "EDIT-TEXT-MARK" not in text and "FILE-CONTENT-MARK" not in text, span.name

    spans.clear()
    replayer = replayer_for(plugin_of(client))
    await replayer.replay_workflow(await handle.fetch_history())
    await replayer.replay_workflow(await client.get_workflow_handle(unit_id).fetch_history())
    assert spans.get_finished_spans() == ()
