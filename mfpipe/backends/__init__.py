"""Model backends behind small interfaces (AudioLM, Asr, Llm) and the cpu-profile model builders.

A stage does not care where a model runs; it asks a backend. Modules here may
register a model builder with `mfpipe.pipeline.models.preparer` so that
`mfpipe models prepare` (run by scripts/install.sh) builds local models.
"""
