"""The GPU trainer (torch): backbones, the erudite model and its variants, data readers, the balanced
sampler, the two-stage meta-learning optimiser, the training loop and evaluation."""
