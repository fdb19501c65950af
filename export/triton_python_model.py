"""The Triton Python-backend model `export triton --kind classifier` copies as NAME/1/model.py.

It holds the bundle (NAME/1/bundle/) in an erudite_edge Classifier, so Triton answers exactly as
`erudite-edge run` and `Classifier.predict` do: the same decoding, preprocessing, backend choice (the
config's "backend"/"precision" parameters: TensorRT where it runs, else ONNX Runtime), top-k and
per-data-set mass.

Inputs (one of them per request; max_batch_size > 0, so clients send a batch axis):
  IMAGE  TYPE_STRING [B, 1]: encoded image bytes (JPEG, PNG, ... as a file holds them)
  FRAME  TYPE_UINT8  [B, H, W, 3]: RGB pixels
Outputs, per image: LABELS / DATASETS (TYPE_STRING [B, k]), SCORES (TYPE_FP32 [B, k]), CLASS_IDS
(TYPE_INT32 [B, k], joint label order), DATASET_MASS (TYPE_FP32 [B, D], datasets.txt order).

With dynamic batching Triton hands `execute` a list of requests, not a stacked batch: their images go to
one Classifier.predict call (on_error="item"), the answers are split back per request, and only a
request holding an image that does not decode gets an error (naming which of its images); the others
in the same call are answered.

This file runs only inside Triton's Python-backend stub (triton_python_backend_utils exists there); its
interpreter must import erudite_edge, numpy (< 2: the stub fails under numpy 2), OpenCV and ONNX Runtime
(EXECUTION_ENV_PATH in config.pbtxt, or the server's own Python; README "Serving").
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import triton_python_backend_utils as pb_utils

from erudite_edge.api import Classifier, Prediction


def _strings(values: list[list[str]]) -> np.ndarray:
    """A BYTES tensor's array: np.object_ of bytes (np.bytes_ would strip trailing zero bytes)."""
    out = np.empty((len(values), len(values[0]) if values else 0), dtype=np.object_)
    for i, row in enumerate(values):
        for j, v in enumerate(row):
            out[i, j] = v.encode("utf-8")
    return out


class TritonPythonModel:
    def initialize(self, args: dict[str, Any]) -> None:
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        # args["model_repository"] is this model's folder (NAME/), the version folder holds the bundle
        version = Path(args["model_repository"]) / args["model_version"]
        self.topk = int(params.get("topk", "5"))
        self.classifier = Classifier(version / "bundle", backend=params.get("backend", "auto"),
                                     precision=params.get("precision", "auto"), topk=self.topk,
                                     batch=max(1, int(config.get("max_batch_size", 8))))
        self.datasets = list(self.classifier.labels.datasets)
        pb_utils.Logger.log_info(f"erudite-edge classifier: {self.classifier!r}")

    @staticmethod
    def _images(request: Any) -> list[Any]:
        """The request's images: encoded bytes (IMAGE) or RGB arrays (FRAME). ValueError: neither or both."""
        image = pb_utils.get_input_tensor_by_name(request, "IMAGE")
        frame = pb_utils.get_input_tensor_by_name(request, "FRAME")
        if (image is None) == (frame is None):
            raise ValueError("give one input: IMAGE (encoded image bytes, [B, 1]) or FRAME (RGB uint8, [B, H, W, 3])")
        if image is not None:
            return [bytes(row[0]) for row in image.as_numpy()]
        return list(frame.as_numpy())

    def _answer(self, preds: list[Prediction]) -> Any:
        k = self.topk
        labels = [[t.label for t in p.topk] + [""] * (k - len(p.topk)) for p in preds]
        datasets = [[t.dataset for t in p.topk] + [""] * (k - len(p.topk)) for p in preds]
        scores = np.zeros((len(preds), k), np.float32)
        ids = np.full((len(preds), k), -1, np.int32)
        for i, p in enumerate(preds):
            for j, t in enumerate(p.topk):
                scores[i, j], ids[i, j] = t.confidence, t.class_index
        mass = np.array([[p.dataset_mass.get(d, 0.0) for d in self.datasets] for p in preds], np.float32)
        return pb_utils.InferenceResponse(output_tensors=[
            pb_utils.Tensor("LABELS", _strings(labels)), pb_utils.Tensor("DATASETS", _strings(datasets)),
            pb_utils.Tensor("SCORES", scores), pb_utils.Tensor("CLASS_IDS", ids),
            pb_utils.Tensor("DATASET_MASS", mass.reshape(len(preds), len(self.datasets)))])

    @staticmethod
    def _error(message: str) -> Any:
        """A failed request: the client's input is wrong (HTTP 400, gRPC INVALID_ARGUMENT), not the server."""
        return pb_utils.InferenceResponse(output_tensors=[],
                                          error=pb_utils.TritonError(message, pb_utils.TritonError.INVALID_ARG))

    def execute(self, requests: list[Any]) -> list[Any]:
        images: list[Any] = []
        spans: list[tuple[int, int] | str] = []  # per request: its slice of `images`, or why it has none
        for request in requests:
            try:
                mine = self._images(request)
            except ValueError as e:
                spans.append(str(e))
                continue
            spans.append((len(images), len(images) + len(mine)))
            images.extend(mine)
        preds = self.classifier.predict(images, color="RGB", on_error="item") if images else []
        responses = []
        for span in spans:
            if isinstance(span, str):
                responses.append(self._error(span))
                continue
            mine = preds[span[0]:span[1]]
            bad = [(j, p.error) for j, p in enumerate(mine) if p.error is not None]
            if bad:
                j, err = bad[0]
                # the message names the image by its place in the combined call ("bytes[7]: ..."): say which
                # of this request's images instead
                message = err.message.removeprefix(f"{mine[j].source}: ")
                responses.append(self._error(f"image {j} of this request ({len(bad)} of {len(mine)} failed): "
                                             f"{err.kind}: {message}"))
            else:
                responses.append(self._answer(mine))
        return responses

    def finalize(self) -> None:
        self.classifier.close()
