"""Linear probes: they learn separable features, agree with scikit-learn, split by video, save
without pickle, and refuse features they cannot use."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from conftest import TINY_MODEL
from safetensors import safe_open
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import LinearSVC

from vidzoo.features import Features, extract_features, save_features
from vidzoo.linear_probe import (
    fit_linear_probe,
    linear_probe,
    load_linear_probe,
    write_probe_report,
)
from vidzoo.models import create_model

CLASSIFIERS = ["logreg", "linear_svm"]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def blobs(classes: int = 3, per_class: int = 40, dim: int = 16, seed: int = 0, clips: int = 1) -> Features:
    """Gaussian blobs, one per class, far apart: linearly separable. `clips` rows per video."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 4, size=(classes, dim))
    labels = np.repeat(np.arange(classes), per_class)
    videos = [f"v{i:03d}" for i in range(len(labels))]
    x = centres[labels] + rng.normal(0, 1, size=(len(labels), dim))
    return Features(
        np.repeat(x, clips, axis=0).astype(np.float32) + rng.normal(0, 0.01, (len(labels) * clips, dim)).astype(np.float32),
        [v for v in videos for _ in range(clips)], np.repeat(labels, clips), [f"c{i}" for i in range(classes)],
        np.tile(np.arange(clips), len(labels)) if clips > 1 else None, per="clip" if clips > 1 else "video",
        clips_per_video=clips, layer="test",
    )


@pytest.mark.parametrize("classifier", CLASSIFIERS)
def test_separable_blobs_are_learned(classifier):
    probe, report = linear_probe(blobs(), classifier=classifier)
    assert report.accuracy >= 0.95  # chance is 1/3
    assert report.num_val == report.num_val_videos == 24  # 20% of 40 per class, stratified
    assert sum(map(sum, report.confusion_matrix)) == 24
    assert [row[i] for i, row in enumerate(report.confusion_matrix)] == [
        report.per_class[c]["videos"] * report.per_class[c]["accuracy"] for c in report.classes]


@pytest.mark.parametrize("classes", [2, 4])
@pytest.mark.parametrize("classifier", CLASSIFIERS)
def test_predictions_agree_with_scikit_learn(classifier, classes):
    # Overlapping blobs, so the decision boundary matters.
    train, test = blobs(classes, 30, dim=8, seed=1), blobs(classes, 30, dim=8, seed=2)
    train.features *= 0.2
    probe = fit_linear_probe(train.features, train.labels, classifier)
    estimator = LogisticRegression(max_iter=1000, random_state=0) if classifier == "logreg" else \
        LinearSVC(max_iter=1000, random_state=0)
    # The probe computes in float64; so does the reference, given float64 rows.
    x_train, x_test = train.features.astype(np.float64), test.features.astype(np.float64)
    reference = make_pipeline(StandardScaler(), estimator).fit(x_train, train.labels)
    np.testing.assert_array_equal(probe.predict(test.features), reference.predict(x_test))
    np.testing.assert_allclose(probe.decision_function(test.features), reference.decision_function(x_test),
                               rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("classifier", CLASSIFIERS)
def test_a_saved_probe_loads_back_without_pickle(classifier, tmp_path):
    data = blobs()
    probe = fit_linear_probe(data.features, data.labels, classifier, classes=data.classes)
    path = probe.save(tmp_path / "probe.safetensors")
    with safe_open(str(path), framework="np") as f:  # plain arrays and JSON: nothing to unpickle
        assert set(f.keys()) == {"class_indices", "mean", "scale", "coef", "intercept"}
        assert json.loads(f.metadata()["vidzoo_probe"])["classes"] == data.classes
    loaded = load_linear_probe(path)
    assert (loaded.classifier, loaded.classes) == (classifier, data.classes)
    # The fitted probe scores through scikit-learn, the loaded one through its saved arrays: two
    # code paths in float64, whose BLAS calls may sum in another order on another CPU (1.8e-15
    # apart was seen), so they agree to a float64 tolerance, not bit for bit.
    np.testing.assert_allclose(loaded.decision_function(data.features), probe.decision_function(data.features),
                               rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(loaded.predict(data.features), probe.predict(data.features))


def test_clips_of_one_video_never_sit_on_both_sides():
    # Random labels per video, clips that are near-copies of each other: a split that put a
    # video's clips on both sides would score almost 100%; a split by video scores near chance.
    data = blobs(classes=2, per_class=30, dim=32, seed=3, clips=4)
    rng = np.random.default_rng(0)
    video_labels = rng.integers(0, 2, size=60)
    data.labels = np.repeat(video_labels, 4)
    data.features = np.repeat(rng.normal(size=(60, 32)), 4, axis=0).astype(np.float32)
    _, report = linear_probe(data, val_split=0.3)
    assert report.num_val == 4 * report.num_val_videos
    assert report.accuracy < 0.8


def test_validation_features_are_matched_by_class_name():
    train = blobs(seed=0)
    val = blobs(seed=0)
    # The same rows with the class list in another order: the labels must follow the names.
    order = [2, 0, 1]
    val.classes = [val.classes[i] for i in order]
    val.labels = np.array([order.index(i) for i in val.labels])
    _, report = linear_probe(train, val=val)
    assert report.accuracy >= 0.95
    assert report.val_from.startswith("validation features")


def test_probe_on_the_tiny_dataset_matches_scikit_learn(dataset, tmp_path):
    # The synthetic classes differ only in motion, which an untrained model does not see, so
    # accuracy here is about chance; what is checked is the whole path on real features.
    torch.manual_seed(0)
    model = create_model("c3d_bn", num_classes=8, **TINY_MODEL)
    train = extract_features(model, dataset / "train.csv", out=tmp_path / "train.npy", progress=False)
    test = extract_features(model, dataset / "test.csv", out=tmp_path / "test.parquet", progress=False)
    probe, report = linear_probe(tmp_path / "train.npy", val=tmp_path / "test.parquet")
    assert report.train_accuracy == 1.0  # 8 points in 256 dimensions are separable
    reference = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000, random_state=0))
    reference.fit(train.features, train.labels)
    assert report.accuracy == pytest.approx(reference.score(test.features, test.labels))
    assert (report.layer, report.model["name"], report.num_val) == ("pre_logits", "c3d_bn", 8)


