"""Human review of a corpus: `mfpipe review OUT`.

- `items`: the reviewable items (caption, QA item, chain), their keys and text hashes;
- `decisions`: the append-only decision store under `OUT/reviews/`, and which decision counts;
- `honour`: what export does with the decisions (drops, edits, restores, provenance, counts);
- `agreement`: the quality filter and the MIR rules measured against people;
- `corpus`: the song index and one song's rows across the stage tables, for the web app;
- `media`: the song's own audio, with ranges, transcoded when a browser cannot play it;
- `app`, `serve`: the FastAPI app and its uvicorn server (templates/ and static/ ship with it).
"""
