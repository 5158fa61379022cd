"""Inference engines: how a model's forward pass runs when nothing is trained.

`build_engine(model)` returns an `Engine`: a callable from clip batches ``(B, C, T, H, W)`` to
float32 logits on the CPU, with the model's ``clip_spec`` and ``classes``. ``predict``, ``eval``,
``extract`` and ``serve`` run every model through one. A variant is an engine, a precision and
a memory format:

- ``eager``: the PyTorch module under ``torch.inference_mode``;
- ``compile``: ``torch.compile`` with freezing (weights folded into the compiled graph), at a
  fixed batch size (the last batch is padded: a new shape would compile again);
- ``onnxruntime``: the model exported to ONNX (verified, cached per model) run by ONNX Runtime;
- precision ``fp32``, ``bf16`` (autocast; only where the hardware has it: the CPU flags
  avx512_bf16 or amx_bf16, or a CUDA device that supports it) or ``fp16`` (CUDA, or CPUs with
  avx512_fp16/amx_fp16);
- channels-last memory (``channels_last_3d`` for 5-D weights and clips, ``channels_last`` for
  the 4-D weights of per-frame CNNs), which the CPU's oneDNN convolutions prefer.

``engine="auto"`` (with ``precision="auto"``) calibrates: it runs eager fp32 (the reference) and
each candidate on the job's first clips, keeps the candidates whose top-1 agrees with the
reference on at least `AGREEMENT` of the clips and whose class probabilities differ from it by
at most `PROB_TOLERANCE`, and picks the fastest. ``compile`` and ``onnxruntime`` are candidates
only when the job is long enough to repay their setup (compiling, exporting) at the speed-up they
are expected to give. The measurements are cached per (model hash, machine, torch version,
device, clip shape) in ``~/.cache/vidzoo/engines.json`` (``VIDZOO_CACHE_DIR``), so the next run
decides without measuring. The choice is said in one line (`Engine.summary`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import platform
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vidzoo.data.clip import ClipSpec
from vidzoo.export import OnnxModel, export_model
from vidzoo.fileio import write_atomically
from vidzoo.model_file import tensors_sha256
from vidzoo.models._base import VideoClassifier
from vidzoo.weights import HF_HUB_PREFIX

__all__ = ["ENGINES", "PRECISIONS", "AGREEMENT", "PROB_TOLERANCE", "FEATURE_COSINE", "Engine", "Variant",
           "Measurement", "build_engine", "build_feature_engine", "inference_engine", "hardware", "load_inference_model", "cache_dir"]

log = logging.getLogger(__name__)

ENGINES = ("auto", "eager", "compile", "onnxruntime")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
AGREEMENT = 0.99  # share of calibration clips whose top-1 must equal the fp32 reference's
PROB_TOLERANCE = 0.01  # largest allowed |p - p_fp32| over calibration clips and classes
FEATURE_COSINE = 0.999  # features: smallest allowed cosine similarity to the fp32 features, per clip
DEFAULT_BATCH = 8
# What compile and ONNX Runtime must repay before auto tries them: setup seconds (measured ones
# replace these in the cache) and the speed-up over the best eager variant they are assumed to give.
SETUP_SECONDS = {"compile": 60.0, "onnxruntime": 30.0}
ASSUMED_GAIN = {"compile": 1.3, "onnxruntime": 1.1}
_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class Variant:
    """One way to run a forward pass."""

    engine: str  # eager | compile | onnxruntime
    precision: str  # fp32 | bf16 | fp16
    channels_last: bool

    def describe(self) -> str:
        return f"{self.engine} {self.precision}{' channels-last' if self.channels_last else ''}"


@dataclass
class Measurement:
    """A variant's calibration: throughput, agreement with the fp32 reference, setup time."""

    variant: Variant
    batch_size: int
    clips_per_s: float
    top1_agreement: float = 1.0
    max_prob_diff: float = 0.0
    setup_seconds: float = 0.0

    @property
    def accurate(self) -> bool:
        return self.top1_agreement >= AGREEMENT and self.max_prob_diff <= PROB_TOLERANCE

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["variant"] = asdict(self.variant)
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Measurement:
        return cls(**{**d, "variant": Variant(**d["variant"])})


