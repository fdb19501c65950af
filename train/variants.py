"""The variants of the paper's Table 2, as one switch."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Variant:
    name: str
    heads: bool  # dataset-specific projection heads + gate + auxiliary classifiers G_n
    attention: bool  # the dataset-agnostic spatial attention layer
    theta_training: str | None  # how the attention parameters theta learn: "joint" | "meta" | "pcgrad" | None
    zoo: bool = False
    separate: bool = False  # each model of the zoo trained alone (train.single), as the paper's Single
    pmg: bool = False  # PMG's progressive jigsaw training with the erudite head on its last stage (train.pmg)
    description: str = ""


VARIANTS: dict[str, Variant] = {
    v.name: v
    for v in (
        Variant("baseline", False, False, None, description="backbone, pooling, one joint classifier"),
        Variant("baseline+", True, False, None, description="+ dataset-specific heads, gated re-fusion, G_n"),
        Variant("baseline++", True, True, "joint", description="+ spatial attention trained by the ordinary loss"),
        Variant("ours", True, True, "meta", description="+ attention trained by the second-order meta step"),
        Variant("ours-pcgrad", True, True, "pcgrad", description="+ attention trained with PCGrad over data sets"),
        Variant("ours-pmg", True, True, "meta", pmg=True,
                description="PMG (jigsaw 8/4/2/1, progressive stages) with the erudite head on its final stage"),
        Variant("single", False, False, None, zoo=True, separate=True,
                description="coarse data-set classifier + one model per data set, each trained alone (the paper's Single)"),
        Variant("single-joint", False, False, None, zoo=True,
                description="the same zoo, its N+1 models stepped together on the balanced batches of one run"),
    )
}


def get_variant(name: str) -> Variant:
    try:
        return VARIANTS[name]
    except KeyError:
        raise ValueError(f"unknown variant {name!r}; one of {', '.join(VARIANTS)}") from None
