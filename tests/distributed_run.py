"""Run by tests/test_distributed.py as `python distributed_run.py SETTINGS.json`: an extraction
and an evaluation, each shared out among 2 CPU processes (gloo). Lightning starts the second
process by running this script again; the evaluation reuses the extraction's two processes.

Each process writes ``computed_rank<R>.json``: the chunks its extraction computed.
"""

import json
import sys
from pathlib import Path

import torch.distributed

from vidzoo.cli import app
from vidzoo.features import extract_features

settings = json.loads(Path(sys.argv[1]).read_text())
work = Path(settings["work"])
computed: list[int] = []
extract_features(settings["model"], settings["data"], out=work / "two.npy", per="clip", clips_per_video=2,
                 chunk_size=settings["chunk_size"], workers=0, progress=False,
                 on_chunk=lambda chunk, total: computed.append(chunk), devices=2, strategy="ddp")
(work / f"computed_rank{torch.distributed.get_rank()}.json").write_text(json.dumps(computed))
app(["eval", settings["model"], settings["data"], "--out", str(work / "eval"), "--clips-per-video", "2",
     "--chunk-size", str(settings["chunk_size"]), "--workers", "0", "--devices", "2", "--strategy", "ddp", "--json"],
    standalone_mode=False)
