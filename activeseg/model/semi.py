"""Semi-supervised consistency on unlabeled crops of the pool, added to the supervised loss (``train.semi``).

**Unlabeled crops** are centred on pixels of the training images that are not revealed, drawn uniformly like
the labeled crops (:class:`activeseg.model.crops.PixelPool`), ``round(unlabeled_share x batch_size)`` of them
per step (at least 1), from a random stream of their own: the labeled batches are the ones training without
semi draws. Every pixel of such a crop that lies inside its image takes part in the consistency term.

**Methods** (``train.semi.method``):

- ``mean_teacher`` (Tarvainen & Valpola 2017): the teacher is an exponential moving average of the student's
  weights (Eq. 1, :func:`ema_update`); the consistency is the squared difference of the student's and the
  teacher's class probabilities on two differently perturbed views of a crop (Sect. 2,
  :func:`mean_teacher_consistency`).
- ``fixmatch`` (Sohn et al. 2020): the pseudo-label of a pixel is the argmax of the model's prediction on
  the weak view where its probability reaches ``threshold``; cross entropy on the strong view (Eq. 4,
  :func:`fixmatch_consistency`).

The term is multiplied by ``weight`` and the ramp-up ``exp(-5 (1 - t)^2)`` (:func:`rampup`).

**Decisions where the papers are open or about classification**: the weak view is the crop itself,
flipped left-right at random, and the prediction flipped back; the strong (student) view is the crop with
per-sample, per-channel intensity jitter and Gaussian noise (:func:`perturb`; written here until a shared
augmentation module replaces it). The teacher runs in eval mode (no dropout) with the student's batch-norm
statistics copied at each update; the EMA decay is constant. Consistency is averaged over classes and the
in-image pixels (mean teacher) or over the in-image pixels with unconfident ones counting 0 (FixMatch's
1/(mu B) per pixel). The ramp restarts with each training run (each round). The number of steps is not
changed: it stays bound to the labeled pixels (:func:`activeseg.model.training.planned_steps`).

**Pseudo-labels are not labels**: nothing here writes to the :class:`LabelState`; they live only inside
the loss of a step.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from activeseg.core.config import SemiConfig, TrainConfig
from activeseg.core.data import Dataset
from activeseg.core.labels import LabelState
from activeseg.model.crops import PixelPool, crop_window
from activeseg.model.inference import to_tensor

# the strong view's perturbation: contrast x (1 + U(-c, c)), brightness + U(-b, b), noise N(0, s^2)
CONTRAST, BRIGHTNESS, NOISE = 0.2, 0.1, 0.03


def rampup(step: int, rampup_steps: int) -> float:
    """``exp(-5 (1 - t)^2)`` with ``t = min(step / rampup_steps, 1)`` (Laine & Aila 2017, used by
    Tarvainen & Valpola 2017 and here for FixMatch too); 1 from step 0 when ``rampup_steps`` is 0."""
    t = min(step / rampup_steps, 1.0) if rampup_steps else 1.0
    return math.exp(-5 * (1 - t) ** 2)


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, decay: float) -> None:
    """Tarvainen & Valpola 2017, Eq. 1: ``theta'_t = decay theta'_{t-1} + (1 - decay) theta_t`` for every
    parameter; buffers (batch-norm statistics) are copied from the student."""
    for t, s in zip(teacher.parameters(), student.parameters()):
        t.mul_(decay).add_(s, alpha=1 - decay)
    for t, s in zip(teacher.buffers(), student.buffers()):
        t.copy_(s)


def perturb(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """The strong view of images (N, C, H, W): per sample and channel ``x (1 + U(-CONTRAST, CONTRAST)) +
    U(-BRIGHTNESS, BRIGHTNESS)``, plus per-pixel noise N(0, NOISE^2)."""
    n, c = x.shape[:2]
    contrast = 1 + CONTRAST * (2 * torch.rand(n, c, 1, 1, generator=gen) - 1)
    brightness = BRIGHTNESS * (2 * torch.rand(n, c, 1, 1, generator=gen) - 1)
    return x * contrast + brightness + NOISE * torch.randn(x.shape, generator=gen)


def flip_where(x: torch.Tensor, flips: torch.Tensor) -> torch.Tensor:
    """(N, ...) with the last axis of the samples where ``flips`` (N,) bool is True reversed (its own inverse)."""
    return torch.where(flips.view(-1, *[1] * (x.dim() - 1)), x.flip(-1), x)


def mean_teacher_consistency(student_logits: torch.Tensor, teacher_probs: torch.Tensor,
                             valid: torch.Tensor) -> torch.Tensor:
    """Tarvainen & Valpola 2017, Sect. 2: ``||f(x, theta', eta') - f(x, theta, eta)||^2`` on class
    probabilities, averaged over the classes and the ``valid`` pixels. student_logits, teacher_probs
    (N, C, H, W); valid (N, H, W) bool."""
    squared = ((torch.softmax(student_logits, dim=1) - teacher_probs) ** 2).mean(dim=1)
    return (squared * valid).sum() / valid.sum().clamp_min(1)


def fixmatch_targets(weak_probs: torch.Tensor, threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Sohn et al. 2020, Eq. 4: the pseudo-label ``argmax q`` (N, H, W) and where it counts,
    ``max q >= threshold`` (N, H, W) bool, of weak-view probabilities q (N, C, H, W)."""
    confidence, target = weak_probs.max(dim=1)
    return target, confidence >= threshold


