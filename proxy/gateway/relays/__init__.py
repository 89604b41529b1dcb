"""The exchange with upstreams: the HTTP client, timed sends and reads, the OpenAI-shaped and
Anthropic relays, usage read from their answers, and the SSE response back to the client."""
