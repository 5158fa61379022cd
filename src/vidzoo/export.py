"""Taking a model out of vidzoo: ONNX and torch.export files that carry their preprocessing, and
proof that they compute what the model computes.

::

    model ──export──> temporary file ──verify (real decoded clips + random clips)──> out file

An exported file embeds the model's description in its format's own metadata (ONNX:
``metadata_props["vidzoo"]``; torch.export: the archive's extra file ``vidzoo.json``): the
architecture and its arguments, the class names, the clip description (frames, stride, sampling,
size, crops, normalisation), the vidzoo version, and the SHA-256 of the model file it came from.
A user of the file needs nothing else to cut the same clips.

Export always verifies before the file appears: the original model (eager, float32) and the
exported one (ONNX Runtime for ONNX, the exported program for torch.export) run on clips decoded
from a real video and on random clips, and the largest logit difference must stay within
``atol + rtol * max|logit|`` (`TOLERANCE`: 1e-4 and 1e-4, about a hundred times what float32
re-association gives). Above it, the export fails and no file is written.

`OnnxModel` runs an exported ``.onnx`` file with ONNX Runtime and reads its description back, so
``vidzoo predict`` accepts such a file directly.

A ``.pt2`` file is read back here only right after writing it, to verify it: loading a
torch.export archive can unpickle parts of it, so load only ``.pt2`` files you trust.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import tempfile
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from vidzoo import __version__
from vidzoo.data.clip import ClipSpec
from vidzoo.data.pipeline import ClipPipeline
from vidzoo.data.synthetic import write_sample_video
from vidzoo.data.video import VideoReader
from vidzoo.fileio import file_sha256, write_atomically
from vidzoo.models._base import VideoClassifier

__all__ = ["FORMATS", "TOLERANCE", "ExportError", "ExportReport", "Check", "OnnxModel", "export_model",
           "export_metadata", "read_export_metadata", "verification_clips"]

FORMATS = ("onnx", "torch-export")
SUFFIXES = {"onnx": ".onnx", "torch-export": ".pt2"}
TOLERANCE = {"atol": 1e-4, "rtol": 1e-4}
METADATA_KEY = "vidzoo"
INPUT_NAME, OUTPUT_NAME = "clips", "logits"
_RANDOM_CLIPS = 4


class ExportError(ValueError):
    """A model that cannot be exported (naming the operator that blocks it), or an export that
    does not compute what the model computes."""


@dataclass
class Check:
    """One verification: which inputs, the largest logit difference and the allowed one."""

    inputs: str
    clips: int
    max_abs_diff: float
    max_abs_logit: float
    allowed: float
    top1_agreement: float

    @property
    def passed(self) -> bool:
        return self.max_abs_diff <= self.allowed


@dataclass
class ExportReport:
    """What `export_model` wrote and how it was verified."""

    path: str
    format: str
    dynamic_batch: bool
    batch_size: int | None  # the fixed batch size, or None with a dynamic batch
    seconds: float
    checks: list[Check] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def max_abs_diff(self) -> float:
        return max(c.max_abs_diff for c in self.checks)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["max_abs_diff"] = self.max_abs_diff
        return out


# --------------------------------------------------------------------------- metadata


def export_metadata(model: VideoClassifier) -> dict[str, Any]:
    """The description an exported file carries: what a vidzoo model file says about the model
    (architecture, arguments, classes, clip description, input channels), the vidzoo version and
    the model file's SHA-256 when the model was loaded from one."""
    source = getattr(model, "source_file", None)
    clip = model.clip_spec
    return {
        "format_version": 1,
        "arch": model.default_cfg.arch,
        "model_args": {k: (False if k.startswith("pretrained") else v)
                       for k, v in (getattr(model, "model_args", None) or {}).items()},
        "classes": list(model.classes) if model.classes is not None else None,
        "num_classes": model.num_classes,
        "clip": clip.model_dump(mode="json"),
        "in_chans": model.default_cfg.in_chans,
        "input": {"name": INPUT_NAME, "layout": "B,C,T,H,W", "dtype": "float32",
                  "shape": ["batch", model.default_cfg.in_chans, clip.frames, clip.height, clip.width],
                  "normalised": "(pixels / 255 - mean) / std, mean and std from clip.norm"},
        "output": {"name": OUTPUT_NAME, "shape": ["batch", model.num_classes], "softmax": False},
        "vidzoo_version": __version__,
        "torch_version": torch.__version__,
        "source_file": Path(source).name if source else None,
        "source_sha256": file_sha256(source) if source and Path(source).is_file() else None,
        "tensors_sha256": getattr(model, "tensors_sha256", None),
    }


