"""Model backends behind small interfaces (AudioLM, Asr, Llm, the vLLM server) with their settings.

A stage does not care where a model runs; it asks a backend. The local models
they can load without a hub (`prepared:NAME`) are built by `mfpipe.localmodels`.
"""
