"""The zoo's table (``vidzoo models``): per registered model its family, parameters, GFLOPs per
clip at its default clip, the clip, constructor arguments, layers, weights and aliases.

Counting needs every family built (on the meta device) and torch imported: seconds. The table of
the models vidzoo ships is kept in ``zoo_table.json`` beside this file, so listing the zoo takes
a fraction of a second; `rows` computes only what the file lacks (a plugin's models), and a test
checks the file against a fresh count. Regenerate it with ``python -m vidzoo.models.zoo_table``.
"""

from __future__ import annotations

import json
from importlib import metadata
from pathlib import Path
from typing import Any

TABLE_FILE = Path(__file__).with_name("zoo_table.json")


def compute_row(name: str) -> dict[str, Any]:
    """One row, counted: sizes from one build on the meta device (nothing allocated)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from vidzoo.models._registry import get_model_entry
    from vidzoo.models.factory import create_model
    from vidzoo.models.names import model_aliases

    entry = get_model_entry(name)
    row: dict[str, Any] = {"name": name, "family": entry.family, "description": entry.description,
                           "params": None, "gflops": None, "clip": None, "paper": None,
                           "arguments": list(entry.parameters()), "layers": [], "pretrained": sorted(entry.weights),
                           "aliases": model_aliases(name)}
    if entry.required():
        row["note"] = f"sizes depend on {', '.join(entry.required())}"
        return row
    with torch.device("meta"):
        model = create_model(name).eval()
        cfg = model.default_cfg
        with FlopCounterMode(display=False) as counter:
            model(torch.empty(1, cfg.in_chans, cfg.clip.frames, *cfg.clip.size))
    row.update(params=sum(p.numel() for p in model.parameters()), gflops=round(counter.get_total_flops() / 1e9, 3),
               clip=cfg.clip.model_dump(mode="json"), paper=cfg.paper_title, layers=model.layer_names())
    return row


def compute_rows(names: list[str] | None = None) -> list[dict[str, Any]]:
    """Rows for `names` (default: every registered model), counted now."""
    from vidzoo.models._registry import list_models

    return [compute_row(name) for name in (names if names is not None else list_models())]


def rows(pattern: str | None = None) -> list[dict[str, Any]]:
    """The table's rows (the shipped file's, plus counted rows for models it does not know,
    such as a plugin's), sorted by name, optionally fnmatch-filtered."""
    import fnmatch

    shipped = {row["name"]: row for row in json.loads(TABLE_FILE.read_text(encoding="utf-8"))}
    # vidzoo's own plugin (the Keras importer) is in the file; another package's models are not.
    if any(not ep.value.startswith("vidzoo.") for ep in metadata.entry_points(group="vidzoo.models")):
        from vidzoo.models._registry import list_models

        table = {**shipped, **{row["name"]: row for row in compute_rows(sorted(set(list_models()) - set(shipped)))}}
    else:
        table = shipped
    names = sorted(table) if pattern is None else fnmatch.filter(sorted(table), pattern)
    return [table[name] for name in names]


def main() -> None:  # pragma: no cover - run by hand when the zoo changes
    TABLE_FILE.write_text(json.dumps(compute_rows(), indent=1) + "\n", encoding="utf-8")
    print(f"wrote {TABLE_FILE}")


if __name__ == "__main__":  # pragma: no cover
    main()
