"""Annotation sources: lists of labeled videos, read from folders and annotation files.

A *source* (`VideoSource`) is an ordered class list plus `(path, label, video_id)` samples,
read from one of:

- a folder per class: ``root/<class>/<video>``                         (`from_folder`)
- a CSV/TSV annotation ``path,label`` relative to the file's folder      (`from_csv`)
- UCF-101 split files: ``classInd.txt`` + ``trainlist0N/testlist0N.txt``  (`from_ucf101`)
- HMDB-51 split files: ``<class>_test_split<N>.txt`` (1 train, 2 test)    (`from_hmdb51`)

Labels are matched by class *name*, never by position, so a class missing from one split
shifts nothing. Every problem in an annotation (missing file, unknown label, duplicate, and
with ``confine=True`` a path that is absolute or escapes the root) is collected and reported at
once, before any training starts. `data_warnings` names what is legal but probably a mistake
(a label that is a typo of another, a class with very few videos).
"""

from __future__ import annotations

import csv
import difflib
import os
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Iterable, Literal, Sequence

import numpy as np

__all__ = [
    "VIDEO_EXTENSIONS",
    "AnnotationError",
    "VideoSample",
    "VideoSource",
    "from_folder",
    "from_csv",
    "from_ucf101",
    "from_hmdb51",
    "load_source",
    "validate_sources",
    "read_class_list",
    "stratified_split",
    "split_counts",
    "write_split",
    "data_warnings",
]



VIDEO_EXTENSIONS = frozenset(
    ".mp4 .m4v .mov .avi .mkv .webm .mpg .mpeg .ts .mts .3gp .flv .wmv .ogv".split()
)
_MAX_LISTED = 50  # problems listed in one error message; the rest are counted


class AnnotationError(ValueError):
    """An annotation or dataset folder has problems; all of them are in `problems`."""

    def __init__(self, origin: str | os.PathLike, problems: Sequence[str]):
        self.origin = str(origin)
        self.problems = list(problems)
        shown = "\n".join(f"  - {p}" for p in self.problems[:_MAX_LISTED])
        more = len(self.problems) - _MAX_LISTED
        tail = f"\n  ... and {more} more" if more > 0 else ""
        super().__init__(f"{self.origin}: {len(self.problems)} problem(s):\n{shown}{tail}")


@dataclass(frozen=True)
class VideoSample:
    path: str  # absolute path of the video file
    label: int  # index into the source's class list
    video_id: str  # path relative to the dataset root, '/'-separated: stable across machines


@dataclass
class VideoSource:
    """Ordered class names and the labeled videos of one split."""

    classes: list[str]
    samples: list[VideoSample]
    root: str
    origin: str  # what it was read from, for messages and run records

    def __len__(self) -> int:
        return len(self.samples)

    def class_counts(self) -> dict[str, int]:
        counts = dict.fromkeys(self.classes, 0)
        for s in self.samples:
            counts[self.classes[s.label]] += 1
        return counts

    def subset(self, indices: Iterable[int], origin: str | None = None) -> "VideoSource":
        return VideoSource(self.classes, [self.samples[i] for i in indices], self.root, origin or self.origin)

    def with_classes(self, classes: Sequence[str]) -> "VideoSource":
        """Re-index labels onto another class list, by name (e.g. the training split's)."""
        index = {name: i for i, name in enumerate(classes)}
        unknown = sorted({self.classes[s.label] for s in self.samples} - set(index))
        if unknown:
            raise AnnotationError(
                self.origin, [f"class {name!r} is not among the {len(classes)} known classes" for name in unknown]
            )
        samples = [VideoSample(s.path, index[self.classes[s.label]], s.video_id) for s in self.samples]
        return VideoSource(list(classes), samples, self.root, self.origin)


# --------------------------------------------------------------------------- class lists


def read_class_list(path: str | os.PathLike) -> list[str]:
    """Class names, one per line in index order (blank lines and '#' comments ignored)."""
    path = Path(path)
    names = [line.strip() for line in path.read_text(encoding="utf-8-sig").splitlines()]
    names = [n for n in names if n and not n.startswith("#")]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise AnnotationError(path, [f"class {n!r} is listed more than once" for n in duplicates])
    if not names:
        raise AnnotationError(path, ["the class list is empty"])
    return names


