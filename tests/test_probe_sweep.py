"""Probe sweeps on cached features: the best cell by validation accuracy is chosen, every cell is
reported, the attentive probe finds the one clip that carries the label where pooling fails,
class balance changes what every probe kind learns, bad input is one line."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from vidzoo.attentive_probe import fit_attentive_probes, load_attentive_probe, video_rows
from vidzoo.features import Features, save_features
from vidzoo.linear_probe import fit_linear_probe, linear_probe
from vidzoo.probe_sweep import probe_sweep

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
ATTENTIVE = dict(dim=32, heads=2, epochs=30)  # small and short: the tasks here are easy for it


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # Batches of a few dozen tiny rows: threads only fight over the shared cores.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def needle(videos: int = 240, clips: int = 6, dim: int = 8, seed: int = 0) -> Features:
    """Per-clip features where one clip of each video (marked by a large feature 0) carries the
    label as the sign of feature 1; the other clips carry a random sign there. Averaging the
    clips, or scoring them one by one, leaves the label mostly buried in the others' noise."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, videos)
    x = rng.normal(0, 0.3, (videos, clips, dim)).astype(np.float32)
    x[:, :, 1] = rng.choice([-1.0, 1.0], (videos, clips))
    marker = rng.integers(0, clips, videos)
    x[np.arange(videos), marker, 0] += 3.0
    x[np.arange(videos), marker, 1] = np.where(labels == 1, 1.0, -1.0)
    return Features(x.reshape(-1, dim), [f"v{v:03d}" for v in range(videos) for _ in range(clips)],
                    np.repeat(labels, clips), ["neg", "pos"], np.tile(np.arange(clips), videos), per="clip",
                    clips_per_video=clips, layer="test")


def mean_pooled(features: Features) -> Features:
    """One row per video: the mean of its clips (what ``extract --per video`` keeps)."""
    clips = features.clips_per_video
    return Features(features.features.reshape(-1, clips, features.dim).mean(axis=1), features.video_ids[::clips],
                    features.labels[::clips], features.classes, layer=features.layer)


@pytest.fixture(scope="module")
def sweep():
    return probe_sweep(needle(), classifiers=["logreg", "attentive"], cs=[0.01, 1.0], lrs=[1e-3, 1e-2],
                       weight_decays=[0.01], test_split=0.2, **ATTENTIVE)


def test_the_sweep_chooses_the_cell_with_the_best_validation_accuracy(sweep):
    accuracies = [cell.val_accuracy for cell in sweep.cells]
    assert len(set(accuracies)) > 1, "premise: the cells differ"
    assert sweep.best == int(np.argmax(accuracies))
    assert sweep.cells[sweep.best].classifier == "attentive"
    assert sweep.report.video_accuracy == accuracies[sweep.best]
    assert sweep.report.test["num_videos"] == 48 and sweep.report.test["video_accuracy"] >= 0.85  # 20% of 240 held out first


def test_each_linear_cell_is_what_a_probe_fitted_alone_scores(sweep):
    # The sweep's splits are linear_probe's: the test part first (seed 1), then validation (seed 0).
    from vidzoo.linear_probe import split_videos

    rest, _ = split_videos(needle(), 0.2, seed=1)
    for cell in sweep.cells[:2]:
        _, alone = linear_probe(rest, classifier="logreg", c=cell.settings["C"])
        assert cell.val_accuracy == pytest.approx(alone.video_accuracy)


def test_the_attentive_probe_finds_the_clip_that_carries_the_label_where_pooling_fails(sweep):
    _, pooled = linear_probe(mean_pooled(needle()), classifier="logreg")
    assert pooled.video_accuracy <= 0.75  # chance is 0.5
    assert max(c.val_accuracy for c in sweep.cells if c.classifier == "logreg") <= 0.75  # clips scored alone
    assert max(c.val_accuracy for c in sweep.cells if c.classifier == "attentive") >= 0.9


def test_a_saved_attentive_probe_predicts_the_same(sweep, tmp_path):
    loaded = load_attentive_probe(sweep.probe.save(tmp_path / "p.safetensors"))
    videos = video_rows(needle(videos=20, seed=5))
    np.testing.assert_array_equal(loaded.video_logits(videos), sweep.probe.video_logits(videos))
    assert loaded.info["lr"] == sweep.cells[sweep.best].settings["lr"]


# --------------------------------------------------------------------------- class balance


