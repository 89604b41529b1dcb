"""Translation between client protocols and upstream protocols: Chat Completions <-> Anthropic
Messages both ways (streams included), and structured output on Anthropic deployments."""