def _resolve_classes(found: Iterable[str], classes: Sequence[str] | None) -> list[str]:
    return sorted(set(found)) if classes is None else list(classes)


# --------------------------------------------------------------------------- path checks


def _annotation_path(raw: str, root: Path, confine: bool) -> tuple[Path | None, str | None]:
    """An annotation's path: absolute, or relative to `root`; return (path, None) or
    (None, problem). With `confine` (anything a server is sent) only relative paths that stay
    under `root` are allowed."""
    text = raw.strip().replace("\\", "/")
    if not text:
        return None, "empty path"
    posix = PurePosixPath(text)
    absolute = posix.is_absolute() or re.match(r"^[A-Za-z]:/", text)
    if confine and absolute:
        return None, f"absolute path {raw!r} (paths must be relative to the dataset root)"
    if confine and ".." in posix.parts:
        return None, f"path {raw!r} escapes the dataset root"
    path = Path(text) if absolute else root.joinpath(*posix.parts)
    if not path.is_file():
        hint = "" if absolute else " (relative paths are read from the annotation's folder, or --data-root)"
        return None, f"missing file {raw!r} (looked for {path}){hint}"
    return path, None


def _sample(path: Path, label: int, root: Path) -> VideoSample:
    # The id is the path relative to the root when the video lies under it (stable across
    # machines), else the path itself.
    try:
        video_id = path.relative_to(root).as_posix()
    except ValueError:
        video_id = path.as_posix()
    return VideoSample(str(path), label, video_id)


def _finish(origin, root: Path, classes: list[str], pairs: list[tuple[Path, str]], problems: list[str]) -> VideoSource:
    """Map (path, class name) pairs to samples, adding label problems; raise if any."""
    index = {name: i for i, name in enumerate(classes)}
    seen: dict[Path, str] = {}
    samples = []
    for path, name in pairs:
        shown = _sample(path, 0, root).video_id
        if name not in index:
            close = difflib.get_close_matches(name, classes, n=1, cutoff=0.75)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            problems.append(f"unknown label {name!r} for {shown} (classes: {_few(classes)}){hint}")
            continue
        if path in seen:
            problems.append(f"duplicate entry {shown} (labels {seen[path]!r} and {name!r})")
            continue
        seen[path] = name
        samples.append(_sample(path, index[name], root))
    if not samples and not problems:
        problems.append("no videos found")
    if problems:
        raise AnnotationError(origin, problems)
    return VideoSource(classes, samples, str(root), str(origin))


def _few(names: Sequence[str], n: int = 8) -> str:
    return ", ".join(names[:n]) + (f", ... ({len(names)} in all)" if len(names) > n else "")


# --------------------------------------------------------------------------- sources


def from_folder(root: str | os.PathLike, classes: Sequence[str] | None = None) -> VideoSource:
    """``root/<class>/<video>`` (videos may sit in sub-folders of the class folder).

    The class list is the sorted folder names, or `classes` in the order given; a given
    class with no folder or no videos is an error, as is a folder that is not a given class.
    """
    root = Path(root).resolve()
    if not root.is_dir():
        raise AnnotationError(root, ["not a directory"])
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    class_names = _resolve_classes((p.name for p in folders), classes)
    problems: list[str] = []
    pairs: list[tuple[Path, str]] = []
    for folder in folders:
        videos = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS)
        if not videos:
            problems.append(f"class folder {folder.name!r} has no video files ({', '.join(sorted(VIDEO_EXTENSIONS))})")
        pairs.extend((v, folder.name) for v in videos)
    present = {p.name for p in folders}
    problems.extend(f"class {c!r} has no folder" for c in class_names if c not in present)
    return _finish(root, root, class_names, pairs, problems)


