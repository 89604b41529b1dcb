#!/usr/bin/env bash
# tokenmeter (journal on, and journal off) side by side with the LiteLLM proxy (1 worker), all on
# the shared harness's fast mock upstream, interleaved in one run.
#
#   bench/gateway_vs_litellm.sh [extra bench.py options, e.g. --rounds 2 --duration 15]
#
# Needs the shared harness beside the project (../shared/bench) and `tokenmeter` on PATH.
# Results: $OUT/report.md (default /tmp/tokenmeter-bench/gateway-<timestamp>).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
HARNESS="${HARNESS:-$HERE/../../shared/bench}"
WORK="$(mktemp -d)"
export OUT="${OUT:-/tmp/tokenmeter-bench/gateway-$(date +%Y%m%d-%H%M%S)}"

config() {  # $1 = name, $2 = extra storage lines
  cat > "$WORK/$1.yaml" <<YAML
storage:
  url: sqlite:///$WORK/$1.db
$2
models:
  - name: mock-gpt
    deployments:
      - {backend: vllm, model: mock-gpt, api_base: "http://127.0.0.1:18080/v1"}
  - name: mock-claude
    deployments:
      - {backend: anthropic, model: mock-claude, api_base: "http://127.0.0.1:18080"}
YAML
  tokenmeter keys create --user bench --config "$WORK/$1.yaml" 2>/dev/null
}

KEY=$(config journal "  journal_dir: $WORK/journal")
KEY_OFF=$(config nojournal "  journal: false")

LITELLM_WORKERS=1 LITELLM_IMPORT_TIMES=0 "$HARNESS/run_litellm.sh" \
  --target http://127.0.0.1:4100/v1 --label tokenmeter --model mock-gpt --api-key "$KEY" \
  --cmd "tokenmeter serve --config $WORK/journal.yaml --host 127.0.0.1 --port 4100 --log-level warning" \
  --target http://127.0.0.1:4101/v1 --label tm-nojournal --model mock-gpt --api-key "$KEY_OFF" \
  --cmd "tokenmeter serve --config $WORK/nojournal.yaml --host 127.0.0.1 --port 4101 --log-level warning" \
  "$@"
echo "report: $OUT/report.md"
