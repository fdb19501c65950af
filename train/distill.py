"""Knowledge distillation from a teacher's joint logits (Hinton et al. 2015): weight * T^2 * KL(teacher_T ||
student_T), softmax at temperature T, added to Loss_all in stage I of the erudite step. After pruning the
unpruned network is the natural teacher (`train --finetune RUN_PRUNED --distill RUN`)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Distillation:
    def __init__(self, teacher: nn.Module, temperature: float = 4.0, weight: float = 0.5):
        if temperature <= 0 or weight < 0:
            raise ValueError(f"temperature {temperature} must be above 0 and weight {weight} at least 0")
        self.teacher = teacher.eval()
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        self.temperature, self.weight = temperature, weight

    def teacher_logits(self, images: torch.Tensor) -> torch.Tensor:
        self.teacher.eval()  # its BatchNorm statistics as trained, whatever mode the student is in
        with torch.no_grad():
            return self.teacher(images)

    def __call__(self, images: torch.Tensor, student_logits: torch.Tensor) -> torch.Tensor:
        t = self.temperature
        teacher = F.log_softmax(self.teacher_logits(images).float() / t, dim=1)
        student = F.log_softmax(student_logits.float() / t, dim=1)
        return self.weight * t * t * F.kl_div(student, teacher, log_target=True, reduction="batchmean")