def read_export_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The vidzoo description inside an exported ``.onnx`` or ``.pt2`` file. Raises ExportError
    when the file has none (exported by something else) or is not such a file."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            is_zip = f.read(4) == b"PK\x03\x04"  # a torch.export archive; ONNX is a bare protobuf
        if not is_zip:
            import onnx

            model = onnx.load(str(path), load_external_data=False)
            props = {p.key: p.value for p in model.metadata_props}
            text = props.get(METADATA_KEY)
        else:
            import zipfile

            with zipfile.ZipFile(path) as archive:
                names = [n for n in archive.namelist() if n.endswith(f"extra/{METADATA_KEY}.json")]
                text = archive.read(names[0]).decode("utf-8") if names else None
    except Exception as e:  # noqa: BLE001 - any parser error means "not a readable export"
        raise ExportError(f"{path}: not a readable ONNX or torch.export file ({type(e).__name__}: {e})") from e
    if text is None:
        raise ExportError(f"{path}: has no vidzoo description (metadata {METADATA_KEY!r}); was it exported by vidzoo?")
    return json.loads(text)


# --------------------------------------------------------------------------- running exported files


def _onnxruntime():
    try:
        import onnxruntime
    except ImportError as e:
        raise ImportError("ONNX export and the onnxruntime engine need onnx and onnxruntime: "
                          "pip install 'vidzoo[onnx]'") from e
    return onnxruntime


class OnnxModel:
    """An exported ``.onnx`` file run by ONNX Runtime, with the description it carries:
    ``clip_spec``, ``classes``, ``num_classes``. Called on a float32 clip batch
    ``(B, C, T, H, W)`` it returns float32 logits ``(B, num_classes)`` on the CPU."""

    def __init__(self, path: str | os.PathLike, *, device: str | torch.device = "cpu", threads: int | None = None):
        ort = _onnxruntime()
        self.path = Path(path)
        self.meta = read_export_metadata(self.path)
        self.clip_spec = ClipSpec(**self.meta["clip"])
        self.classes = self.meta["classes"]
        self.num_classes = int(self.meta["num_classes"])
        self.name = self.meta["arch"]
        self.tensors_sha256 = self.meta.get("tensors_sha256") or file_sha256(self.path)
        self.source_file = str(self.path)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.log_severity_level = 3  # errors only: its warnings are about graph fusions
        providers = ["CPUExecutionProvider"]
        if torch.device(device).type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        self.session = ort.InferenceSession(str(self.path), options, providers=providers)
        shape = self.session.get_inputs()[0].shape
        self.batch_size = shape[0] if isinstance(shape[0], int) else None  # None: any batch

    def __call__(self, clips: torch.Tensor) -> torch.Tensor:
        x = clips.detach().to("cpu", torch.float32).contiguous().numpy()
        if self.batch_size is None or len(x) == self.batch_size:
            return torch.from_numpy(self.session.run([OUTPUT_NAME], {INPUT_NAME: x})[0])
        # A fixed-batch file: run full batches, the last one padded.
        outs = []
        for start in range(0, len(x), self.batch_size):
            chunk = x[start:start + self.batch_size]
            n = len(chunk)
            if n < self.batch_size:
                chunk = np.concatenate([chunk, np.zeros((self.batch_size - n, *chunk.shape[1:]), np.float32)])
            outs.append(torch.from_numpy(self.session.run([OUTPUT_NAME], {INPUT_NAME: chunk})[0][:n]))
        return torch.cat(outs)


