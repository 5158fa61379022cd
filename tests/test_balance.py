"""Class balance (`--balance`): the weights are scikit-learn's balanced ones, balanced draws take
every class equally often, and `vidzoo train` weights its loss or draws its clips so."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_config
from sklearn.utils.class_weight import compute_class_weight

from vidzoo.data.balance import balanced_draw, class_weights
from vidzoo.train.config import TrainConfig
from vidzoo.train.module import EpochShuffleSampler, VideoClassificationModule

# 90 of class 0, then 10 of class 1
IMBALANCED = np.array([0] * 90 + [1] * 10)


def test_class_weights_are_scikit_learns_balanced_weights():
    labels = IMBALANCED
    expected = compute_class_weight("balanced", classes=np.array([0, 1]), y=labels)
    np.testing.assert_allclose(class_weights(labels, 2), expected, rtol=1e-6)
    np.testing.assert_allclose(class_weights(labels, 2), [100 / 180, 100 / 20], rtol=1e-6)
    assert class_weights([0, 0, 2], 3).tolist() == [0.75, 0.0, 1.5]  # an absent class weighs nothing


def test_balanced_draws_take_every_class_equally_often():
    rows = balanced_draw(IMBALANCED, np.random.default_rng(0), size=20_000)
    assert abs((rows >= 90).mean() - 0.5) < 0.02  # rows 90..99 are the 10 of class 1


def test_train_balance_sampling_draws_each_epoch_from_the_balanced_distribution():
    labels = [0] * 9 + [1]
    sampler = EpochShuffleSampler(len(labels), seed=3, balance_labels=labels)
    sampler.set_epoch(2)
    drawn = [index for epoch, index in sampler]
    assert drawn == balanced_draw(labels, np.random.default_rng([3, 2])).tolist()
    many = [index for e in range(200) for _, index in (sampler.set_epoch(e) or sampler)]
    assert abs(np.mean(np.array(many) == 9) - 0.5) < 0.05


def test_train_balance_loss_weights_the_criterion():
    config = TrainConfig(data="unused.csv", balance="loss")
    module = VideoClassificationModule(torch.nn.Linear(2, 2), config, 1, class_weights=class_weights([0, 0, 0, 1], 2))
    assert module.criterion.weight.tolist() == pytest.approx([4 / 6, 2.0])


def test_train_balance_sampling_is_what_the_run_trains_on(dataset, tmp_path):
    from vidzoo.train import train

    config = tiny_config(dataset, tmp_path / "run", epochs=1, balance="sampling", record_samples=True, preflight=0)
    train(config)
    seen = [line.split("\t")[1] for line in (tmp_path / "run" / "seen_rank0.txt").read_text().splitlines()]
    rows = [line.split(",") for line in (tmp_path / "run" / "train_split.csv").read_text().splitlines()[1:]]
    labels = sorted({label for _, label in rows})
    draw = balanced_draw([labels.index(label) for _, label in rows], np.random.default_rng([0, 0]))
    assert len(set(draw)) < len(draw), "premise: drawn with replacement, unlike a shuffle"
    assert sorted(seen) == sorted(Path(rows[i][0]).relative_to(dataset).as_posix() for i in draw)


def test_train_help_lists_balance():
    from typer.testing import CliRunner

    from vidzoo.cli import app

    result = CliRunner().invoke(app, ["train", "--help"], env={"COLUMNS": "200"})
    assert "--balance" in result.stdout and "sampling" in result.stdout