def fixmatch_consistency(strong_logits: torch.Tensor, weak_probs: torch.Tensor, valid: torch.Tensor,
                         threshold: float) -> torch.Tensor:
    """Sohn et al. 2020, Eq. 4 per pixel: the cross entropy of the strong view's logits (N, C, H, W) against
    the confident pseudo-labels of :func:`fixmatch_targets`, summed and divided by every ``valid`` pixel
    (N, H, W) bool, confident or not."""
    target, confident = fixmatch_targets(weak_probs, threshold)
    ce = F.cross_entropy(strong_logits, target, reduction="none")
    return (ce * (confident & valid)).sum() / valid.sum().clamp_min(1)


@dataclass
class UnlabeledCrops:
    """Crops of side ``side`` centred on the pixels of the training images that are not revealed."""

    dataset: Dataset
    shapes: dict[str, tuple[int, int]]
    pool: PixelPool
    side: int

    @classmethod
    def of(cls, state: LabelState, dataset: Dataset, side: int) -> UnlabeledCrops:
        return cls(dataset, dict(state.shapes), PixelPool.of({s: ~k for s, k in state.known.items()}), side)

    def batch(self, n: int, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` crops: images (n, C, side, side) and the pixels inside their image (n, side, side) bool."""
        images, valids = [], []
        for _ in range(n):
            centre = self.pool.draw(rng)
            window = crop_window(self.shapes[centre[0]], centre, self.side)
            ys, xs = window.clipped(*self.shapes[centre[0]])
            valid = torch.zeros(self.side, self.side, dtype=torch.bool)
            valid[: ys.stop - ys.start, : xs.stop - xs.start] = True
            images.append(to_tensor(self.dataset.region_pixels(window)))
            valids.append(valid)
        return torch.stack(images), torch.stack(valids)


@dataclass
class Semi:
    """The semi-supervised term of one training run (module docstring)."""

    settings: SemiConfig
    crops: UnlabeledCrops
    count: int  # unlabeled crops per step
    teacher: nn.Module | None  # mean_teacher only
    rng: np.random.Generator
    gen: torch.Generator
    device: torch.device

    @classmethod
    def of(cls, train: TrainConfig, state: LabelState, dataset: Dataset, student: nn.Module, seed: int,
           device: torch.device) -> Semi | None:
        """None when ``train.semi.method`` is none; the teacher starts as a copy of ``student``."""
        s = train.semi
        if s.method == "none":
            return None
        teacher = copy.deepcopy(student).eval().requires_grad_(False) if s.method == "mean_teacher" else None
        count = max(1, round(s.unlabeled_share * train.batch_size))
        return cls(s, UnlabeledCrops.of(state, dataset, train.crop), count, teacher, np.random.default_rng([seed, 1]),
                   torch.Generator().manual_seed(seed), device)

    def forward(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """Logits (N, C, H, W) as float32 of images (N, C, H, W), mixed precision on CUDA like training."""
        cuda = self.device.type == "cuda"
        with torch.autocast(self.device.type, dtype=torch.float16, enabled=cuda):
            return model(x.to(self.device)).float()

    def loss(self, student: nn.Module, step: int) -> torch.Tensor:
        """``weight x rampup(step) x`` the method's consistency on a fresh batch of unlabeled crops (0 when
        every training pixel is revealed)."""
        s = self.settings
        if not len(self.crops.pool):
            return torch.zeros((), device=self.device)
        x, valid = self.crops.batch(self.count, self.rng)
        flips = torch.rand(len(x), generator=self.gen) < 0.5
        strong = perturb(x, self.gen)
        if self.teacher is None:  # fixmatch: the weak view, predicted by the student itself
            model, view = student, flip_where(x, flips)
        else:  # mean teacher: a second, differently perturbed view, predicted by the teacher
            model, view = self.teacher, flip_where(perturb(x, self.gen), flips)
        with torch.no_grad():
            target = flip_where(torch.softmax(self.forward(model, view), dim=1), flips.to(self.device))
        student_logits, valid = self.forward(student, strong), valid.to(self.device)
        if s.method == "mean_teacher":
            term = mean_teacher_consistency(student_logits, target, valid)
        else:
            term = fixmatch_consistency(student_logits, target, valid, s.threshold)
        return s.weight * rampup(step, s.rampup_steps) * term

    def after_step(self, student: nn.Module) -> None:
        """Move the mean teacher towards the student just updated (no-op for fixmatch)."""
        if self.teacher is not None:
            ema_update(self.teacher, student, self.settings.ema_decay)
