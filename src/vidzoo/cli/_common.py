"""What every command shares: the consoles, JSON output, and turning user errors into one clear
line (exit code 2) instead of a traceback."""

from __future__ import annotations

import functools
import json
import logging
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape

from vidzoo.settings import validation_message

console = Console()
err_console = Console(stderr=True)

F = TypeVar("F", bound=Callable[..., Any])

# The options of the commands that share their videos out among processes (extract, eval).
DISTRIBUTED = "Several processes"
INFERENCE = "Inference engine"
ENGINE_HELP = ("How the model runs: auto (measure the variants on the first clips and keep the fastest that "
               "agrees with fp32; the choice is cached per model and machine), eager, compile (torch.compile) or "
               "onnxruntime.")
PRECISION_HELP = "auto, fp32, bf16 (only where the CPU or GPU has it natively) or fp16 (CUDA)."
DEVICES_HELP = ("Processes on this machine, each on its own --device-type device (cpu: one process per share of "
                "the cores); they share the videos out (needs --out).")
STRATEGY_HELP = ("auto or ddp: as `vidzoo train` (Lightning) starts processes: it runs this command again once per "
                 "extra process, or joins those torchrun / SLURM started.")
NUM_NODES_HELP = "Machines, each running --devices processes (set MASTER_ADDR, NODE_RANK, ... as for train)."
DECODER_HELP = ("Video decoder: pyav, torchcodec (needs vidzoo's torchcodec extra and FFmpeg's shared libraries), "
                "torchcodec-cuda (torchcodec decoding with NVDEC on the GPU: needs a CUDA GPU and torchcodec's CUDA "
                "build; decodes in the main process, not in --workers), or auto (per file type, the one measured "
                "faster; never the GPU).")


def check_decoder_option(decoder: str) -> str:
    """--decoder checked before any work starts: an unknown name or a backend that cannot load
    (what to install) is one line."""
    from vidzoo.data.video import check_decoder

    return check_decoder(decoder)


def fail(message: str | BaseException, code: int = 2) -> None:
    """Print ``error: <message>`` on stderr and exit with `code`."""
    # The message is text, not markup: a path or a library's message may hold [brackets].
    err_console.print(f"[bold red]error:[/] {escape(str(message))}", highlight=False, markup=True, soft_wrap=True)
    raise typer.Exit(code=code)


def _user_error_types() -> tuple[type[BaseException], ...]:
    # Imported when a command runs, not when the CLI loads: `vidzoo --help` stays instant.
    from vidzoo.data.sources import AnnotationError
    from vidzoo.data.video import VideoDecodeError
    from vidzoo.distributed import OtherProcessFailed
    from vidzoo.model_file import ModelFileError
    from vidzoo.models._registry import UnknownModelError

    return (AnnotationError, VideoDecodeError, ModelFileError, UnknownModelError, FileNotFoundError,
            FileExistsError, NotADirectoryError, ValueError, ImportError, OtherProcessFailed)


class _ReportHandler(logging.Handler):
    """vidzoo's log records as the command's report on stderr: INFO lines as they are,
    warnings as ``warning: ...``. Looks up stderr at each record, so captured output works."""

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if record.levelno >= logging.WARNING:
            err_console.print(f"[yellow]warning:[/] {message}", highlight=False, markup=True, soft_wrap=True)
        else:
            err_console.print(message, highlight=False, markup=False, soft_wrap=True)


def report_logging() -> None:
    """Print what vidzoo's ``vidzoo.train`` logger reports (INFO and up) and every vidzoo warning."""
    root = logging.getLogger("vidzoo")
    if not any(isinstance(h, _ReportHandler) for h in root.handlers):
        root.addHandler(_ReportHandler(logging.WARNING))
        root.propagate = False
        train = logging.getLogger("vidzoo.train")
        train.setLevel(logging.INFO)
        train.addHandler(_ReportHandler(logging.INFO))
        train.propagate = False


def user_errors(command: F) -> F:
    """Run `command`; a user error (bad input, missing file, broken video, bad option) prints one
    clear line and exits 2; Ctrl-C exits 130 quietly. vidzoo's reports and warnings are printed."""

    @functools.wraps(command)
    def run(*args: Any, **kwargs: Any) -> Any:
        report_logging()
        try:
            return command(*args, **kwargs)
        except typer.Exit:
            raise
        except ValidationError as error:
            fail(validation_message(error))
        except KeyboardInterrupt:
            err_console.print("interrupted", highlight=False)
            raise typer.Exit(code=130) from None
        except Exception as error:  # noqa: BLE001 - sorted into user errors and bugs below
            if isinstance(error, _user_error_types()) or type(error).__name__ == "TrainingError":
                fail(error)
            raise

    return run  # type: ignore[return-value]


def wide_console() -> Console:
    """The console for tables: the terminal's width, or wide enough for a whole row when the
    output is not a terminal (a file, a pipe), so no column is cut."""
    return console if console.is_terminal else Console(width=250)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def print_excluded(excluded: list[dict[str, str]]) -> None:
    if excluded:
        console.print(f"[yellow]excluded {len(excluded)} video(s) that failed to decode:[/]")
        for item in excluded:
            console.print(f"  {item['path']}: {item['reason']}", highlight=False)
