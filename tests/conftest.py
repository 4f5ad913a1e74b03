"""Shared fixtures for every test folder."""

from __future__ import annotations

import os

# No model hub here, nor in CI: a test that reached for one must fail fast, not hang.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
