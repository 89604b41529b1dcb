"""The OpenAI Responses API (``POST /v1/responses``) on every backend.

A Responses request is translated into a Chat Completions request (``request``), which goes to
OpenAI-shaped upstreams as it is and to Anthropic through the Chat→Messages translation; the
answer comes back as a response object or as the ordered Responses event stream (``output``,
``events``); ``relay`` runs the exchange and meters it like any chat completion.
"""
