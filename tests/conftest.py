"""Fixtures for every test folder, from `tests/support/` (tests import helpers from there, never from
a conftest). Folders follow the package: pipeline/, core/, backends/, stages/, mir/, lyrics/, curate/,
e2e/ (whole runs), infra/ (the deployment files)."""

from __future__ import annotations

import os

pytest_plugins = [
    "support.fixtures_vllm",  # the session's one vLLM server
    "support.fixtures_audio",  # tiny models built here, synthetic and example songs
    "support.fixtures_think",
    "support.fixtures_mir",
    "support.fixtures_lyrics",
    "support.fixtures_curate",
    "support.fixtures_cluster",  # a local Ray cluster and S3 server
    "support.fixtures_toys",  # the toy stages, installed as a plugin for CLI runs
]


def pytest_configure(config):
    # No model hub here, nor in CI: a test that reaches for one must fail fast, not hang. (Set before
    # any test module imports transformers, which reads them once.)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
