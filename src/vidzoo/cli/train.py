"""``vidzoo train``: its options are generated from `TrainConfig`."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any, List, Optional

import typer

from vidzoo.cli._common import console, err_console, fail, user_errors
from vidzoo.cli._generate import option_parameters, parse_key_values

# The clip fields left unset take the pretrained model file's value, else the architecture's.
_FROM_MODEL = "the --pretrained model file's, else the architecture's"
_CLIP_FIELDS = ("frames", "frame_stride", "sampling", "size", "resize_short", "crops", "clips_per_video",
                "short_policy")
# model_args is --model-arg KEY=VALUE (repeated); norm is a mapping: config files only.
_NOT_FLAGS = ("model_args", "norm")


def _train(
    *,
    config: Optional[Path] = typer.Option(None, help="YAML/JSON file of options; flags given here override it."),
    model_arg: List[str] = typer.Option([], "--model-arg", metavar="KEY=VALUE", rich_help_panel="Model",
                                        help="A model constructor argument (repeatable), e.g. --model-arg "
                                        "width=0.25 --model-arg backbone=resnet50 (`vidzoo models NAME --json` "
                                        "lists a model's arguments)."),
    resume: Optional[Path] = typer.Option(None, help="Continue the run in this directory from its last checkpoint."),
    verbose: bool = typer.Option(False, "--verbose", help="Also show Lightning's messages and library warnings."),
    **options: Any,
) -> None:
    """Train a model on labeled videos; writes config.yaml, metrics.csv, curves.png, checkpoints,
    the model file and summary.json to the run directory (--out).

    Every option can also come from a YAML/JSON file (--config), with the same names (snake_case);
    the clip options not given come from the --pretrained model file, else the architecture."""
    from vidzoo.train.config import TrainConfig
    from vidzoo.train.run import train

    if resume is not None:
        run_config = resume / "config.yaml" if resume.is_dir() else resume.parent.parent / "config.yaml"
        cfg = TrainConfig.load(run_config)
    else:
        given = {key: value for key, value in options.items() if value is not None}
        if model_arg:
            given["model_args"] = parse_key_values(model_arg)
        if config is None and "data" not in given:
            raise ValueError("--data is required (or --config with a 'data' entry)")
        cfg = TrainConfig.load(config, **given)
    try:
        result = train(cfg, resume=resume, verbose=verbose)
    except KeyboardInterrupt:
        fail(_interrupted(Path(cfg.out) if resume is None else resume), code=130)
    except BaseException:
        run_dir = Path(cfg.out) if resume is None else resume
        if run_dir.is_dir():
            err_console.print(f"the run directory {run_dir} is kept: config.yaml and what the run wrote before it "
                              "stopped (remove it, or fix the problem and run again)", highlight=False)
        raise
    if not result.model_file:  # a DDP rank other than 0: rank 0 writes the model and reports
        return
    if result.trainable_parameters != result.total_parameters:
        console.print(f"trained {result.trainable_parameters:,} of {result.total_parameters:,} parameters")
    console.print(f"model file: [bold]{result.model_file}[/]")
    # Epochs are counted from 1 here, as the progress display counts them (summary.json and
    # metrics.csv keep Lightning's index, from 0).
    best = "" if result.best_epoch is None else f" (epoch {result.best_epoch + 1})"
    console.print(f"best val accuracy: {result.best_val_accuracy}{best}; run dir {result.run_dir}")
    if result.test is not None:
        test = result.test
        console.print(f"test: video accuracy {test['video_accuracy']:.2%}, clip accuracy {test['clip_accuracy']:.2%} "
                      f"({test['num_videos']} videos)")


def _interrupted(run_dir: Path) -> str:
    """What to say after Ctrl-C: how to continue, if there is anything to continue."""
    last = run_dir / "checkpoints" / "last.ckpt"
    if run_dir.is_file() or last.is_file():
        return f"interrupted; `vidzoo train --resume {run_dir}` continues from the last checkpoint"
    return f"interrupted before the first checkpoint: nothing to resume in {run_dir}"


def _command():
    """`_train` with one option per `TrainConfig` field, generated."""
    from vidzoo.train.config import SECTIONS, TrainConfig

    signature = inspect.signature(_train)
    fixed = [p for p in signature.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
    panels = {name: section for section, names in SECTIONS.items() for name in names}
    order = [name for names in SECTIONS.values() for name in names]
    generated = sorted(option_parameters(TrainConfig, exclude=_NOT_FLAGS, panels=panels,
                                         unset_help=dict.fromkeys(_CLIP_FIELDS, _FROM_MODEL)),
                       key=lambda p: order.index(p.name))
    command = user_errors(_train)
    command.__signature__ = signature.replace(parameters=[*generated, *fixed])
    return command


def register(app: typer.Typer) -> None:
    app.command(name="train")(_command())
