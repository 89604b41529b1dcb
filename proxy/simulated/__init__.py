"""Deterministic fakes of the LLM upstreams tokenmeter meters (vLLM, Azure AI, TGI, Anthropic).

They speak each provider's wire protocol on a real loopback socket, so the
gateway is exercised through its actual HTTP client stack, both in tests and
when it runs with no provider keys. Prompt text can steer them with
`[[fake:key=value]]` directives (see `directives.py`).
"""

from proxy.simulated.anthropic_app import create_anthropic_app
from proxy.simulated.openai_app import create_openai_app
from proxy.simulated.recording import FakeStats, RecordedRequest
from proxy.simulated.server import FakeServer

__all__ = [
    "FakeServer",
    "FakeStats",
    "RecordedRequest",
    "create_anthropic_app",
    "create_openai_app",
]
