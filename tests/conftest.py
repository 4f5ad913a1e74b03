"""Fixtures for every test folder, from `tests/support/` (tests import helpers from there, never from
a conftest). Folders follow the package: pipeline/, core/, backends/, stages/, mir/, lyrics/, curate/,
review/ (the review app), e2e/ (whole runs), infra/ (the deployment files)."""

from __future__ import annotations

import importlib.util
import os

import pytest

pytest_plugins = [
    "support.fixtures_vllm",  # the session's one vLLM server
    "support.fixtures_audio",  # tiny models built here, synthetic and example songs
    "support.fixtures_think",
    "support.fixtures_mir",
    "support.fixtures_lyrics",
    "support.fixtures_curate",
    "support.fixtures_screening",  # a rendered song, its copies, unrelated songs, an evaluation clip
    "support.fixtures_review",  # mfpipe review: its corpus, the server in a thread, one Chromium per module
    "support.fixtures_cluster",  # a local Ray cluster and S3 server
    "support.fixtures_toys",  # the toy stages, installed as a plugin for CLI runs
]


def pytest_configure(config):
    # No model hub here, nor in CI: a test that reaches for one must fail fast, not hang. (Set before
    # any test module imports transformers, which reads them once.)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def pytest_collection_modifyitems(config, items):
    # The cpu profile's Whisper (faster-whisper / CTranslate2, built for CUDA 12) is the `cpu` extra, which
    # scripts/install.sh installs only on machines without a GPU: there, tests that need it say why they skip.
    if importlib.util.find_spec("faster_whisper") is not None:
        return
    skip = pytest.mark.skip(reason="needs the `cpu` extra (faster-whisper), installed on machines without a GPU")
    for item in items:
        if "cpu_extra" in item.keywords:
            item.add_marker(skip)