# --------------------------------------------------------------------------- exporting


class _Exportable(nn.Module):
    """The model under one top-level name with one named input. (torch.export's graph module
    has attributes such as ``graph`` that a model's own submodule names can shadow: the Keras
    importer's ``graph`` did.)"""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        return self.model(clips)


def verification_clips(spec: ClipSpec, videos: Sequence[str | os.PathLike] = (), max_clips: int = 8) -> tuple[torch.Tensor, str]:
    """Evaluation views cut from `videos` through the model's clip pipeline (or, without any, from
    a synthetic video written to a temporary folder): decoded real clips, up to `max_clips`."""
    pipeline = ClipPipeline(spec, train=False)
    with contextlib.ExitStack() as stack:
        if not videos:
            folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="vidzoo-verify-")))
            frames = max(spec.frames * max(spec.frame_stride, 1) + 8, 32)
            videos = [write_sample_video(folder / "rotate_cw.mp4", frames=frames, size=max(spec.height, spec.width) + 16)]
            what = "a synthetic video"
        else:
            what = ", ".join(Path(v).name for v in videos)
        clips = []
        for video in videos:
            with VideoReader(video) as reader:
                clips.append(pipeline.views(reader))
        out = torch.cat(clips)[:max_clips]
    return out, f"{len(out)} clips decoded from {what}"


