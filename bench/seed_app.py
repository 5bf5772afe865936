"""The seed's way of serving the same bundles: a peer that facedemo is measured against.

    python -m bench.seed_app --port 8002                 # the bundles in models/
    python -m bench.seed_app --port 8002 --models-dir DIR

A small Flask app as the seed project served its models, on Flask's own threaded server:
POST /predict saves the multipart upload `file` to a temporary file, reads it back with
`keras.utils.load_img`, and calls `model.predict` once per model per request. With
`?detect=auto` it finds faces with the stock `mtcnn.MTCNN().detect_faces` (built once) and
crops each box; otherwise the whole image is one face. The answer is JSON: per face its box,
the expected age of the regressor's age distribution and the classifier's gender.

It exists for bench/peers.py only (Flask comes with the bench extra); the temporary file is
deleted once the request is answered.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def create_app(models_dir: Path) -> Any:
    """The Flask app over the newest bundles of both models in `models_dir`."""
    import keras
    from flask import Flask, jsonify, request
    from mtcnn import MTCNN

    from facedemo.bundles import REQUIRED_MODELS, find_bundle
    from facedemo.manifest import CLASSIFIER_NAME, GENDER_LABELS, MODEL_FILE

    models = {
        name: keras.saving.load_model(find_bundle(models_dir, name) / MODEL_FILE, compile=False)
        for name in REQUIRED_MODELS
    }
    height, width = (int(side) for side in models[CLASSIFIER_NAME].inputs[0].shape[1:3])
    detector = MTCNN()
    app = Flask("seed")

    @app.get("/")
    def ready() -> Any:
        return jsonify({"status": "ready"})

    @app.post("/predict")
    def predict() -> Any:
        upload = request.files["file"]
        handle, path = tempfile.mkstemp(suffix=".jpg")
        os.close(handle)
        try:
            upload.save(path)
            if request.args.get("detect", "skip") == "auto":
                image = keras.utils.img_to_array(keras.utils.load_img(path)).astype(np.uint8)
                found = detector.detect_faces(image)
                boxes = [face["box"] for face in found if face["confidence"] >= 0.95]
                crops = [
                    keras.utils.img_to_array(
                        keras.utils.array_to_img(
                            image[max(0, y) : y + h, max(0, x) : x + w]
                        ).resize((width, height))
                    )
                    for x, y, w, h in boxes
                ]
            else:
                crop = keras.utils.load_img(path, target_size=(height, width))
                crops = [keras.utils.img_to_array(crop)]
                boxes = [[0, 0, *keras.utils.load_img(path).size]]
        finally:
            os.remove(path)
        faces = []
        if crops:
            batch = np.stack(crops)
            outputs = {name: model.predict(batch, verbose=0) for name, model in models.items()}
            logits = np.concatenate(
                [output["age_logits"] for output in outputs.values() if "age_logits" in output]
            )
            ages = _expected_age(logits.reshape(-1, len(crops), logits.shape[-1]).mean(axis=0))
            genders = outputs[CLASSIFIER_NAME]["gender"]
            for box, age, gender in zip(boxes, ages, genders, strict=True):
                faces.append(
                    {
                        "box": [int(value) for value in box],
                        "age": round(float(age), 1),
                        "gender": GENDER_LABELS[int(np.argmax(gender))],
                    }
                )
        return jsonify({"faces": faces})

    return app


def _expected_age(logits: np.ndarray) -> np.ndarray:
    """The mean of each row's softmax over ages 0, 1, 2, ..."""
    probabilities = np.exp(logits - logits.max(axis=1, keepdims=True))
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    return probabilities @ np.arange(logits.shape[1])


def main(argv: list[str] | None = None) -> int:
    """Serve the app on 127.0.0.1 with Flask's threaded development server."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=8002)
    parser.add_argument("--models-dir", type=Path, default=ROOT / "models")
    args = parser.parse_args(argv)
    create_app(args.models_dir).run(host="127.0.0.1", port=args.port, threaded=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
