"""The `vidzoo` command: a thin layer over the Python API (same names, same arguments).

One module per command group; `vidzoo train`'s options are generated from `TrainConfig`.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Optional

import typer

from vidzoo.cli import data, export, features, models, run, serve, train
from vidzoo.cli._common import console, user_errors

app = typer.Typer(
    help="vidzoo: train, evaluate and run video classifiers on your own labeled videos.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@user_errors
def quickstart_command(
    out: Path = typer.Option(Path("runs/quickstart"), help="Folder for the dataset, run, evaluation and summary.json."),
    epochs: Optional[int] = typer.Option(None, help="Override the recipe's epochs (20)."),
    videos_per_class: int = typer.Option(100, help="Synthetic videos per class."),
    workers: int = typer.Option(2, help="DataLoader worker processes."),
) -> None:
    """Make the synthetic dataset, train a light C3D-BN, evaluate it on the test split and
    predict two test videos (about 3 minutes on 2 CPU cores)."""
    from vidzoo.quickstart import quickstart

    summary = quickstart(out, epochs=epochs, videos_per_class=videos_per_class, workers=workers,
                         progress=True, log=lambda m: console.print(m, highlight=False))
    console.print(f"\n[bold green]test video accuracy {summary['test_video_accuracy']:.1%}[/] "
                  f"(clip accuracy {summary['test_clip_accuracy']:.1%}) in {summary['seconds']:.0f} s")
    console.print(f"model file: {summary['model_file']}\nrun directory: {summary['run_dir']}\n"
                  f"evaluation: {summary['eval_dir']}\nsummary: {Path(out) / 'summary.json'}")


data.register(app)
models.register(app)
train.register(app)
run.register(app)
features.register(app)
export.register(app)
serve.register(app)
app.command(name="quickstart")(quickstart_command)

# The command list shows each docstring's first paragraph as one line; typer would keep the
# docstring's own line breaks and wrap them again.
for _command in app.registered_commands:
    if _command.short_help is None and _command.callback is not None and _command.callback.__doc__:
        _command.short_help = " ".join(inspect.getdoc(_command.callback).split("\n\n")[0].split())


def main() -> None:  # pragma: no cover - console-script entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
