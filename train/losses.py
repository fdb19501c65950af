"""The training losses: Loss_all (paper Eq. 6) = CE(G(F), y_joint) + mean over data sets of CE(G_n(f*_n), y_n),
and pmg_losses, the loss of each of Ours_PMG's sub-steps (train.pmg, stepped by train.two_stage.PMGStep).

They read a HeadOutput (train.model_spec) and import none of the networks."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from train.model_spec import HeadOutput


def loss_all(out: HeadOutput, joint: torch.Tensor, local: torch.Tensor) -> torch.Tensor:
    """Eq. 5 + Eq. 3 on the rows of `out`. The auxiliary term averages over the data sets present
    (each G_n sees only its own data set's rows, with that data set's local labels)."""
    main = F.cross_entropy(out.logits.float(), joint)
    if not out.aux:
        return main
    aux = torch.stack([F.cross_entropy(logits.float(), local[rows]) for _, rows, logits in out.aux]).mean()
    return main + aux


def pmg_losses(out: HeadOutput, index: int, joint: torch.Tensor, local: torch.Tensor) -> torch.Tensor:
    """Stage 3 trains on Loss_all (G and the G_n); the other stages on the joint cross-entropy."""
    if index == 2:
        return loss_all(out, joint, local)
    return F.cross_entropy(out.logits.float(), joint)
