"""For curators: export the corpora, write their card, inspect and report on an output folder.

- `export`: join the stage outputs into MF-Skills / MF-Think shards (the `export` stage).
- `facts`: counts, rejects, models, tools and licences of an output folder.
- `card`: the dataset card (README.md) written from those facts.
- `inspect`: `mfpipe inspect` (rich tables in the terminal).
- `report`: `mfpipe report` (one self-contained HTML page with plots).
- `af3`: `mfpipe export --format af3-json` (Audio Flamingo training conversations).
"""
