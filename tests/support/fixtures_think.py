"""Fixtures of the filter and MF-Think tests: ingest rows of the example songs, the rows filter sees,
the real filter and think stages on the tiny audio-LM and the session's vLLM server."""

from __future__ import annotations

import pytest

from mfpipe.pipeline.stage import RunInfo

from .think_data import EXAMPLES, TRUTH, config, mir_row, synth_row


@pytest.fixture(scope="session")
def tiny_audio_lm() -> str:
    """The cpu profile's tiny random-weight Music Flamingo (built once; a no-op when it exists)."""
    from mfpipe.localmodels import models_dir
    from mfpipe.localmodels.music_flamingo import prepare_tiny_music_flamingo

    return str(prepare_tiny_music_flamingo(models_dir()))


@pytest.fixture(scope="session")
def example_ingest_rows() -> dict[str, dict]:
    """Ingest's rows for the example songs (the real ingest stage measures them)."""
    from mfpipe.stages.ingest import IngestStage

    stage = IngestStage.from_config(config(), RunInfo("test-think", "ingest"))
    stage.setup()
    rows = {}
    for name in TRUTH:
        (record,) = stage.process_batch([{"source": str(EXAMPLES / name)}])
        rows[name] = record.model_dump(exclude={"provenance"})
    return rows


@pytest.fixture(scope="session")
def song_rows(example_ingest_rows) -> dict[str, dict]:
    """The rows filter sees: ingest columns + nested synthesize and mir."""
    return {name: {**row, "synthesize": synth_row(TRUTH[name]), "mir": mir_row(TRUTH[name])}
            for name, row in example_ingest_rows.items()}


@pytest.fixture(scope="session")
def filter_stage(tiny_audio_lm):
    from mfpipe.stages.filter import FilterStage

    stage = FilterStage.from_config(config(), RunInfo("test-think", "filter"))
    stage.setup()
    return stage


@pytest.fixture(scope="session")
def think_stage(tiny_audio_lm, llm_server):
    from mfpipe.stages.think import ThinkStage

    stage = ThinkStage.from_config(config(f"llm.base_url={llm_server.base_url}"),
                       RunInfo("test-think", "think"))
    stage.setup()
    yield stage
    stage.teardown()
