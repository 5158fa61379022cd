"""The whole path on the built-in dataset: make data, train, evaluate, predict.

`make quickstart` runs this. The recipe is sized for about three minutes on two CPU cores:
a C3D-BN at a quarter of the paper's width, 8 frames taken every 2nd frame, 32-pixel crops.
Flips are off because they would turn `move_left` into `move_right`.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from vidzoo.data.datasets import load_source
from vidzoo.data.synthetic import make_synthetic_dataset
from vidzoo.evaluate import evaluate, write_report
from vidzoo.model_file import load_model
from vidzoo.predict import predict_video
from vidzoo.train import TrainConfig, train

__all__ = ["QUICKSTART_RECIPE", "quickstart"]

QUICKSTART_RECIPE: dict[str, Any] = dict(
    model="c3d_bn",
    model_kwargs=dict(width=0.25, num_frames=8, img_size=32, dropout=0.0),
    stride=2,
    flip=False,
    epochs=20,
    batch_size=16,
    lr=5e-4,
    schedule="cosine",
    history="synthetic",
)


def quickstart(out: str | Path = "runs/quickstart", *, videos_per_class: int = 100, epochs: int | None = None,
               workers: int = 2, seed: int = 0, progress: bool = True, log=print) -> dict[str, Any]:
    """Make the synthetic dataset under `out/dataset`, train under `out/run`, evaluate on the
    test split (`out/eval`), predict two test videos; write and return `out/summary.json`."""
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
        workers=workers, seed=seed, out=str(out / "run"), progress=progress,
    )
    result = train(config)
    log(f"      best validation accuracy {result.best_val_accuracy:.1%} (epoch {result.best_epoch})")

    log("[3/4] evaluating on the test split")
    model = load_model(result.model_file)
    test_source = load_source(dataset_dir / "test.csv")
    report = evaluate(model, test_source, num_clips=2, batch_size=32, workers=workers, progress=progress)
    write_report(report, out / "eval")
    log(f"      test video accuracy {report.video_accuracy:.1%}, clip accuracy {report.clip_accuracy:.1%} "
        f"({report.num_videos} videos, chance {1 / len(report.classes):.1%})")

    log("[4/4] predicting two test videos")
    predictions = []
    for sample in test_source.samples[:: max(1, len(test_source) // 2)][:2]:
        prediction = predict_video(model, sample.path, top_k=3)
        truth = test_source.classes[sample.label]
        top = ", ".join(f"{name} {p:.2f}" for name, p in prediction.top)
        log(f"      {sample.video_id} (true: {truth}): {top}")
        predictions.append({"video": sample.video_id, "true": truth, **prediction.to_dict()})

    final = {
        "test_video_accuracy": report.video_accuracy,
        "test_clip_accuracy": report.clip_accuracy,
        "best_val_accuracy": result.best_val_accuracy,
        "model_file": result.model_file,
        "run_dir": result.run_dir,
        "eval_dir": str(out / "eval"),
        "dataset": str(dataset_dir),
        "predictions": predictions,
        "seconds": round(time.perf_counter() - started, 1),
    }
    (out / "summary.json").write_text(json.dumps(final, indent=2))
    return final
