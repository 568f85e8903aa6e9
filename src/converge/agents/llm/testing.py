"""Test LLM agents offline against ``FakeLLMServer``.

Test LLM agents offline: ``FakeLLMServer``, a real HTTP server on 127.0.0.1 that speaks
OpenAI's chat completions API and Anthropic's messages API — JSON answers and SSE streams,
tool calls, usage, error statuses — so tests drive the real SDK clients, never mocks of them.

```python
with FakeLLMServer() as server:
    server.script(Reply(text="hello", tokens_in=12, tokens_out=3), Reply(status=429))
    provider = OpenAIProvider("gpt-4o-mini", api_key="test", base_url=server.openai_url)
```

Each request takes the next scripted ``Reply`` (or ``default`` when the script is empty),
rendered in the wire format of the path it came to (``/v1/chat/completions`` or
``/v1/messages``; ``/v1/embeddings`` gets deterministic 8-dimensional vectors), streamed
when the request asks for ``stream``. Requests are recorded (``server.requests``) so a test
can check what the SDK sent. The server runs in a thread of its own (stdlib ``http.server``):
the event loop under test stays free.
"""

from __future__ import annotations

import json
import re
import threading
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

import msgspec

from converge.agents.llm.base import ToolCall

__all__ = ["FakeLLMServer", "Recorded", "Reply"]


class Reply(msgspec.Struct, frozen=True):
    """One scripted answer, provider-neutral."""

    text: str = "ok"
    """The answer's text."""
    tool_calls: tuple[ToolCall, ...] = ()
    """Tool calls the model makes."""
    tokens_in: int = 10
    """Prompt tokens reported."""
    tokens_out: int = 5
    """Completion tokens reported."""
    status: int = 200
    """The HTTP status; not 2xx sends the provider's error body."""
    raw: str | None = None
    """Send this body as is (with status 200 and JSON content type): a malformed answer."""
    delay: float = 0.0
    """Seconds to wait before answering (a slow model), on top of the server's latency."""
    model: str | None = None
    """The model named in the answer (default: the one asked for)."""


class Recorded(msgspec.Struct, frozen=True):
    """A request the server received."""

    path: str
    """The URL path."""
    headers: dict[str, str]
    """Its headers, names lower-cased."""
    body: dict[str, Any]
    """Its JSON body."""