class Engine:
    """A model ready for inference. ``engine(clips)`` takes any number of float32 clips
    ``(N, C, T, H, W)`` and returns float32 logits ``(N, num_classes)`` on the CPU, running them
    in batches of ``batch_size``. ``summary`` says which variant runs and why."""

    def __init__(self, forward: Callable[[torch.Tensor], torch.Tensor], *, variant: Variant, batch_size: int,
                 fixed_batch: bool, clip_spec: ClipSpec, classes: Sequence[str] | None, num_classes: int, name: str,
                 summary: str, measurements: list[Measurement] | None = None, model: nn.Module | None = None):
        self._forward = forward
        self._model = model
        self.variant, self.batch_size, self.fixed_batch = variant, batch_size, fixed_batch
        self.clip_spec, self.num_classes, self.name = clip_spec, num_classes, name
        self.classes = list(classes) if classes is not None else None
        self.summary = summary
        self.measurements = measurements or []

    def __call__(self, clips: torch.Tensor) -> torch.Tensor:
        outs = []
        for start in range(0, len(clips), self.batch_size):
            chunk = clips[start:start + self.batch_size]
            n = len(chunk)
            if self.fixed_batch and n < self.batch_size:
                # A compiled graph is specialised to its batch size: pad rather than recompile.
                chunk = torch.cat([chunk, chunk[-1:].expand(self.batch_size - n, *chunk.shape[1:])])
            outs.append(self._forward(chunk)[:n].float().cpu())
        return torch.cat(outs) if outs else torch.empty(0, self.num_classes)

    def close(self) -> None:
        """Give the model its usual (contiguous) memory format back: channels-last weights
        cannot be saved as safetensors, and training expects the usual layout."""
        if self._model is not None and self.variant.channels_last:
            _set_memory_format(self._model, False)

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --------------------------------------------------------------------------- the machine


def _cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    line = next((ln for ln in text.splitlines() if ln.startswith("flags")), "")
    return set(line.partition(":")[2].split())