def test_write_probe_report_writes_every_file(tmp_path):
    probe, report = linear_probe(blobs())
    paths = write_probe_report(probe, report, tmp_path / "out")
    assert json.loads(paths["json"].read_text())["accuracy"] == report.accuracy
    with open(paths["csv"], newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["true\\predicted", *report.classes]
    assert [[int(n) for n in row[1:]] for row in rows[1:]] == report.confusion_matrix
    assert paths["png"].read_bytes()[:8] == PNG_SIGNATURE
    assert load_linear_probe(paths["probe"]).classes == report.classes


# --------------------------------------------------------------------------- bad inputs


def test_features_without_labels_are_refused(tmp_path):
    data = blobs()
    save_features(Features(data.features, data.video_ids, None, None), tmp_path / "unlabeled.parquet")
    with pytest.raises(ValueError, match="training features .* have no labels"):
        linear_probe(tmp_path / "unlabeled.parquet")


def test_missing_features_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="features file .*nothing.npy not found"):
        linear_probe(tmp_path / "nothing.npy")


def test_validation_class_unknown_to_training_is_refused():
    val = blobs()
    val.classes = ["c0", "c1", "zebra"]
    with pytest.raises(ValueError, match=r"validation classes \['zebra'\] are not among the training classes"):
        linear_probe(blobs(), val=val)


def test_validation_features_of_another_layer_are_refused():
    val = blobs()
    val.layer = "features.conv2"
    with pytest.raises(ValueError, match="differ in layer"):
        linear_probe(blobs(), val=val)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"classifier": "svm"}, "unknown classifier 'svm'; choose one of logreg, linear_svm"),
    ({"c": 0.0}, "must be > 0"),
])
def test_bad_probe_arguments_are_named(kwargs, message):
    data = blobs()
    with pytest.raises(ValueError, match=message):
        fit_linear_probe(data.features, data.labels, **kwargs)


def test_a_single_training_class_is_refused():
    with pytest.raises(ValueError, match="at least 2 classes"):
        fit_linear_probe(np.zeros((4, 2)), np.zeros(4, dtype=int))


# --------------------------------------------------------------------------- command line


def vidzoo(*args):
    from typer.testing import CliRunner

    from vidzoo.cli import app

    return CliRunner().invoke(app, [str(a) for a in args])


def test_probe_command_on_a_features_file(tmp_path):
    save_features(blobs(), tmp_path / "f.npy")
    result = vidzoo("probe", tmp_path / "f.npy", "--classifier", "linear_svm", "--out", tmp_path / "p")
    assert result.exit_code == 0, result.output
    assert "confusion matrix" in result.stdout and "0 c0" in result.stdout
    report = json.loads((tmp_path / "p" / "report.json").read_text())
    assert report["classifier"] == "linear_svm" and report["accuracy"] >= 0.95
    assert {p.name for p in (tmp_path / "p").iterdir()} == {"report.json", "confusion.csv", "confusion.png",
                                                           "probe.safetensors", "grid.json", "grid.png"}


def test_probe_command_extracts_from_a_model_and_videos(dataset, tmp_path):
    from vidzoo.models import save_model

    torch.manual_seed(0)
    model_file = save_model(create_model("c3d_bn", num_classes=8, **TINY_MODEL), tmp_path / "m.safetensors",
                            history="test")
    result = vidzoo("probe", model_file, dataset / "train.csv", "--val", dataset / "val.csv", "--test",
                    dataset / "test.csv", "--workers", 0, "--out", tmp_path / "p", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert (report["num_train"], report["num_val"], report["layer"]) == (8, 8, "pre_logits")
    assert report["test"]["num_videos"] == 8 and len(report["grid"]) == 1
    assert {"features.npy", "val_features.json", "test_features.npy"} <= {p.name for p in (tmp_path / "p").iterdir()}


@pytest.mark.parametrize("inputs", [["a.npy", "b.csv", "c"], []])
def test_probe_command_wants_one_or_two_inputs(inputs, tmp_path):
    result = vidzoo("probe", *inputs, "--out", tmp_path / "p")
    assert result.exit_code == 2
    if inputs:
        assert "expected FEATURES or MODEL DATA, got 3 arguments" in result.stderr


def test_probe_command_reports_unlabeled_features_as_a_user_error(tmp_path):
    data = blobs()
    save_features(Features(data.features, data.video_ids, None, None), tmp_path / "f.npy")
    result = vidzoo("probe", tmp_path / "f.npy", "--out", tmp_path / "p")
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "have no labels" in result.stderr