def from_csv(
    path: str | os.PathLike,
    classes: Sequence[str] | None = None,
    root: str | os.PathLike | None = None,
    label_format: Literal["name", "index0", "index1"] = "name",
    confine: bool = False,
) -> VideoSource:
    """A ``path,label`` CSV (or tab-separated) file. Paths are absolute, or relative to `root`
    (by default the annotation file's folder); with `confine` only relative paths that stay
    under `root` are allowed (what a server must use for anything it is sent). A header row
    ``path,label`` is optional. BOM and CRLF are fine.

    Labels are class names unless `label_format` says they are indices into `classes`
    (``"index0"``: 0-based, ``"index1"``: 1-based, as in UCF-101), which must then be given.
    """
    if label_format not in ("name", "index0", "index1"):
        raise ValueError(f"label_format must be 'name', 'index0' or 'index1', got {label_format!r}")
    if label_format != "name" and classes is None:
        raise ValueError(f"label_format={label_format!r} needs the class list (classes=...) the indices refer to")
    path = Path(path).resolve()
    if not path.is_file():
        raise AnnotationError(path, ["annotation file not found"])
    root = Path(root).resolve() if root is not None else path.parent
    text = path.read_text(encoding="utf-8-sig")
    delimiter = "\t" if path.suffix.lower() == ".tsv" or ("\t" in text.splitlines()[0] if text else False) else ","
    rows = list(csv.reader(text.splitlines(), delimiter=delimiter))
    problems: list[str] = []
    pairs: list[tuple[Path, str]] = []
    start = 1 if rows and [c.strip().lower() for c in rows[0][:2]] == ["path", "label"] else 0
    for line_no, row in enumerate(rows[start:], start=start + 1):
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) < 2:
            problems.append(f"line {line_no}: expected 'path{delimiter}label', got {delimiter.join(row)!r}")
            continue
        video, problem = _annotation_path(row[0], root, confine)
        if problem:
            problems.append(f"line {line_no}: {problem}")
            continue
        label = row[1].strip()
        if label_format != "name":
            label, problem = _label_from_index(label, classes, first=int(label_format[-1]))
            if problem:
                problems.append(f"line {line_no}: {problem}")
                continue
        pairs.append((video, label))
    class_names = _resolve_classes((name for _, name in pairs), classes)
    return _finish(path, root, class_names, pairs, problems)


def _label_from_index(text: str, classes: Sequence[str], first: int) -> tuple[str, str | None]:
    """The class name of an index label (0- or 1-based by `first`), or a problem."""
    last = len(classes) - 1 + first
    if not re.fullmatch(r"[+-]?\d+", text):
        return "", f"label {text!r} is not a class index ({first}..{last})"
    if not first <= int(text) <= last:
        return "", f"class index {text} out of range {first}..{last} ({len(classes)} classes, {first}-based)"
    return classes[int(text) - first], None


