"""The whole path on the built-in dataset: make data, train, evaluate, predict.

`make quickstart` runs this. The recipe is sized for about 3 minutes on two CPU cores:
a C3D-BN at a quarter of the paper's width, 8 frames taken every 2nd frame, 32-pixel crops, two
clips per test video. Flips are off because they would turn `move_left` into `move_right`.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from vidzoo.data.sources import load_source
from vidzoo.data.synthetic import make_synthetic_dataset
from vidzoo.models.factory import load_model
from vidzoo.predict import predict_video
from vidzoo.train.config import TrainConfig
from vidzoo.train.run import train

__all__ = ["QUICKSTART_RECIPE", "quickstart"]

QUICKSTART_RECIPE: dict[str, Any] = dict(
    model="c3d_bn",
    model_args=dict(width=0.25, dropout=0.0),
    frames=8,
    size=32,
    frame_stride=2,
    clips_per_video=2,
    flip=False,
    epochs=20,
    batch_size=16,
    lr=5e-4,
    schedule="cosine",
    history="synthetic",
)


def quickstart(out: str | Path = "runs/quickstart", *, videos_per_class: int = 100, epochs: int | None = None,
               workers: int = 2, seed: int = 0, progress: bool = True, log=print) -> dict[str, Any]:
    """Make the synthetic dataset under `out/dataset`, train under `out/run` (which evaluates the
    best model on the test split, in `out/run/test`), predict two test videos; write and return
    `out/summary.json`."""
    started = time.perf_counter()
    out = Path(out)
    dataset_dir = out / "dataset"
    log(f"[1/4] making the synthetic motion dataset in {dataset_dir}")
    summary = make_synthetic_dataset(dataset_dir, videos_per_class=videos_per_class, seed=seed, overwrite=True)
    log(summary.summary_table())

    recipe = dict(QUICKSTART_RECIPE, epochs=epochs or QUICKSTART_RECIPE["epochs"])
    log(f"[2/4] training {recipe['model']} for {recipe['epochs']} epochs in {out / 'run'}")
    config = TrainConfig(
        **recipe, data=str(dataset_dir / "train.csv"), val=str(dataset_dir / "val.csv"),
        test=str(dataset_dir / "test.csv"), workers=workers, seed=seed, out=str(out / "run"), progress=progress,
    )
    result = train(config)
    log(f"      best validation accuracy {result.best_val_accuracy:.1%} (epoch {result.best_epoch})")

    test = result.test
    log(f"[3/4] the best model on the test split ({Path(result.run_dir) / 'test'})")
    log(f"      test video accuracy {test['video_accuracy']:.1%}, clip accuracy {test['clip_accuracy']:.1%} "
        f"({test['num_videos']} videos, chance {1 / len(result.classes):.1%})")

    log("[4/4] predicting two test videos")
    model = load_model(result.model_file)
    test_source = load_source(dataset_dir / "test.csv")
    predictions = []
    for sample in test_source.samples[:: max(1, len(test_source) // 2)][:2]:
        prediction = predict_video(model, sample.path, top_k=3)
        truth = test_source.classes[sample.label]
        top = ", ".join(f"{name} {p:.2f}" for name, p in prediction.top)
        log(f"      {sample.video_id} (true: {truth}): {top}")
        predictions.append({"video": sample.video_id, "true": truth, **prediction.to_dict()})

    final = {
        "test_video_accuracy": test["video_accuracy"],
        "test_clip_accuracy": test["clip_accuracy"],
        "best_val_accuracy": result.best_val_accuracy,
        "model_file": result.model_file,
        "run_dir": result.run_dir,
        "eval_dir": str(Path(result.run_dir) / "test"),
        "dataset": str(dataset_dir),
        "predictions": predictions,
        "seconds": round(time.perf_counter() - started, 1),
    }
    (out / "summary.json").write_text(json.dumps(final, indent=2))
    return final
