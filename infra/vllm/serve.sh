#!/usr/bin/env bash
# Start the production LLM server on a GPU node (vLLM's own environment or image):
#   infra/vllm/serve.sh                         # gpt-oss-120b on port 8000
#   VLLM_CONFIG=other.yaml infra/vllm/serve.sh
# With the official image instead:
#   docker run --gpus all -p 8000:8000 -v ~/.cache/huggingface:/root/.cache/huggingface \
#     -v "$PWD/infra/vllm:/cfg" vllm/vllm-openai:latest --config /cfg/gpt-oss-120b.yaml
set -euo pipefail
cd "$(dirname "$0")"
exec vllm serve --config "${VLLM_CONFIG:-gpt-oss-120b.yaml}" "$@"