def imbalanced(seed: int = 0, dim: int = 4) -> Features:
    """90 videos of class 0, 10 of class 1, overlapping."""
    rng = np.random.default_rng(seed)
    labels = np.array([0] * 90 + [1] * 10)
    x = rng.normal(0, 1, (100, dim)) + labels[:, None] * 1.0
    return Features(x.astype(np.float32), [f"v{i:03d}" for i in range(100)], labels, ["many", "few"], layer="test")


def test_balance_loss_fits_scikit_learns_class_weighted_model():
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    data = imbalanced()
    probe = fit_linear_probe(data.features, data.labels, "logreg", balance="loss")
    x = StandardScaler().fit_transform(data.features.astype(np.float64))
    reference = LogisticRegression(class_weight="balanced", max_iter=1000, random_state=0).fit(x, data.labels)
    np.testing.assert_allclose(probe.coef, reference.coef_, rtol=1e-4, atol=1e-6)
    plain = fit_linear_probe(data.features, data.labels, "logreg")
    assert probe.predict(data.features).sum() > 2 * plain.predict(data.features).sum()  # calls "few" far more


@pytest.mark.parametrize("balance", ["loss", "sampling"])
@pytest.mark.parametrize("kind", ["logreg", "attentive"])
def test_balance_raises_the_rare_class_recall(kind, balance):
    data = imbalanced()
    videos = video_rows(data)
    few = videos.labels == 1
    recall = {}
    for how in ("none", balance):
        if kind == "attentive":
            probe = fit_attentive_probes(videos, data.classes, [(1e-2, 0.0)], **ATTENTIVE, balance=how)[0]
            predicted = probe.predict(videos)
        else:
            predicted = fit_linear_probe(data.features, data.labels, kind, balance=how).predict(data.features)
        recall[how] = (predicted[few] == 1).mean()
    assert recall[balance] >= recall["none"] + 0.15, recall  # logreg: 6 of 10 to 8; attentive: 4 to 8 or 9


# --------------------------------------------------------------------------- command line


def vidzoo(*args):
    from typer.testing import CliRunner

    from vidzoo.cli import app

    return CliRunner().invoke(app, [str(a) for a in args])


def test_probe_command_writes_every_cell_of_the_grid(tmp_path):
    save_features(needle(videos=60), tmp_path / "f.npy")
    result = vidzoo("probe", tmp_path / "f.npy", "--classifier", "logreg", "--classifier", "linear_svm",
                    "--classifier", "attentive", "--c", 0.1, "--c", 1, "--lr", 1e-3, "--lr", 1e-2,
                    "--weight-decay", 0, "--weight-decay", 0.1, "--epochs", 2, "--test-split", 0.2,
                    "--balance", "loss", "--out", tmp_path / "p")
    assert result.exit_code == 0, result.output
    out = tmp_path / "p"
    grid = json.loads((out / "grid.json").read_text())
    cells = {(c["classifier"], *sorted(c["settings"].items())) for c in grid["cells"]}
    assert cells == {("logreg", ("C", 0.1)), ("logreg", ("C", 1.0)), ("linear_svm", ("C", 0.1)),
                     ("linear_svm", ("C", 1.0))} | {("attentive", ("lr", lr), ("weight_decay", wd))
                                                    for lr in (1e-3, 1e-2) for wd in (0.0, 0.1)}
    best = grid["cells"][grid["best"]["index"]]
    assert best["val_accuracy"] == max(c["val_accuracy"] for c in grid["cells"]) == grid["best"]["val_accuracy"]
    report = json.loads((out / "report.json").read_text())
    assert (report["classifier"], report["settings"], report["balance"]) == (best["classifier"], best["settings"], "loss")
    assert report["test"]["num_videos"] == grid["test"]["num_videos"] == 12
    assert (out / "grid.png").read_bytes().startswith(PNG_SIGNATURE)
    assert "probe grid" in result.stdout and "test video accuracy" in result.stdout


@pytest.mark.parametrize("args, message", [
    (["missing.npy"], "features file missing.npy not found"),
    (["f.npy", "--val-split", 0], "give validation features (--val) or a --val-split fraction above 0"),
    (["f.npy", "--classifier", "knn"], "unknown classifier 'knn'; choose from logreg, linear_svm, attentive"),
    (["f.npy", "--balance", "equal"], "balance must be one of none, loss, sampling, got 'equal'"),
    (["f.npy", "--test", "f.npy", "--test-split", 0.2], "give either test features (--test) or a --test-split"),
])
def test_probe_command_bad_input_is_one_clear_line(args, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    save_features(needle(videos=20), tmp_path / "f.npy")
    result = vidzoo("probe", *args, "--out", tmp_path / "p")
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