class FakeLLMServer:
    """A scripted OpenAI- and Anthropic-speaking HTTP server on 127.0.0.1.

    Args:
        latency: seconds every answer waits before it is sent (0: none).
        default: the reply when the script is empty.
    """

    def __init__(self, *, latency: float = 0.0, default: Reply | None = None) -> None:
        self.latency = latency
        self.default = default if default is not None else Reply()
        self.requests: list[Recorded] = []
        self.record = True
        self._script: deque[Reply] = deque()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifetime --------------------------------------------------------------------------------

    def start(self) -> FakeLLMServer:
        """Listen on a free port of 127.0.0.1 and serve in a background thread."""
        if self._httpd is None:
            httpd = _HTTPServer(("127.0.0.1", 0), _handler(self))
            self._httpd = httpd
            self._thread = threading.Thread(
                target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving (idempotent); answers still waiting are cut short."""
        httpd, self._httpd = self._httpd, None
        if httpd is not None:
            self._stopping.set()
            httpd.shutdown()
            httpd.server_close()
            if self._thread is not None:
                self._thread.join()

    def __enter__(self) -> FakeLLMServer:
        return self.start()

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- addresses and script --------------------------------------------------------------------

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>``: the Anthropic SDK's ``base_url``."""
        if self._httpd is None:
            raise RuntimeError("the server is not started")
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    @property
    def openai_url(self) -> str:
        """The OpenAI SDK's ``base_url`` (``<url>/v1``)."""
        return self.url + "/v1"

    def script(self, *replies: Reply) -> None:
        """Queue replies; each request takes the next."""
        with self._lock:
            self._script.extend(replies)

    def _next(self, request: Recorded) -> Reply:
        with self._lock:
            if self.record:
                self.requests.append(request)
            return self._script.popleft() if self._script else self.default

    def _wait(self, seconds: float) -> bool:
        """Sleep ``seconds`` unless the server stops first; ``False`` if it did."""
        return seconds <= 0 or not self._stopping.wait(seconds)


class _HTTPServer(ThreadingHTTPServer):
    # The stdlib's backlog of 5 resets connections when dozens of calls open at once.
    request_queue_size = 512
    daemon_threads = True


def _handler(server: FakeLLMServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # Headers and body go out in two writes: without this, Nagle's algorithm and the
        # client's delayed ACK hold every answer back ~40 ms.
        disable_nagle_algorithm = True

        def log_message(self, format: str, *args: Any) -> None:
            pass  # quiet: tests read ``server.requests``

        def do_POST(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            raw = self.rfile.read(length) if length else b"{}"
            body = json.loads(raw or b"{}")
            request = Recorded(
                path=self.path,
                headers={k.lower(): v for k, v in self.headers.items()},
                body=body,
            )
            reply = server._next(request)
            if not server._wait(server.latency + reply.delay):
                return
            anthropic = self.path.rstrip("/").endswith("/messages")
            if self.path.rstrip("/").endswith("/embeddings") and reply.status < 300:
                self._send(200, json.dumps(_openai_embeddings(body)).encode())
                return
            if reply.raw is not None:
                self._send(200, reply.raw.encode(), "application/json")
            elif reply.status >= 300:
                error = _anthropic_error if anthropic else _openai_error
                self._send(reply.status, json.dumps(error(reply.status)).encode())
            elif body.get("stream"):
                events = _anthropic_events if anthropic else _openai_events
                self._stream(events(reply, body))
            else:
                answer = _anthropic_message if anthropic else _openai_completion
                self._send(200, json.dumps(answer(reply, body)).encode())

        def _send(self, status: int, data: bytes, ctype: str = "application/json") -> None:
            self.send_response(status)
            self.send_header("content-type", ctype)
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _stream(self, events: list[str]) -> None:
            self.send_response(200)
            self.send_header("content-type", "text/event-stream")
            self.send_header("transfer-encoding", "chunked")
            self.end_headers()
            for event in events:
                data = event.encode()
                self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")

    return Handler


def _openai_embeddings(body: dict[str, Any]) -> dict[str, Any]:
    """Deterministic 8-dimensional vectors (letter counts by bucket, normalised) per input."""
    texts = body.get("input", [])
    texts = [texts] if isinstance(texts, str) else list(texts)
    data = []
    for i, text in enumerate(texts):
        vec = [0.0] * 8
        for ch in str(text).lower():
            if ch.isalpha():
                vec[(ord(ch) - 97) % 8] += 1.0
        norm = sum(x * x for x in vec) ** 0.5 or 1.0
        data.append({"object": "embedding", "index": i, "embedding": [x / norm for x in vec]})
    tokens = sum(len(str(t).split()) for t in texts)
    return {
        "object": "list",
        "data": data,
        "model": body.get("model", ""),
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


def _pieces(text: str) -> list[str]:
    """``text`` cut into word-sized chunks, as a model streams it."""
    return re.findall(r"\s*\S+\s*", text) or ([text] if text else [])


# -- OpenAI chat completions ---------------------------------------------------------------------


def _openai_completion(reply: Reply, body: dict[str, Any]) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": reply.text or None}
    if reply.tool_calls:
        message["tool_calls"] = [
            {
                "id": c.id,
                "type": "function",
                "function": {"name": c.name, "arguments": json.dumps(c.arguments)},
            }
            for c in reply.tool_calls
        ]
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": 0,
        "model": reply.model or body.get("model", "fake"),
        "choices": [
            {
                "index": 0,
                "message": message,
                "finish_reason": "tool_calls" if reply.tool_calls else "stop",
            }
        ],
        "usage": _openai_usage(reply),
    }


def _openai_usage(reply: Reply) -> dict[str, int]:
    return {
        "prompt_tokens": reply.tokens_in,
        "completion_tokens": reply.tokens_out,
        "total_tokens": reply.tokens_in + reply.tokens_out,
    }


def _openai_events(reply: Reply, body: dict[str, Any]) -> list[str]:
    model = reply.model or body.get("model", "fake")

    def chunk(delta: dict[str, Any], finish: str | None = None) -> str:
        data = {
            "id": "chatcmpl-fake",
            "object": "chat.completion.chunk",
            "created": 0,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }
        return f"data: {json.dumps(data)}\n\n"

    events = [chunk({"role": "assistant", "content": ""})]
    events += [chunk({"content": piece}) for piece in _pieces(reply.text)]
    for i, c in enumerate(reply.tool_calls):
        function: dict[str, Any] = {"name": c.name, "arguments": ""}
        head = {"index": i, "id": c.id, "type": "function", "function": function}
        events.append(chunk({"tool_calls": [head]}))
        args = json.dumps(c.arguments)
        for part in (args[: len(args) // 2], args[len(args) // 2 :]):
            events.append(chunk({"tool_calls": [{"index": i, "function": {"arguments": part}}]}))
    events.append(chunk({}, "tool_calls" if reply.tool_calls else "stop"))
    if (body.get("stream_options") or {}).get("include_usage"):
        usage: dict[str, Any] = {
            "id": "chatcmpl-fake",
            "object": "chat.completion.chunk",
            "created": 0,
            "model": model,
            "choices": [],
            "usage": _openai_usage(reply),
        }
        events.append(f"data: {json.dumps(usage)}\n\n")
    events.append("data: [DONE]\n\n")
    return events


def _openai_error(status: int) -> dict[str, Any]:
    kind = "rate_limit_exceeded" if status == 429 else "server_error"
    return {"error": {"message": f"fake error {status}", "type": kind, "code": kind}}


# -- Anthropic messages --------------------------------------------------------------------------


def _anthropic_message(reply: Reply, body: dict[str, Any]) -> dict[str, Any]:
    content: list[dict[str, Any]] = []
    if reply.text:
        content.append({"type": "text", "text": reply.text})
    content += [
        {"type": "tool_use", "id": c.id, "name": c.name, "input": c.arguments}
        for c in reply.tool_calls
    ]
    return {
        "id": "msg_fake",
        "type": "message",
        "role": "assistant",
        "model": reply.model or body.get("model", "fake"),
        "content": content,
        "stop_reason": "tool_use" if reply.tool_calls else "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": reply.tokens_in, "output_tokens": reply.tokens_out},
    }


def _anthropic_events(reply: Reply, body: dict[str, Any]) -> list[str]:
    def event(kind: str, **data: Any) -> str:
        return f"event: {kind}\ndata: {json.dumps({'type': kind, **data})}\n\n"

    start = _anthropic_message(Reply(text="", model=reply.model), body)
    start["stop_reason"] = None
    start["usage"] = {"input_tokens": reply.tokens_in, "output_tokens": 1}
    events = [event("message_start", message=start)]
    index = 0
    if reply.text:
        events.append(
            event("content_block_start", index=0, content_block={"type": "text", "text": ""})
        )
        events += [
            event("content_block_delta", index=0, delta={"type": "text_delta", "text": piece})
            for piece in _pieces(reply.text)
        ]
        events.append(event("content_block_stop", index=0))
        index = 1
    for c in reply.tool_calls:
        block = {"type": "tool_use", "id": c.id, "name": c.name, "input": {}}
        events.append(event("content_block_start", index=index, content_block=block))
        args = json.dumps(c.arguments)
        for part in (args[: len(args) // 2], args[len(args) // 2 :]):
            delta = {"type": "input_json_delta", "partial_json": part}
            events.append(event("content_block_delta", index=index, delta=delta))
        events.append(event("content_block_stop", index=index))
        index += 1
    stop = "tool_use" if reply.tool_calls else "end_turn"
    events.append(
        event(
            "message_delta",
            delta={"stop_reason": stop, "stop_sequence": None},
            usage={"output_tokens": reply.tokens_out},
        )
    )
    events.append(event("message_stop"))
    return events


def _anthropic_error(status: int) -> dict[str, Any]:
    kind = {429: "rate_limit_error", 529: "overloaded_error"}.get(status, "api_error")
    return {"type": "error", "error": {"type": kind, "message": f"fake error {status}"}}
