"""Config: profiles, file + --set precedence, clear errors, stable hash, `mfpipe config show`."""

from __future__ import annotations

import pytest
import yaml

from mfpipe.pipeline.config import ConfigError, load_config, parse_override
from support.helpers import run_mfpipe


def test_auto_profile_follows_gpu_presence():
    assert load_config(detect_gpu=lambda: True).profile == "production"
    assert load_config(detect_gpu=lambda: False).profile == "cpu"
    assert load_config(overrides=["profile=production"], detect_gpu=lambda: False).profile == "production"


def test_profiles_differ_where_they_should():
    cpu = load_config(overrides=["profile=cpu"])
    prod = load_config(overrides=["profile=production"])
    assert cpu.ingest.resources.batch_size != prod.ingest.resources.batch_size
    assert cpu.run.object_store_mb == 1024 and prod.run.object_store_mb is None


def test_file_then_overrides_win(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("profile: cpu\ningest:\n  min_duration_s: 3\n  resources: {batch_size: 5}\n")
    cfg = load_config(f, ["ingest.resources.batch_size=7", "ingest.extensions=[.wav, .flac]"])
    assert cfg.ingest.min_duration_s == 3.0  # from the file
    assert cfg.ingest.resources.batch_size == 7  # --set beats the file
    assert cfg.ingest.extensions == [".wav", ".flac"]  # YAML values parse
    assert cfg.ingest.resources.cpus == 1.0  # untouched fields keep their defaults


def test_unknown_keys_and_bad_values_are_clear_errors(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown config key 'ingest.resurces.cpus' \(did you mean"):
        parse_override("ingest.resurces.cpus=2")
    with pytest.raises(ConfigError, match="audio.window_s: Input should be greater than 0"):
        load_config(overrides=["audio.window_s=-1"])
    with pytest.raises(ConfigError, match="expects key=value"):
        parse_override("audio.window_s")
    bad = tmp_path / "bad.yaml"
    bad.write_text("ingest:\n  colour: blue\n")
    with pytest.raises(ConfigError, match="ingest.colour: Extra inputs are not permitted"):
        load_config(bad)
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")


def test_hash_tracks_data_settings_not_run_settings():
    base = load_config(overrides=["profile=cpu"])
    assert load_config(overrides=["profile=cpu", "run.shard_max_rows=5"]).content_hash() == base.content_hash()
    assert load_config(overrides=["profile=cpu", "ingest.max_duration_s=600"]).content_hash() != base.content_hash()


def test_config_show_prints_the_resolved_yaml():
    proc = run_mfpipe("config", "show", "--set", "profile=cpu", "--set", "ingest.silence_dbfs=-70")
    shown = yaml.safe_load(proc.stdout)
    assert shown["profile"] == "cpu"
    assert shown["ingest"]["silence_dbfs"] == -70
    assert "config hash" in proc.stderr
    bad = run_mfpipe("config", "show", "--set", "nope=1", check=False)
    assert bad.returncode == 2 and "unknown config key 'nope'" in bad.stderr


def _fields(model, prefix=""):
    for name, info in model.model_fields.items():
        yield f"{prefix}{name}", info
        ann = info.annotation
        if isinstance(ann, type) and hasattr(ann, "model_fields"):
            yield from _fields(ann, f"{prefix}{name}.")


def test_every_config_field_documents_itself():
    from mfpipe.pipeline.config import config_model

    missing = [path for path, info in _fields(config_model()) if not (info.description or "").strip()]
    assert not missing, f"fields without a description: {missing}"
    shown = run_mfpipe("config", "show", "--docs", "--profile", "cpu").stdout
    assert "# Sampling temperature." in shown and yaml.safe_load(shown)["profile"] == "cpu"


def test_each_stage_owns_its_section_and_reads_only_what_it_declares():
    from mfpipe.pipeline import registry
    from mfpipe.pipeline.config import PipelineConfig, load_config
    from mfpipe.schemas import RunInfo

    assert set(PipelineConfig.model_fields) == {"profile", "run"}  # the core config defines no stage's parameters
    cfg = load_config(None, ["profile=cpu"])
    for name, cls in registry.stages().items():
        assert isinstance(cfg.stage_section(name), cls.config_model)
    caption = registry.stages()["caption"].from_config(cfg, RunInfo("r", "h"))
    assert caption.shared.audio.window_s == 30.0
    with pytest.raises(AttributeError, match="does not declare the shared section 'llm'"):
        _ = caption.shared.llm


def test_the_core_never_imports_the_orchestrator_or_the_stages():
    """Layers point one way: stages/ -> pipeline/ -> core (mfpipe/)."""
    import re
    from pathlib import Path

    import mfpipe

    core = Path(mfpipe.__file__).parent
    offenders = []
    for path in core.rglob("*.py"):
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if re.match(r"\s*(from|import)\s+(\.\.+|mfpipe\.)(pipeline|stages)\b", line):
                offenders.append(f"{path.relative_to(core.parent)}:{n}: {line.strip()}")
    assert not offenders, offenders
