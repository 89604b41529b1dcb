"""What operators see of each request: the JSON request log and OpenTelemetry GenAI traces."""
