"""Shared fixtures for every test folder."""

from __future__ import annotations

import os

# The session's one vLLM server (`llm_server`), shared by every test folder.
pytest_plugins = ["fixtures_vllm"]

# No model hub here, nor in CI: a test that reached for one must fail fast, not hang.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