def export_model(
    model: VideoClassifier,
    out: str | os.PathLike,
    *,
    format: str = "onnx",
    dynamic_batch: bool = False,
    batch_size: int = 1,
    verify_videos: Sequence[str | os.PathLike] = (),
) -> ExportReport:
    """Export `model` to `out` as ONNX or a torch.export program, verified (see the module doc).

    With `dynamic_batch` the file takes any batch size; otherwise exactly `batch_size` clips.
    `verify_videos` are the real videos to verify on (default: a synthetic one). Raises
    ExportError naming the blocking operator when the model cannot be exported, or giving the
    difference when the export does not match; then nothing is written.
    """
    if format not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {format!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    started = time.perf_counter()
    model = model.eval()
    spec = model.clip_spec
    meta = export_metadata(model)
    # Export at batch 2 when the batch is dynamic: at 1 the tracer specialises the batch axis.
    example_batch = 2 if dynamic_batch else batch_size
    example = torch.zeros(example_batch, model.default_cfg.in_chans, spec.frames, spec.height, spec.width)
    meta["export"] = {"format": format, "dynamic_batch": dynamic_batch, "batch_size": None if dynamic_batch else batch_size,
                      "tolerance": TOLERANCE}
    out = Path(out)
    with tempfile.TemporaryDirectory(prefix="vidzoo-export-") as tmp:
        staged = Path(tmp) / f"model{SUFFIXES[format]}"
        if format == "onnx":
            run = _export_onnx(model, example, dynamic_batch, staged, meta)
        else:
            run = _export_program(model, example, dynamic_batch, staged, meta)
        real, what = verification_clips(spec, verify_videos)
        random = torch.randn(_RANDOM_CLIPS, *example.shape[1:], generator=torch.Generator().manual_seed(0))
        checks = [_check(model, run, real, what, None if dynamic_batch else batch_size),
                  _check(model, run, random, f"{_RANDOM_CLIPS} random clips", None if dynamic_batch else batch_size)]
        failed = [c for c in checks if not c.passed]
        if failed:
            c = failed[0]
            raise ExportError(f"the {format} export of {meta['arch']} does not compute what the model computes: on "
                              f"{c.inputs} the logits differ by up to {c.max_abs_diff:.3g} (allowed {c.allowed:.3g}); "
                              "nothing was written")
        write_atomically(out, lambda tmp_path: tmp_path.write_bytes(staged.read_bytes()))
    return ExportReport(str(out), format, dynamic_batch, None if dynamic_batch else batch_size,
                        time.perf_counter() - started, checks, meta)


def _check(model: VideoClassifier, run, clips: torch.Tensor, what: str, batch: int | None) -> Check:
    with torch.no_grad():
        expected = model(clips).float()
    got = torch.cat([run(chunk) for chunk in _chunks(clips, batch)])
    biggest = float(expected.abs().max())
    return Check(
        inputs=what, clips=len(clips), max_abs_diff=float((got - expected).abs().max()), max_abs_logit=biggest,
        allowed=TOLERANCE["atol"] + TOLERANCE["rtol"] * biggest,
        top1_agreement=float((got.argmax(1) == expected.argmax(1)).float().mean()),
    )


def _chunks(clips: torch.Tensor, batch: int | None) -> Iterator[torch.Tensor]:
    if batch is None:
        yield clips
        return
    for start in range(0, len(clips), batch):
        yield clips[start:start + batch]


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    # The exporters print progress lines and warn about internals a user cannot act on.
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        yield


def _dynamic_shapes(dynamic_batch: bool) -> dict[str, Any] | None:
    return {INPUT_NAME: {0: torch.export.Dim("batch", min=1, max=4096)}} if dynamic_batch else None


def _export_onnx(model: VideoClassifier, example: torch.Tensor, dynamic_batch: bool, path: Path, meta: dict):
    try:
        import onnx
        import onnxscript  # noqa: F401 - torch's dynamo exporter needs it
    except ImportError as e:
        raise ImportError(f"ONNX export needs onnx and onnxscript ({e.name} is missing): pip install 'vidzoo[onnx]'") from e

    try:
        with _quiet():
            program = torch.onnx.export(_Exportable(model), (example,), dynamo=True, input_names=[INPUT_NAME],
                                        output_names=[OUTPUT_NAME], dynamic_shapes=_dynamic_shapes(dynamic_batch),
                                        external_data=False, verbose=False)
            program.save(str(path), external_data=False)
    except Exception as e:  # noqa: BLE001 - every exporter failure becomes one refusal with its reason
        raise ExportError(_refusal(meta["arch"], "ONNX", e)) from e
    proto = onnx.load(str(path))
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(meta)
    proto.producer_name, proto.producer_version = "vidzoo", __version__
    proto.doc_string = f"vidzoo {meta['arch']}: clips {INPUT_NAME} (B,C,T,H,W) float32, normalised -> logits"
    onnx.save(proto, str(path))
    runner = OnnxModel(path)
    return runner


def _export_program(model: VideoClassifier, example: torch.Tensor, dynamic_batch: bool, path: Path, meta: dict):
    try:
        with _quiet():
            program = torch.export.export(_Exportable(model), (example,), dynamic_shapes=_dynamic_shapes(dynamic_batch))
    except Exception as e:  # noqa: BLE001
        raise ExportError(_refusal(meta["arch"], "torch.export", e)) from e
    torch.export.save(program, str(path), extra_files={f"{METADATA_KEY}.json": json.dumps(meta)})
    module = torch.export.load(str(path)).module()

    def run(clips: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return module(clips).float()

    return run


_OPERATOR = re.compile(r"\b(aten\.[A-Za-z0-9_]+(?:\.[A-Za-z0-9_]+)?|torchvision::[A-Za-z0-9_]+)")


def _refusal(arch: str, exporter: str, error: BaseException) -> str:
    """One line: which model, which exporter, the operator that blocks it (when the exporter
    names one), and the exporter's own first line."""
    text = str(error)
    operators = sorted(set(_OPERATOR.findall(text)))
    first = next((line.strip() for line in text.splitlines() if line.strip()), type(error).__name__)
    blocked = f"operator(s) {', '.join(operators)} not supported" if operators else "the exporter failed"
    return f"{arch} cannot be exported with {exporter}: {blocked} ({type(error).__name__}: {first[:300]})"
