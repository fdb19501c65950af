"""Features at the layers the paper analyses, from one pass over each data set's test split.

For an erudite run (any variant but single) the pass records, per image:
  fused   the input of the joint classifier G: the gated re-fusion of the dataset-specific features
          (variants with heads) or the pooled backbone feature (baseline); Table 1 and Figure 3 use it
  heads   the N dataset-specific features f*_n (B, N, E), when the variant has heads
  gate    the gate weight given to each head, averaged over the E channels (B, N), and
  gate_top the share of channels whose largest weight goes to each head (B, N) (paper section 6.2)
  pred    the joint argmax (the prediction `erudite-edge eval` scores)
All of it is read with forward hooks on the model's own modules in its ordinary inference forward; the
model is not changed. For a zoo (Single) run, `fused` of an image of data set n is the pooled feature its
own fine model n computes (the paper's "D_n -> D_n"), and `pred` is the routed two-stage prediction.

The arrays are cached in one npz with the labels and data set ids; the cache is keyed by the checkpoint
file (path, size, mtime) and the test samples, so a second `analyze` on the same run skips the pass.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import ConcatDataset, DataLoader

from erudite_edge.core.labels import LabelSpace
from train.analysis.feature_set import FeatureSet
from train.checkpoint import Checkpoint
from train.data import DatasetSplits, ImageListDataset, check_matches_labels, collate_skip_bad

CACHE_VERSION = 1


def evaluation_dataset(given: Sequence[DatasetSplits], labels: LabelSpace, ckpt: Checkpoint) -> tuple[ConcatDataset, list[int]]:
    """The test splits of the given data sets, labelled in the run's joint label space (test transform).
    A data set the run was not trained on, or whose classes differ, is a one-line UsageError."""
    parts, indices = [], []
    for s in given:
        i = check_matches_labels(s, labels)
        indices.append(i)
        parts.append(ImageListDataset(s.test, dataset_index=i, joint_offset=labels.offsets[i], spec=ckpt.preprocess,
                                      train=False, crop_bottom=s.crop_bottom))
    return ConcatDataset(parts), indices


def cache_key(ckpt: Checkpoint, given: Sequence[DatasetSplits]) -> str:
    st = ckpt.path.stat()
    h = hashlib.sha256()
    h.update(json.dumps([CACHE_VERSION, str(ckpt.path.resolve()), st.st_size, st.st_mtime_ns]).encode())
    for s in given:
        h.update(s.name.encode())
        for sample in s.test:
            h.update(f"{sample.path}\0{sample.label}\n".encode())
    return h.hexdigest()


class _Recorder:
    """Forward hooks that copy what the named modules see, batch by batch."""

    def __init__(self) -> None:
        self.handles: list[Any] = []
        self.last: dict[str, torch.Tensor] = {}

    def input_of(self, module: nn.Module, key: str) -> None:
        def hook(_m: nn.Module, args: tuple[torch.Tensor, ...], _out: Any) -> None:
            self.last[key] = args[0].detach()

        self.handles.append(module.register_forward_hook(hook))

    def output_of(self, module: nn.Module, key: str, index: int) -> None:
        def hook(_m: nn.Module, _args: Any, out: Any) -> None:
            self.last[key] = out[index].detach()

        self.handles.append(module.register_forward_hook(hook))

    def close(self) -> None:
        for h in self.handles:
            h.remove()


@torch.no_grad()
def extract_features(model: nn.Module, loader: DataLoader, device: torch.device, progress: bool = False) -> FeatureSet:
    """One pass of `model` (an EruditeNet or a ZooModel, in eval mode) over `loader`."""
    model.eval()
    zoo = hasattr(model, "fine")
    rec = _Recorder()
    if not zoo:
        rec.input_of(model.get_submodule("classifier"), "fused")
        if getattr(model, "gate", None) is not None:
            gate = model.get_submodule("gate")
            rec.input_of(gate, "heads")
            rec.output_of(gate, "weights", 1)
    out: dict[str, list[np.ndarray]] = {k: [] for k in ("fused", "joint", "dataset", "pred", "heads", "gate", "gate_top")}
    skipped = 0
    it: Any = loader
    if progress:
        from tqdm import tqdm

        it = tqdm(loader, desc="features", unit="batch", leave=False)
    try:
        for batch in it:
            skipped += int(batch["skipped"])
            if batch["image"].shape[0] == 0:
                continue
            x = batch["image"].to(device)
            ds = batch["dataset"]
            rec.last.clear()
            out["pred"].append(model(x).argmax(1).cpu().numpy())
            if zoo:
                parts = []
                for n in ds.unique().tolist():
                    rows = (ds == n).nonzero(as_tuple=True)[0]
                    fine: Any = model.get_submodule(f"fine.{n}")
                    parts.append((rows, fine.pool(fine.backbone(x[rows.to(device)])).flatten(1).cpu()))
                fused = torch.zeros(len(ds), parts[0][1].shape[1])
                for rows, f in parts:
                    fused[rows] = f
                out["fused"].append(fused.numpy())
            else:
                out["fused"].append(rec.last["fused"].float().cpu().numpy())
                if "weights" in rec.last:
                    w = rec.last["weights"].float().cpu()  # (B, N, E), sums to 1 over N
                    out["heads"].append(rec.last["heads"].float().cpu().numpy())
                    out["gate"].append(w.mean(dim=2).numpy())
                    top = nn.functional.one_hot(w.argmax(dim=1), w.shape[1]).float().mean(dim=1)  # (B, N)
                    out["gate_top"].append(top.numpy())
            out["joint"].append(batch["joint"].numpy())
            out["dataset"].append(ds.numpy())
    finally:
        rec.close()
    if not out["fused"]:
        raise ValueError("no readable test image: nothing to analyse")

    def cat(k: str, dt: Any) -> np.ndarray:
        return np.concatenate(out[k]).astype(dt)

    def maybe(k: str) -> np.ndarray | None:
        return cat(k, np.float32) if out[k] else None

    return FeatureSet(fused=cat("fused", np.float32), joint=cat("joint", np.int64), dataset=cat("dataset", np.int64),
                      pred=cat("pred", np.int64), heads=maybe("heads"), gate=maybe("gate"), gate_top=maybe("gate_top"),
                      skipped=skipped)


def features_for_run(
    ckpt: Checkpoint,
    given: Sequence[DatasetSplits],
    cache: Path | None,
    *,
    device: torch.device,
    model: nn.Module | None = None,
    batch_size: int = 64,
    workers: int = 0,
    progress: bool = False,
) -> tuple[FeatureSet, bool]:
    """The run's FeatureSet on the given data sets' test splits, read from `cache` when it holds this run
    and these samples, else computed (with `model`, the checkpoint's model on `device`, built here when not
    given) and written there. Returns (features, came from the cache)."""
    dataset, _ = evaluation_dataset(given, ckpt.labels, ckpt)
    key = cache_key(ckpt, given)
    if cache is not None and cache.is_file():
        try:
            fs = FeatureSet.load(cache)
            if fs.meta.get("key") == key:
                return fs, True
        except (OSError, ValueError, KeyError, json.JSONDecodeError):
            pass  # unreadable or foreign cache: recompute and replace it
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate_skip_bad, num_workers=workers)
    if model is None:
        model = ckpt.build_model().to(device)
    fs = extract_features(model, loader, device, progress)
    fs.meta = {"key": key, "checkpoint": str(ckpt.path), "variant": ckpt.variant,
               "datasets": list(ckpt.labels.datasets), "analysed": [s.name for s in given]}
    if cache is not None:
        fs.save(cache)
    return fs, False
