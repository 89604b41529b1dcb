"""tokenmeter's Grafana dashboards, generated from Python (``python -m grafana.build``)."""
