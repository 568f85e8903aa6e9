"""Each provider's real SDK client against a local server speaking its API: answers, streams,
tool calls on the wire, usage, errors, keys."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from converge.agents.llm import (
    AnthropicProvider,
    ChatMessage,
    ChatResponse,
    CompatibleProvider,
    LLMAgent,
    LLMError,
    LLMProvider,
    LLMUsage,
    MissingAPIKey,
    OpenAIEmbedder,
    OpenAIProvider,
    ToolCall,
    ToolSpec,
)
from converge.agents.llm._common import translate_error
from converge.agents.llm.testing import FakeLLMServer, Reply
from converge.errors import ConvergeError, ValidationError, mask_urls, shown_url
from tests.agents._llm_helpers import make_provider

HI = [ChatMessage(role="system", content="be brief"), ChatMessage(role="user", content="hi")]
ADD = ToolSpec(
    "add",
    "Add two integers.",
    {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}}},
)


async def test_a_plain_call_returns_text_model_and_usage(
    provider: Any, server: FakeLLMServer
) -> None:
    server.script(Reply(text="Hello, world", tokens_in=12, tokens_out=3))
    response = await provider.chat(HI, max_tokens=50, temperature=0.1)
    assert isinstance(provider, LLMProvider)
    assert response == ChatResponse(
        content="Hello, world",
        model=provider.model,
        usage=LLMUsage(tokens_in=12, tokens_out=3),
        finish_reason="end_turn" if provider.name == "anthropic" else "stop",
    )
    body = server.requests[-1].body
    assert body["model"] == provider.model
    assert body["temperature"] == 0.1
    if provider.name == "anthropic":
        assert body["system"] == "be brief"
        assert body["messages"] == [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]
        assert body["max_tokens"] == 50
    else:
        assert body["messages"][0] == {"role": "system", "content": "be brief"}
        field = "max_completion_tokens" if provider.name == "openai" else "max_tokens"
        assert body[field] == 50


async def test_streaming_hands_each_chunk_in_order_and_returns_the_whole(
    provider: Any, server: FakeLLMServer
) -> None:
    server.script(Reply(text="one two three four", tokens_in=7, tokens_out=4))
    chunks: list[str] = []

    async def on_chunk(chunk: str) -> None:
        chunks.append(chunk)

    response = await provider.chat(HI, on_chunk=on_chunk)
    assert chunks == ["one ", "two ", "three ", "four"]
    assert response.content == "one two three four"
    assert response.usage == LLMUsage(tokens_in=7, tokens_out=4)
    assert server.requests[-1].body["stream"] is True


@pytest.mark.parametrize("stream", [False, True])
async def test_tool_calls_come_back_decoded_and_results_go_out_as_tool_messages(
    provider: Any, server: FakeLLMServer, stream: bool
) -> None:
    call = ToolCall(id="call_1", name="add", arguments={"a": 2, "b": 3})
    server.script(Reply(text="", tool_calls=(call,)), Reply(text="5"))

    async def ignore(chunk: str) -> None:
        pass

    on_chunk = ignore if stream else None
    first = await provider.chat(HI, tools=[ADD], on_chunk=on_chunk)
    assert first.tool_calls == (call,)
    assert first.content == ""
    conversation = [
        *HI,
        ChatMessage(role="assistant", tool_calls=first.tool_calls),
        ChatMessage(role="tool", content="5", tool_call_id="call_1", name="add"),
    ]
    second = await provider.chat(conversation, tools=[ADD], on_chunk=on_chunk)
    assert second.content == "5"
    sent = server.requests[-1].body
    if provider.name == "anthropic":
        assert sent["tools"] == [
            {"name": "add", "description": "Add two integers.", "input_schema": ADD.parameters}
        ]
        assert sent["messages"][1:] == [
            {
                "role": "assistant",
                "content": [
                    {"type": "tool_use", "id": "call_1", "name": "add", "input": {"a": 2, "b": 3}}
                ],
            },
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": "call_1", "content": "5"}],
            },
        ]
    else:
        assert sent["tools"][0]["function"]["name"] == "add"
        assistant, tool = sent["messages"][2:]
        assert assistant["tool_calls"][0]["function"] == {
            "name": "add",
            "arguments": '{"a": 2, "b": 3}',
        }
        assert tool == {"role": "tool", "tool_call_id": "call_1", "content": "5"}


async def test_a_response_schema_is_sent_and_the_answer_decoded(
    provider: Any, server: FakeLLMServer
) -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    server.script(Reply(text='{"n": 4}'))
    response = await provider.chat(HI, response_schema=schema)
    assert response.parsed == {"n": 4}
    body = server.requests[-1].body
    if provider.name == "anthropic":
        assert body["output_config"] == {"format": {"type": "json_schema", "schema": schema}}
    else:
        assert body["response_format"]["json_schema"]["schema"] == schema


@pytest.mark.parametrize(
    ("status", "retryable"), [(429, True), (500, True), (503, True), (400, False), (401, False)]
)
async def test_http_errors_become_llm_errors_retryable_for_429_and_5xx(
    provider: Any, server: FakeLLMServer, status: int, retryable: bool
) -> None:
    server.script(Reply(status=status))
    with pytest.raises(LLMError) as caught:
        await provider.chat(HI)
    assert caught.value.status == status
    assert caught.value.retryable is retryable
    assert caught.value.provider == provider.name
    assert f"fake error {status}" in str(caught.value)
    assert isinstance(caught.value, ConvergeError)


@pytest.mark.parametrize("raw", ["not json at all", '{"unexpected": true}'])
async def test_a_malformed_body_is_a_typed_error(
    provider: Any, server: FakeLLMServer, raw: str
) -> None:
    server.script(Reply(raw=raw))
    with pytest.raises(LLMError, match="malformed answer") as caught:
        await provider.chat(HI)
    assert caught.value.retryable is False


async def test_an_sdk_timeout_is_a_retryable_llm_error(server: FakeLLMServer) -> None:
    for name in ("openai", "anthropic"):
        provider = make_provider(name, server, timeout=0.2)
        server.script(Reply(delay=600))
        with pytest.raises(LLMError, match="timed out") as caught:
            await provider.chat(HI)
        assert caught.value.retryable is True
        await provider.aclose()


async def test_an_unreachable_endpoint_is_a_retryable_llm_error() -> None:
    with FakeLLMServer() as gone:
        url = gone.openai_url
    provider = CompatibleProvider("m", base_url=url, timeout=2.0)
    with pytest.raises(LLMError, match="cannot reach") as caught:
        await provider.chat(HI)
    assert caught.value.retryable is True
    await provider.aclose()


@pytest.mark.parametrize(
    ("make", "variable"),
    [
        (lambda: OpenAIProvider("gpt-4o"), "OPENAI_API_KEY"),
        (lambda: AnthropicProvider("claude-haiku-4-5"), "ANTHROPIC_API_KEY"),
        (
            lambda: CompatibleProvider("m", base_url="http://x/v1", api_key_env="VLLM_KEY"),
            "VLLM_KEY",
        ),
        (lambda: OpenAIProvider("gpt-4o", api_key_env="MY_KEY"), "MY_KEY"),
    ],
)
def test_a_missing_key_is_a_typed_error_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, make: Any, variable: str
) -> None:
    for name in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "VLLM_KEY", "MY_KEY"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(MissingAPIKey, match=variable) as caught:
        make()
    assert caught.value.variable == variable
    assert isinstance(caught.value, LLMError)


async def test_keys_come_from_the_environment_and_never_show_in_repr(
    monkeypatch: pytest.MonkeyPatch, server: FakeLLMServer
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret-openai")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-secret-anthropic")
    monkeypatch.setenv("LOCAL_KEY", "sk-secret-local")
    providers = [
        OpenAIProvider("gpt-4o", base_url=server.openai_url),
        AnthropicProvider("claude-haiku-4-5", base_url=server.url),
        CompatibleProvider("m", base_url=server.openai_url, api_key_env="LOCAL_KEY"),
    ]
    for provider, secret in zip(
        providers, ["sk-secret-openai", "sk-secret-anthropic", "sk-secret-local"], strict=True
    ):
        assert "secret" not in repr(provider)
        assert "secret" not in str(vars(provider).get("base_url"))
        await provider.chat(HI)
        headers = server.requests[-1].headers
        assert secret in headers.get("authorization", "") + headers.get("x-api-key", "")
        await provider.aclose()
        await provider.aclose()  # idempotent


async def test_a_compatible_endpoint_needs_no_key(server: FakeLLMServer) -> None:
    provider = CompatibleProvider("llama3.2", base_url=server.openai_url)
    assert (await provider.chat(HI)).content == "ok"
    assert server.requests[-1].path == "/v1/chat/completions"
    await provider.aclose()


def test_importing_converge_does_not_import_the_sdks() -> None:
    code = (
        "import sys, converge, converge.agents.llm, converge.orchestration\n"
        "from converge.orchestration import kind_names; kind_names()\n"
        "from converge.agents.llm import OpenAIProvider, AnthropicProvider\n"
        "OpenAIProvider('m', api_key='k'); AnthropicProvider('m', api_key='k')\n"
        "print(sorted(m for m in ('openai', 'anthropic') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


SECRET_URL = "http://user:sk-secret-1@gateway.example:8080/v1?api_key=sk-secret-2&api-version=2024"


def test_a_url_s_credentials_never_show_in_repr() -> None:
    made: list[Any] = [
        CompatibleProvider("m", base_url=SECRET_URL),
        OpenAIProvider("gpt-4o", api_key="k", base_url=SECRET_URL),
        AnthropicProvider("claude-haiku-4-5", api_key="k", base_url=SECRET_URL),
        OpenAIEmbedder(base_url=SECRET_URL, api_key_env=None),
    ]
    made.append(LLMAgent(made[0]))
    for thing in made:
        shown = repr(thing)
        assert "sk-secret" not in shown and "user" not in shown
        assert "http://***@gateway.example:8080/v1?api_key=***&api-version=2024" in shown


def test_an_error_that_quotes_the_url_shows_it_masked() -> None:
    import openai

    # what an HTTP library raises on its own, not wrapped by the SDK
    error = translate_error(openai, "compatible", ValueError(f"cannot connect to {SECRET_URL}"))
    assert "sk-secret" not in str(error)
    assert "http://***@gateway.example:8080/v1?api_key=***" in str(error)
    assert "sk-secret" not in str(LLMError(f"gave up on {SECRET_URL}", provider="custom"))


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("http://user:sk-secret@host:port/v1", "is not a valid URL"),
        ("http://user:sk-secret@[::1/v1", "is not a valid URL"),
        ("user:sk-secret@host/v1", "http:// or https://"),
        ("ftp://user:sk-secret@host/v1", "http:// or https://"),
        ("http:///v1?token=sk-secret", "with a host"),
        ("http://user:sk secret@host/v1", "spaces or control characters"),
        ("http://user:sk-secret@host/v1\n", "spaces or control characters"),
        (42, "must be a URL"),
    ],
)
def test_a_bad_base_url_is_a_validation_error_showing_it_masked(url: Any, says: str) -> None:
    for make in (
        lambda: CompatibleProvider("m", base_url=url),
        lambda: AnthropicProvider("claude-haiku-4-5", api_key="k", base_url=url),
        lambda: OpenAIEmbedder(base_url=url, api_key_env=None),
    ):
        with pytest.raises(ValidationError, match=says) as caught:
            make()
        assert caught.value.field == "base_url"
        assert "secret" not in str(caught.value)


# A URL holds no white space or control character (``check_url`` refuses them).
_USERINFO = st.text(
    st.characters(blacklist_categories=("Cc", "Cs", "Zs", "Zl", "Zp"), blacklist_characters="/?#@"),
    min_size=1,
    max_size=20,
)
_SECRET = st.text("abcdefghijklmnopqrstuvwxyz0123456789-_.~", min_size=1, max_size=20)


@given(
    st.sampled_from(["http", "https", "ws"]),
    _USERINFO,
    st.from_regex(r"[a-z0-9.-]{1,20}(:[0-9]{1,5})?", fullmatch=True),
    st.from_regex(r"(/[a-z0-9._-]{0,8}){0,3}", fullmatch=True),
    st.sampled_from(["api_key", "token", "X-Amz-Signature", "password", "access_token"]),
    _SECRET,
)
def test_userinfo_and_secret_parameters_are_masked_in_any_url(
    scheme: str, userinfo: str, host: str, path: str, name: str, secret: str
) -> None:
    url = f"{scheme}://{userinfo}@{host}{path}?model=m&{name}={secret}#{name}={secret}"
    expected = f"{scheme}://***@{host}{path}?model=m&{name}=***#{name}=***"
    assert shown_url(url) == expected
    assert mask_urls(f"failed: {url} (refused)") == f"failed: {expected} (refused)"
    assert shown_url(f"{scheme}://{host}{path}?model=m") == f"{scheme}://{host}{path}?model=m"
