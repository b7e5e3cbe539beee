"""Token counts before sending: Anthropic's `count_tokens` endpoint, or the offline estimate."""

from __future__ import annotations

import os

from providers import provider_capabilities
from settings import Settings
from workflows.calls import CallRequest
from workflows.tokens import request_tokens


def count_tokens(request: CallRequest, settings: Settings) -> tuple[int, bool]:
    """(prompt tokens, estimated?) of one request; free with Claude, a local estimate offline."""
    key = settings.anthropic_api_key
    if not provider_capabilities(settings).counts_tokens or key is None:  # only Claude counts, with its key
        return request_tokens(request), True
    # The SDK (~2 s of import) is loaded only when Claude is really asked: every command imports this
    # module (costs, estimates), most never count with the API.
    import anthropic

    from providers.anthropic_provider import _client, build_params, translate

    params = build_params(request)
    client = _client(key.get_secret_value(), settings.anthropic_base_url, settings.call_timeout_s, os.getpid())
    try:
        counted = client.messages.count_tokens(model=params["model"], messages=params["messages"],
                                               system=params.get("system", anthropic.omit))
    except anthropic.AnthropicError as exc:
        raise translate(exc) from exc
    return counted.input_tokens, False
