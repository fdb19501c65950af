"""Loss_all (paper Eq. 6) = CE(G(F), y_joint) + mean over data sets of CE(G_n(f*_n), y_n)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from train.model import HeadOutput


def loss_all(out: HeadOutput, joint: torch.Tensor, local: torch.Tensor) -> torch.Tensor:
    """Eq. 5 + Eq. 3 on the rows of `out`. The auxiliary term averages over the data sets present
    (each G_n sees only its own data set's rows, with that data set's local labels)."""
    main = F.cross_entropy(out.logits.float(), joint)
    if not out.aux:
        return main
    aux = torch.stack([F.cross_entropy(logits.float(), local[rows]) for _, rows, logits in out.aux]).mean()
    return main + aux