def _cpu_name() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
        return next(ln.partition(":")[2].strip() for ln in text.splitlines() if ln.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def hardware(device: str | torch.device = "cpu") -> dict[str, Any]:
    """What the device offers: its name, and whether bf16 and fp16 run natively on it."""
    device = torch.device(device)
    if device.type == "cuda":
        return {"device": torch.cuda.get_device_name(device), "bf16": torch.cuda.is_bf16_supported(), "fp16": True}
    flags = _cpu_flags()
    return {
        "device": _cpu_name(),
        # oneDNN emulates bf16 on any AVX-512 CPU, slower than fp32: only native support counts.
        "bf16": bool(flags & {"avx512_bf16", "amx_bf16"}),
        "fp16": bool(flags & {"avx512_fp16", "amx_fp16"}),
    }


def cache_dir() -> Path:
    """Where engine choices and exported ONNX files are cached (``VIDZOO_CACHE_DIR``, else
    ``~/.cache/vidzoo``)."""
    return Path(os.environ.get("VIDZOO_CACHE_DIR") or Path.home() / ".cache" / "vidzoo")


# --------------------------------------------------------------------------- loading


def load_inference_model(path: str | os.PathLike, device: str | torch.device = "cpu") -> VideoClassifier | OnnxModel:
    """A vidzoo model file (``.safetensors``, or ``hf-hub:ORG/NAME[@REV]`` for one on the Hugging
    Face hub) as a model, or an exported ``.onnx`` file as an `OnnxModel`: what ``predict``,
    ``eval`` and ``serve`` accept."""
    from vidzoo.models.factory import load_model

    if Path(path).suffix.lower() == ".onnx" and not os.fspath(path).startswith(HF_HUB_PREFIX):
        return OnnxModel(Path(path), device=device)
    return load_model(path, map_location=device)  # a path, or hf-hub:ORG/NAME for a model file on the hub


# --------------------------------------------------------------------------- variants


def _set_memory_format(model: nn.Module, channels_last: bool) -> None:
    """Every 5-D weight to channels_last_3d and 4-D weight to channels_last, or all back."""
    with torch.no_grad():
        for tensor in [*model.parameters(), *model.buffers()]:
            if tensor.dim() == 5:
                fmt = torch.channels_last_3d if channels_last else torch.contiguous_format
            elif tensor.dim() == 4:
                fmt = torch.channels_last if channels_last else torch.contiguous_format
            else:
                continue
            tensor.data = tensor.data.contiguous(memory_format=fmt)


def _torch_forward(model: nn.Module, variant: Variant, device: torch.device,
                   function: Callable[[torch.Tensor], torch.Tensor] | None = None) -> Callable[[torch.Tensor], torch.Tensor]:
    """`variant` of ``model(clips)``, or of `function` (a function of the clips that runs `model`)."""
    _set_memory_format(model, variant.channels_last)
    dtype = _DTYPES[variant.precision]
    run = function or model
    if variant.engine == "compile":
        run = torch.compile(run, dynamic=False, options={"freezing": True})

    def forward(clips: torch.Tensor) -> torch.Tensor:
        clips = clips.to(device, non_blocking=True)
        if variant.channels_last and clips.dim() == 5:
            clips = clips.contiguous(memory_format=torch.channels_last_3d)
        autocast = torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()
        with torch.inference_mode(), autocast:
            return run(clips).float()

    return forward


def _onnx_forward(model: VideoClassifier, device: torch.device, key: str) -> Callable[[torch.Tensor], torch.Tensor]:
    path = cache_dir() / "onnx" / f"{key}.onnx"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        export_model(model, path, format="onnx", dynamic_batch=True)
    return OnnxModel(path, device=device)


# --------------------------------------------------------------------------- calibration


def _timed(forward: Callable[[torch.Tensor], torch.Tensor], clips: torch.Tensor, batch: int) -> tuple[torch.Tensor, float, float]:
    """(logits of every clip, setup seconds (the first batch), clips per second after it)."""
    batches = [clips[i:i + batch] for i in range(0, len(clips), batch)]
    started = time.perf_counter()
    outs = [forward(batches[0]).float().cpu()]
    setup = time.perf_counter() - started
    started = time.perf_counter()
    outs += [forward(b).float().cpu() for b in batches[1:]]
    seconds = time.perf_counter() - started
    timed_clips = sum(len(b) for b in batches[1:])
    if not timed_clips:  # one batch only: its time is all there is
        timed_clips, seconds = len(batches[0]), setup
    return torch.cat(outs), setup, timed_clips / max(seconds, 1e-9)


def _compare(reference: torch.Tensor, logits: torch.Tensor) -> tuple[float, float]:
    agree = float((logits.argmax(1) == reference.argmax(1)).float().mean())
    diff = float((logits.softmax(1) - reference.softmax(1)).abs().max())
    return agree, diff


def _calibration_clips(clips: torch.Tensor | Callable[[], torch.Tensor | None] | None, batch: int,
                       shape: tuple[int, ...]) -> torch.Tensor:
    """At least two batches (one to warm up, one to time): the job's own clips (or what the
    function the caller passed returns), repeated when there are fewer, or seeded random clips
    when the caller has none."""
    if callable(clips):
        clips = clips()
    if clips is None or len(clips) == 0:
        return torch.randn(2 * batch, *shape, generator=torch.Generator().manual_seed(0))
    clips = clips.detach().float().cpu()
    repeats = -(-2 * batch // len(clips))
    return clips.repeat(repeats, 1, 1, 1, 1)[: max(2 * batch, len(clips) // batch * batch)]


# --------------------------------------------------------------------------- the cache


def _cache_key(model_hash: str, device: torch.device, shape: tuple[int, ...], batch: int | None) -> str:
    machine = hardware(device)
    text = json.dumps([model_hash, machine, torch.__version__, device.type, list(shape), batch], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def _read_cache() -> dict[str, Any]:
    path = cache_dir() / "engines.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _write_cache(key: str, measurements: list[Measurement]) -> None:
    cache = _read_cache()
    cache[key] = {"measurements": [m.to_dict() for m in measurements], "torch": torch.__version__,
                  "created": time.strftime("%Y-%m-%d %H:%M:%S")}
    path = cache_dir() / "engines.json"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomically(path, lambda tmp: tmp.write_text(json.dumps(cache, indent=1), encoding="utf-8"), fsync=False)
    except OSError as e:  # a read-only home must not stop inference
        log.warning("could not cache the engine choice in %s: %s", path, e)


# --------------------------------------------------------------------------- building


def build_engine(
    model: VideoClassifier | OnnxModel,
    *,
    engine: str = "auto",
    precision: str = "auto",
    device: str | torch.device = "cpu",
    batch_size: int | None = None,
    calibration: torch.Tensor | Callable[[], torch.Tensor | None] | None = None,
    job_clips: int | None = None,
    use_cache: bool = True,
) -> Engine:
    """The fastest accurate way to run `model` here (see the module doc).

    Args:
        model: a vidzoo model, or an `OnnxModel` (then ONNX Runtime, fp32, runs it).
        engine, precision: ``"auto"`` or one of `ENGINES` / `PRECISIONS` to force.
        batch_size: clips per forward pass (None: `DEFAULT_BATCH`, or what the calibration
            found fastest among 4, 8 and 16).
        calibration: clips of the job to calibrate on (None: seeded random clips, whose top-1
            agreement says less), or a function that returns them, called only when something
            must be measured (so a cached choice costs no decoding).
        job_clips: how many clips the job will run (None: unknown, e.g. a server; taken as
            long). Decides whether compiling or exporting can repay itself, and whether the job
            is worth calibrating at all.
    """
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1):
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    device = torch.device(device)
    if isinstance(model, OnnxModel):
        return _onnx_file_engine(model, engine, precision, batch_size)
    model = model.to(device).eval()
    spec = model.clip_spec
    shape = _clip_shape(model)
    info = hardware(device)
    common = dict(clip_spec=spec, classes=model.classes, num_classes=_num_classes(model), name=_name(model))
    _check_precision(precision, info, device)

    # Forced: no measuring needed.
    if engine != "auto" and precision != "auto":
        # Forced fp32 eager is the reference computation itself: the usual memory format.
        channels_last = engine != "onnxruntime" and not (engine == "eager" and precision == "fp32")
        variant = Variant(engine, precision, channels_last=channels_last)
        batch = batch_size or DEFAULT_BATCH
        return Engine(_build(model, variant, device, _model_hash(model)), variant=variant, batch_size=batch,
                      fixed_batch=engine == "compile", summary=f"engine: {variant.describe()}, batch {batch} (as asked)",
                      model=model, **common)

    batch = batch_size or DEFAULT_BATCH
    model_hash = _model_hash(model)
    key = _cache_key(model_hash, device, shape, batch_size)
    cached = _read_cache().get(key) if use_cache else None
    measurements = [Measurement.from_dict(m) for m in cached["measurements"]] if cached else []
    clips: torch.Tensor | None = None
    if not measurements:
        clips = _calibration_clips(calibration, batch, shape)
        if job_clips is not None and job_clips < 2 * len(clips):
            variant = Variant("eager", "fp32", channels_last=False)
            return Engine(_build(model, variant, device, model_hash), variant=variant, batch_size=batch,
                          fixed_batch=False, summary=f"engine: {variant.describe()}, batch {batch} (a job of "
                          f"{job_clips} clips is too short to calibrate; the choice is cached once a longer one has)",
                          model=model, **common)
        measurements = _calibrate(model, device, clips, batch, info, model_hash, try_batches=batch_size is None)
    measured_now = not cached
    while True:
        choice, why = _decide(measurements, engine, precision, job_clips, info)
        if choice.clips_per_s > 0:
            break
        if clips is None:
            clips = _calibration_clips(calibration, batch, shape)
        measurements.append(_measure_setup(model, device, clips, choice, model_hash))  # compile or export it
        measured_now = True
    if use_cache and measured_now:
        _write_cache(key, measurements)
    forward = _built.pop((id(model), choice.variant), None) or _build(model, choice.variant, device, model_hash)
    _built.clear()
    source = f"measured on {len(clips)} calibration clips" if measured_now else "from cached measurements"
    summary = f"engine: {choice.variant.describe()}, batch {choice.batch_size} ({why}; {source})"
    return Engine(forward, variant=choice.variant, batch_size=choice.batch_size,
                  fixed_batch=choice.variant.engine == "compile", measurements=measurements, summary=summary,
                  model=model, **common)


@contextlib.contextmanager
def inference_engine(
    model: VideoClassifier | OnnxModel | Engine,
    *,
    engine: str = "eager",
    precision: str = "fp32",
    device: str | torch.device = "cpu",
    batch_size: int | None = None,
    calibration: torch.Tensor | Callable[[], torch.Tensor | None] | None = None,
    job_clips: int | None = None,
) -> Iterator[Engine]:
    """`build_engine` for the length of a ``with`` block: an `Engine` passed in is used as it is
    (so a command builds one for many videos); a model is given back afterwards in its train/eval
    mode and memory format. The defaults are the reference computation (eager fp32); the
    commands default to ``auto``."""
    if isinstance(model, Engine):
        yield model
        return
    was_training = getattr(model, "training", False)
    built = build_engine(model, engine=engine, precision=precision, device=device, batch_size=batch_size,
                         calibration=calibration, job_clips=job_clips)
    try:
        yield built
    finally:
        built.close()
        if isinstance(model, nn.Module):
            model.train(was_training)


# Forwards built while calibrating, reused when their variant wins (a compiled graph is costly).
_built: dict[tuple[int, Variant], Callable[[torch.Tensor], torch.Tensor]] = {}


def _build(model: VideoClassifier, variant: Variant, device: torch.device, model_hash: str):
    if variant.engine == "onnxruntime":
        return _onnx_forward(model, device, model_hash)
    return _torch_forward(model, variant, device)


# Any module with a ``clip_spec`` and ``classes`` runs: the rest has defaults.
def _clip_shape(model: nn.Module) -> tuple[int, ...]:
    spec = model.clip_spec
    cfg = getattr(model, "default_cfg", None)
    return (getattr(cfg, "in_chans", 3), spec.frames, spec.height, spec.width)


def _name(model: nn.Module) -> str:
    cfg = getattr(model, "default_cfg", None)
    return getattr(cfg, "arch", type(model).__name__)


def _num_classes(model: nn.Module) -> int:
    return getattr(model, "num_classes", None) or len(model.classes or [])


def _model_hash(model: VideoClassifier) -> str:
    return getattr(model, "tensors_sha256", None) or tensors_sha256(model.state_dict())


def _check_precision(precision: str, info: dict[str, Any], device: torch.device) -> None:
    if precision in ("bf16", "fp16") and not info[precision]:
        raise ValueError(f"precision {precision} is not native on this {device.type} ({info['device']}): it would run "
                         "slower than fp32; use --precision auto or fp32")


def _candidates(info: dict[str, Any], device: torch.device) -> list[Variant]:
    out = [Variant("eager", "fp32", False), Variant("eager", "fp32", True)]
    if info["bf16"]:
        out.append(Variant("eager", "bf16", True))
    if info["fp16"] and device.type == "cuda":
        out.append(Variant("eager", "fp16", True))
    return out


def _calibrate(model, device, clips, batch, info, model_hash, try_batches: bool) -> list[Measurement]:
    """Measure the eager variants on `clips` against the fp32 reference (the first variant)."""
    measurements: list[Measurement] = []
    reference = None
    for variant in _candidates(info, device):
        forward = _build(model, variant, device, model_hash)
        logits, setup, rate = _timed(forward, clips, batch)
        if reference is None:
            reference = logits
        agree, diff = _compare(reference, logits)
        measurements.append(Measurement(variant, batch, rate, agree, diff, setup))
    best = max((m for m in measurements if m.accurate), key=lambda m: m.clips_per_s)
    if try_batches:  # the best variant at other batch sizes
        forward = _build(model, best.variant, device, model_hash)
        for other in (4, 16):
            if other == batch:
                continue
            try:
                _, setup, rate = _timed(forward, _calibration_clips(clips, other, clips.shape[1:]), other)
            except RuntimeError as e:  # out of memory at the larger batch: keep the smaller
                log.info("batch %d did not run: %s", other, e)
                continue
            measurements.append(Measurement(best.variant, other, rate, best.top1_agreement, best.max_prob_diff, setup))
    _set_memory_format(model, False)
    return measurements


def _measure_setup(model, device, clips, choice: Measurement, model_hash) -> Measurement:
    """Compile (or export) the chosen variant and measure it against the fp32 reference; a
    variant that fails to build is recorded as unusable (and said), not raised."""
    batch = choice.batch_size
    reference_forward = _build(model, Variant("eager", "fp32", False), device, model_hash)
    reference = torch.cat([reference_forward(c) for c in clips.split(batch)])
    try:
        started = time.perf_counter()
        forward = _build(model, choice.variant, device, model_hash)
        built = time.perf_counter() - started  # exporting to ONNX happens here, compiling at the first call
        logits, setup, rate = _timed(forward, clips, batch)
        setup += built
    except Exception as e:  # noqa: BLE001 - a compiler or exporter failure leaves eager to run
        log.warning("%s did not build, so it is not used: %s: %s", choice.variant.describe(), type(e).__name__,
                    str(e).splitlines()[0] if str(e) else "")
        return Measurement(choice.variant, batch, 0.0, top1_agreement=0.0, max_prob_diff=float("inf"))
    agree, diff = _compare(reference, logits)
    _built[(id(model), choice.variant)] = forward
    return Measurement(choice.variant, batch, rate, agree, diff, setup)


def _decide(measurements: list[Measurement], engine: str, precision: str, job_clips: int | None,
            info: dict[str, Any]) -> tuple[Measurement, str]:
    """The fastest accurate measured variant that `engine` and `precision` allow. When compile
    or ONNX Runtime is allowed, not measured yet, and would repay its setup over the job, that
    variant comes back unmeasured (``clips_per_s == 0``) for the caller to measure."""
    def fits(m: Measurement) -> bool:
        return (precision == "auto" or m.variant.precision == precision) and m.accurate

    eager = [m for m in measurements if m.variant.engine == "eager" and fits(m)]
    if not eager:
        raise RuntimeError("no inference variant reproduced the fp32 reference on the calibration clips; "
                           "use --engine eager --precision fp32")
    best_eager = max(eager, key=lambda m: m.clips_per_s)
    for kind in ("compile", "onnxruntime"):
        if engine not in ("auto", kind) or any(m.variant.engine == kind for m in measurements):
            continue
        if kind == "onnxruntime":
            if not _onnxruntime_installed():
                if engine == kind:
                    raise ImportError("--engine onnxruntime needs onnxruntime: pip install 'vidzoo[onnx]'")
                continue
            if precision not in ("auto", "fp32") or (engine == "auto" and best_eager.variant.precision != "fp32"):
                continue  # ONNX Runtime runs fp32 here: not a candidate against a faster bf16 eager
        if engine == kind or _saving(best_eager, job_clips, ASSUMED_GAIN[kind]) > SETUP_SECONDS[kind]:
            variant = Variant(kind, best_eager.variant.precision if kind == "compile" else "fp32",
                              kind == "compile" and best_eager.variant.channels_last)
            return Measurement(variant, best_eager.batch_size, 0.0), "to measure"
    if engine == "auto":
        # A compiled or exported variant must repay its setup within this job.
        options = [m for m in measurements if fits(m) and (m.variant.engine == "eager" or _saving(
            best_eager, job_clips, m.clips_per_s / best_eager.clips_per_s) > m.setup_seconds)]
    else:
        options = [m for m in measurements if fits(m) and m.variant.engine == engine]
        if not options:
            raise RuntimeError(f"--engine {engine} did not reproduce the fp32 reference on the calibration clips "
                               "(see the warning above); use --engine auto or eager")
    best = max(options, key=lambda m: m.clips_per_s)
    reference = next((m for m in measurements if m.variant == Variant("eager", "fp32", False)), best_eager)
    why = f"{best.clips_per_s / max(reference.clips_per_s, 1e-9):.1f}x eager fp32"
    if best.variant != reference.variant:
        why += f", top-1 agrees on {best.top1_agreement:.0%}, max prob diff {best.max_prob_diff:.1e}"
    rejected = sorted({m.variant.describe() for m in measurements if not m.accurate})
    if rejected:
        why += f"; not accurate enough: {', '.join(rejected)}"
    if not info["bf16"] and precision == "auto":
        why += "; no native bf16 here"
    return best, why


def _saving(best: Measurement, job_clips: int | None, gain: float) -> float:
    """Seconds a variant `gain` times faster than `best` saves over the job (inf when unknown)."""
    if job_clips is None:
        return float("inf")
    if gain <= 1:
        return 0.0
    return job_clips / max(best.clips_per_s, 1e-9) * (1 - 1 / gain)


def _onnxruntime_installed() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def _onnx_file_engine(model: OnnxModel, engine: str, precision: str, batch_size: int | None) -> Engine:
    if engine not in ("auto", "onnxruntime") or precision not in ("auto", "fp32"):
        raise ValueError(f"{model.path} is an ONNX file: it runs on ONNX Runtime in fp32 (got --engine {engine} "
                         f"--precision {precision})")
    batch = model.batch_size or batch_size or DEFAULT_BATCH
    variant = Variant("onnxruntime", "fp32", False)
    return Engine(model, variant=variant, batch_size=batch, fixed_batch=False, clip_spec=model.clip_spec,
                  classes=model.classes, num_classes=model.num_classes, name=model.name,
                  summary=f"engine: onnxruntime fp32, batch {batch} (an exported ONNX file)")


# --------------------------------------------------------------------------- features


def build_feature_engine(
    model: VideoClassifier,
    function: Callable[[torch.Tensor], torch.Tensor],
    *,
    engine: str = "auto",
    precision: str = "auto",
    device: str | torch.device = "cpu",
    batch_size: int = DEFAULT_BATCH,
    calibration: torch.Tensor | Callable[[], torch.Tensor | None] | None = None,
    job_clips: int | None = None,
) -> Engine:
    """An `Engine` for `function` (clips to feature vectors, running `model`), as ``vidzoo extract``
    uses. There are no classes to agree on, so ``precision="auto"`` keeps bf16 only when every
    calibration clip's features have a cosine similarity of at least `FEATURE_COSINE` with the
    fp32 ones, and it is faster. ``engine``: ``auto`` and ``eager`` run eagerly, ``compile``
    compiles the chosen precision; ONNX Runtime runs exported classifiers, whose graph ends at
    the logits, so it is refused here."""
    if engine not in ENGINES or engine == "onnxruntime":
        raise ValueError(f"feature extraction runs on engine auto, eager or compile, got {engine!r} (an exported "
                         "ONNX file computes logits only)")
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    device = torch.device(device)
    model = model.to(device).eval()
    spec = model.clip_spec
    info = hardware(device)
    _check_precision(precision, info, device)
    kind = "compile" if engine == "compile" else "eager"
    common = dict(clip_spec=spec, classes=model.classes, num_classes=0, name=_name(model), model=model)

    def finish(variant: Variant, why: str, measurements: list[Measurement] | None = None) -> Engine:
        return Engine(_torch_forward(model, variant, device, function), variant=variant, batch_size=batch_size,
                      fixed_batch=variant.engine == "compile", summary=f"engine: {variant.describe()}, batch "
                      f"{batch_size} ({why})", measurements=measurements, **common)

    if precision != "auto":
        return finish(Variant(kind, precision, precision != "fp32"), "as asked")
    if not info["bf16"]:
        return finish(Variant(kind, "fp32", False), "no native bf16 here")
    # Calibrating runs at least two batches per variant: a job must be several times longer.
    if job_clips is not None and job_clips < 8 * batch_size:
        return finish(Variant(kind, "fp32", False), f"a job of {job_clips} clips is too short to calibrate")
    clips = _calibration_clips(calibration, batch_size, _clip_shape(model))
    measurements = []
    reference = None
    for variant in (Variant("eager", "fp32", False), Variant("eager", "bf16", True)):
        feats, setup, rate = _timed(_torch_forward(model, variant, device, function), clips, batch_size)
        reference = feats if reference is None else reference
        cosine = float(torch.nn.functional.cosine_similarity(feats.flatten(1), reference.flatten(1), dim=1).min())
        # Stored in the fields a classifier's calibration uses: agreement 1 or 0 by the cosine rule.
        measurements.append(Measurement(variant, batch_size, rate, float(cosine >= FEATURE_COSINE), 1 - cosine, setup))
    _set_memory_format(model, False)
    fp32, bf16 = measurements
    if bf16.accurate and bf16.clips_per_s > fp32.clips_per_s:
        why = f"{bf16.clips_per_s / fp32.clips_per_s:.1f}x fp32, cosine to fp32 features >= {1 - bf16.max_prob_diff:.4f}"
        return finish(Variant(kind, "bf16", True), why, measurements)
    why = (f"bf16 {'slower' if bf16.accurate else f'features differ (cosine {1 - bf16.max_prob_diff:.4f})'}; "
           f"measured on {len(clips)} clips")
    return finish(Variant(kind, "fp32", False), why, measurements)
