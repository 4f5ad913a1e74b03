"""The human-review sections of the dataset card (Markdown) and of `report.html` (HTML).

Each takes the caller's own table helper, so the sections look like the rest
of their page: `card(manifest["reviews"], card._table)`,
`report(overview(store), report._table)`.
"""

from __future__ import annotations

import html
from collections.abc import Callable
from typing import Any

from .agreement import kappa_rows, table_rows

Table = Callable[..., str]
RULES_TEXT = ("A person rejects an item by dropping or editing it. Precision: of the items a judge rejected, "
              "the share people rejected too; recall: of the items people rejected, the share the judge "
              "caught. Over the caption and QA items reviewed, on their current text.")
KAPPA_TEXT = "Agreement between reviewers on the items both reviewed (reject or not), Cohen's kappa."
APPLIED_TEXT = ("The latest decision on an item's current text counts, whoever made it: a drop removes the "
                "item, an edit replaces its text, a keep or edit brings back an item the filter left out "
                "(`quality.status = reviewed`). A decision on a text regenerated since is stale: not applied. "
                "Reviewed rows carry a `review` entry in their provenance.")


def card(reviews: dict[str, Any] | None, table: Table) -> str:
    out = ["\n## Human review\n\n"]
    if not reviews or not reviews.get("decisions"):
        out.append("No item has been reviewed (`mfpipe review`): every row is as the pipeline made it.\n")
        return "".join(out)
    out.append(f"{reviews['decisions']} decisions by {len(reviews['reviewers'])} reviewer(s): "
               f"{', '.join(reviews['reviewers'])}. {APPLIED_TEXT}\n\n")
    rows = [[name, skill, c["reviewed"], c["keep"], c["drop"], c["edit"], c["restored"], c["stale"]]
            for name, skills in reviews["items"].items() for skill, c in skills.items()]
    out.append(table(["table", "skill", "reviewed", "kept", "dropped", "edited", "brought back",
                      "stale (not applied)"], rows))
    agreement = reviews.get("agreement") or {}
    if agreement.get("rules"):
        out.append(f"\n### The quality filter and the MIR rules against people\n\n{RULES_TEXT}\n\n")
        out.append(table(*table_rows(agreement)))
    if agreement.get("reviewer_pairs"):
        out.append(f"\n{KAPPA_TEXT}\n\n")
        out.append(table(*kappa_rows(agreement)))
    return "".join(out)


def report(overview: dict[str, Any] | None, table: Table) -> str:
    parts = ["<h2>Human review: the filter against people</h2>"]
    if not overview:
        parts.append('<p class="note" data-section="review">Nobody has reviewed an item yet '
                     "(<code>mfpipe review OUT</code>).</p>")
        return "".join(parts)
    parts.append(f'<p data-section="review">{overview["decisions"]} decisions by '
                 f"{html.escape(', '.join(overview['reviewers']))}. {html.escape(RULES_TEXT)}</p>")
    counts = [[skill, c.get("reviewed", 0), c.get("keep", 0), c.get("drop", 0), c.get("edit", 0), c.get("stale", 0)]
              for skill, c in overview["counts"].items()]
    parts.append(table(["skill", "reviewed", "kept", "dropped", "edited", "stale"], counts, {1, 2, 3, 4, 5}))
    agreement = overview["agreement"]
    if agreement.get("rules"):
        headers, rows = table_rows(agreement)
        parts.append('<div data-table="agreement">' + table(headers, rows, {2, 3, 4, 5, 6, 7, 8}) + "</div>")
    if agreement.get("reviewer_pairs"):
        headers, rows = kappa_rows(agreement)
        parts.append(f"<p>{html.escape(KAPPA_TEXT)}</p>" + '<div data-table="kappa">'
                     + table(headers, rows, {2, 3, 4}) + "</div>")
    return "".join(parts)