def from_ucf101(
    root: str | os.PathLike,
    splits_dir: str | os.PathLike,
    split: int = 1,
    subset: Literal["train", "test"] = "train",
) -> VideoSource:
    """UCF-101: ``classInd.txt`` ("1 ApplyEyeMakeup") and ``trainlist0N.txt`` /
    ``testlist0N.txt`` ("ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi [index]") under `splits_dir`,
    videos under `root`. The class is taken from the path's folder, matched by name.
    """
    if split not in (1, 2, 3):
        raise ValueError(f"UCF-101 has splits 1, 2 and 3, got {split!r}")
    if subset not in ("train", "test"):
        raise ValueError(f"subset must be 'train' or 'test', got {subset!r}")
    root, splits_dir = Path(root).resolve(), Path(splits_dir).resolve()
    class_file = splits_dir / "classInd.txt"
    list_file = splits_dir / f"{subset}list0{split}.txt"
    problems: list[str] = []
    for required in (class_file, list_file):
        if not required.is_file():
            problems.append(f"missing split file {required}")
    if problems:
        raise AnnotationError(splits_dir, problems)
    classes: list[str] = []
    for line_no, line in enumerate(class_file.read_text(encoding="utf-8-sig").splitlines(), start=1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2 or not parts[0].isdigit() or int(parts[0]) != len(classes) + 1:
            raise AnnotationError(class_file, [f"line {line_no}: expected '{len(classes) + 1} ClassName', got {line!r}"])
        classes.append(parts[1])
    pairs: list[tuple[Path, str]] = []
    for line_no, line in enumerate(list_file.read_text(encoding="utf-8-sig").splitlines(), start=1):
        parts = line.split()
        if not parts:
            continue
        video, problem = _annotation_path(parts[0], root, confine=True)
        if problem:
            problems.append(f"{list_file.name} line {line_no}: {problem}")
            continue
        name = PurePosixPath(parts[0].replace("\\", "/")).parts[0]
        if len(parts) > 1 and parts[1].isdigit() and name in classes and int(parts[1]) != classes.index(name) + 1:
            problems.append(
                f"{list_file.name} line {line_no}: index {parts[1]} disagrees with classInd.txt "
                f"({name!r} is {classes.index(name) + 1})"
            )
            continue
        pairs.append((video, name))
    return _finish(list_file, root, classes, pairs, problems)


def from_hmdb51(
    root: str | os.PathLike,
    splits_dir: str | os.PathLike,
    split: int = 1,
    subset: Literal["train", "test"] = "train",
) -> VideoSource:
    """HMDB-51: one ``<class>_test_split<N>.txt`` per class under `splits_dir`, lines
    "video.avi flag" with flag 1 = train, 2 = test, 0 = unused; videos at ``root/<class>/``.
    """
    if split not in (1, 2, 3):
        raise ValueError(f"HMDB-51 has splits 1, 2 and 3, got {split!r}")
    wanted_flag = {"train": "1", "test": "2"}.get(subset)
    if wanted_flag is None:
        raise ValueError(f"subset must be 'train' or 'test', got {subset!r}")
    root, splits_dir = Path(root).resolve(), Path(splits_dir).resolve()
    suffix = f"_test_split{split}.txt"
    files = sorted(splits_dir.glob(f"*{suffix}"))
    if not files:
        raise AnnotationError(splits_dir, [f"no '*{suffix}' split files"])
    classes = sorted(f.name[: -len(suffix)] for f in files)
    problems: list[str] = []
    pairs: list[tuple[Path, str]] = []
    for split_file in files:
        name = split_file.name[: -len(suffix)]
        for line_no, line in enumerate(split_file.read_text(encoding="utf-8-sig").splitlines(), start=1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 2 or parts[1] not in ("0", "1", "2"):
                problems.append(f"{split_file.name} line {line_no}: expected 'video.avi 0|1|2', got {line!r}")
                continue
            if parts[1] != wanted_flag:
                continue
            video, problem = _annotation_path(f"{name}/{parts[0]}", root, confine=True)
            if problem:
                problems.append(f"{split_file.name} line {line_no}: {problem}")
                continue
            pairs.append((video, name))
    return _finish(splits_dir, root, classes, pairs, problems)


def load_source(
    data: str | os.PathLike,
    classes: Sequence[str] | str | os.PathLike | None = None,
    root: str | os.PathLike | None = None,
    confine: bool = False,
) -> VideoSource:
    """A folder-per-class root, or a CSV/TSV annotation file. `classes` is a list of names or a
    class-list file (then a label outside it is an error); by default the sorted class names
    found. For a CSV, `root` is where relative paths start (default: its folder) and `confine`
    refuses absolute paths and paths leaving `root` (see `from_csv`)."""
    if classes is not None and not isinstance(classes, (list, tuple)):
        classes = read_class_list(classes)
    path = Path(data)
    if path.is_dir():
        return from_folder(path, classes)
    if path.is_file() and path.suffix.lower() in (".csv", ".tsv", ".txt"):
        return from_csv(path, classes, root=root, confine=confine)
    if not path.exists():
        raise AnnotationError(path, ["no such file or directory"])
    raise AnnotationError(path, [f"expected a class-per-folder directory or a .csv/.tsv annotation, got {path.suffix!r}"])


def validate_sources(train: VideoSource, val: VideoSource | None = None, test: VideoSource | None = None) -> None:
    """Check the splits against each other and raise one `AnnotationError` listing every problem:
    a training class with no videos, a val/test class the training split does not have, and a
    video that is in more than one split (which would leak into the evaluation)."""
    splits = {"train": train, "val": val, "test": test}
    splits = {name: source for name, source in splits.items() if source is not None}
    problems = [f"class {c!r} has no training videos" for c, n in train.class_counts().items() if n == 0]
    known = set(train.classes)
    for name, source in splits.items():
        if name == "train":
            continue
        used = sorted({source.classes[s.label] for s in source.samples} - known)
        problems.extend(f"{name} ({source.origin}): class {c!r} never seen in training "
                        f"(training classes: {_few(train.classes)})" for c in used)
    owner: dict[str, str] = {}
    for name, source in splits.items():
        for sample in source.samples:
            other = owner.setdefault(os.path.realpath(sample.path), name)
            if other != name:
                problems.append(f"{sample.path} is in both {other} and {name}")
    if problems:
        raise AnnotationError(" / ".join(f"{name}: {s.origin}" for name, s in splits.items()), problems)


def stratified_split(source: VideoSource, fraction: float, seed: int = 0) -> tuple[VideoSource, VideoSource]:
    """Hold out `fraction` of every class, reproducibly from `seed`; returns (kept, held_out).

    Each class gives ``round(fraction * its videos)`` videos (half up), and always keeps at least
    one for training: a class with fewer than ``1 / (2 * fraction)`` videos gives none, so small
    classes are not halved (`split_counts` reports what each class gave).
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"the held-out fraction must be between 0 and 1, got {fraction}")
    rng = np.random.default_rng(seed)
    held: list[int] = []
    by_class: dict[int, list[int]] = {}
    for i, sample in enumerate(source.samples):
        by_class.setdefault(sample.label, []).append(i)
    for label in sorted(by_class):
        members = by_class[label]
        n = min(len(members) - 1, int(np.floor(fraction * len(members) + 0.5)))
        held.extend(rng.permutation(members)[:n].tolist())
    held_set = set(held)
    kept = [i for i in range(len(source)) if i not in held_set]
    return (
        source.subset(kept, f"{source.origin} (train part)"),
        source.subset(sorted(held_set), f"{source.origin} (held-out {fraction:g})"),
    )


def split_counts(splits: dict[str, VideoSource]) -> list[dict[str, object]]:
    """Videos per class and split, one row per class: ``{"class": ..., "train": n, "val": n, ...}``."""
    names = next(iter(splits.values())).classes
    counts = {split: source.class_counts() for split, source in splits.items()}
    return [{"class": name, **{split: counts[split].get(name, 0) for split in splits}} for name in names]


def write_split(source: VideoSource, path: str | os.PathLike) -> Path:
    """`source` as a ``path,label`` CSV (absolute paths): the exact videos of a split."""
    path = Path(path)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "label"])
        writer.writerows([sample.path, source.classes[sample.label]] for sample in source.samples)
    return path


# A class with fewer training videos than this is named: the model can hardly learn it.
FEW_VIDEOS = 5


def data_warnings(source: VideoSource, *others: VideoSource, few: int = FEW_VIDEOS) -> list[str]:
    """What is legal in a training source but probably a mistake: a label that looks like a typo
    of another (the same once case, spaces, '-' and '_' are ignored; or one edit apart while
    having far fewer videos, counted over `source` and `others`, the other splits), and classes
    with fewer than `few` training videos."""
    counts = source.class_counts()
    totals = dict(counts)
    for other in others:
        for name, n in other.class_counts().items():
            totals[name] = totals.get(name, 0) + n
    warnings = []
    names = sorted(totals)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            if _normalised(a) == _normalised(b):
                warnings.append(f"labels {a!r} ({totals[a]} videos) and {b!r} ({totals[b]}) differ only in case, "
                                "spaces or '-'/'_': one class or two?")
            elif _one_edit_apart(a, b) and 4 * min(totals[a], totals[b]) <= max(totals[a], totals[b]):
                rare, common = (a, b) if totals[a] < totals[b] else (b, a)
                warnings.append(f"label {rare!r} ({totals[rare]} videos) looks like a typo of {common!r} "
                                f"({totals[common]} videos); fix the annotation or pass --classes to fix the list")
    small = [f"{name} ({n})" for name, n in counts.items() if n < few]
    if small:
        warnings.append(f"{len(small)} class(es) have fewer than {few} training videos: {', '.join(small[:10])}"
                        f"{' ...' if len(small) > 10 else ''}")
    return warnings


def _normalised(name: str) -> str:
    return re.sub(r"[\s_\-]+", "", name.lower())


def _one_edit_apart(a: str, b: str) -> bool:
    """One insertion, deletion, substitution or swap of neighbours turns `a` into `b`."""
    if a == b or abs(len(a) - len(b)) > 1:
        return False
    if len(a) == len(b):
        diff = [i for i, (x, y) in enumerate(zip(a, b)) if x != y]
        return len(diff) == 1 or (len(diff) == 2 and diff[1] == diff[0] + 1 and a[diff[0]] == b[diff[1]]
                                  and a[diff[1]] == b[diff[0]])
    short, long = (a, b) if len(a) < len(b) else (b, a)
    return any(long[:i] + long[i + 1:] == short for i in range(len(long)))
