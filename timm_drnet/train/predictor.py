""" Predictor training on per-resolution losses (beyond the paper)

The paper's stage 2 trains the predictor through the routed classification loss and the FLOPs regulariser: its
gradient says how the loss would change if an image's hard weight moved, a weak signal on a few thousand
images (on imagenette the predictor it gives ranks images no better than chance). Here, with the backbone
frozen, every training image's loss at every candidate resolution is known, and the predictor learns to score
the candidates by it: its target for image i is

    q_ij = softmax_j(-(l_ij + cost_weight * C_j / C_0) / T)

a soft choice of the resolutions whose loss is low (``cost_weight`` prices the cost, relative to the largest
candidate's). A budget is set at inference by shifting the scores with a cost penalty (``set_budget``), so
``cost_weight=0`` (the default) already gives what routing needs: a ranking of images by how much they lose at
each smaller resolution. Train it on images the backbone was not fitted on, so that "easy" means easy on new
images.

Without augmentation, the thumbnails the predictor sees and the per-resolution losses are fixed: both are
computed in one pass over the data (``resolution_outputs``) and the predictor trains on them for many epochs at
the cost of the predictor alone (``fit_predictor``).
"""
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Sequence

import torch
import torch.nn.functional as F
from timm.optim import create_optimizer_v2
from timm.scheduler import create_scheduler_v2

from ..checkpoint import atomic_torch_save, export_safetensors
from ..drnet import DRNet
from ..errors import setting_error
from ..precision import Precision
from ..routing import resize
from .resume import StopSignal, TrainingInterrupted

__all__ = ['PredictorFitSettings', 'ResolutionOutputs', 'fit_predictor', 'resolution_outputs', 'resolution_targets',
           'train_predictor_stage']

_logger = logging.getLogger(__name__)


class ResolutionOutputs(NamedTuple):
    """What the frozen backbone says about a set of images, one row each."""
    thumbnails: torch.Tensor  # (N, C, s, s) float16: the predictor's input
    losses: torch.Tensor  # (N, m) cross-entropy at each candidate resolution
    correct: torch.Tensor  # (N, m) bool: top-1 right at each candidate


@dataclass(frozen=True)
class PredictorFitSettings:
    """How ``fit_predictor`` trains: timm optimiser kwargs, a cosine schedule over ``epochs``, the targets' shape."""
    epochs: int = 30
    batch_size: int = 64
    optimizer: Optional[Dict[str, Any]] = None  # create_optimizer_v2 kwargs, default AdamW lr 1e-3, wd 0.05
    warmup_epochs: int = 1
    temperature: float = 1.0
    cost_weight: float = 0.0

    def __post_init__(self):
        if self.epochs < 1 or self.batch_size < 1:
            raise setting_error(ValueError, f'{{epochs}} and {{batch_size}} must be >= 1, got {self.epochs} and '
                                            f'{self.batch_size}')
        if self.temperature <= 0 or self.cost_weight < 0:
            raise setting_error(ValueError, f'{{temperature}} must be > 0 and {{cost_weight}} >= 0, got '
                                            f'{self.temperature} and {self.cost_weight}')


def resolution_targets(losses: torch.Tensor, costs: torch.Tensor, cost_weight: float = 0.,
                       temperature: float = 1.) -> torch.Tensor:
    """(N, m) soft targets softmax_j(-(losses_ij + cost_weight * costs_j / costs_0) / temperature)."""
    costs = torch.as_tensor(costs, dtype=losses.dtype, device=losses.device)
    return (-(losses + cost_weight * costs / costs[0]) / temperature).softmax(-1)


@torch.no_grad()
def resolution_outputs(model: DRNet, loader: Any, precision: Precision, device: Optional[torch.device] = None,
                       log_fn: Optional[Callable[[int, int], None]] = None) -> ResolutionOutputs:
    """ One pass of the model (eval mode) over ``loader``: each image's thumbnail and its loss at every candidate.

    ``device`` moves each batch there (None: batches arrive on it, as from timm's prefetcher).
    """
    model.eval()
    thumbs, losses, correct = [], [], []
    size = (model.predictor_size, model.predictor_size)
    for batch_idx, (x, target) in enumerate(loader):
        if device is not None:
            x, target = x.to(device), target.to(device)
        with precision.autocast():
            logits = [model(x, resolution_index=j).float() for j in range(model.num_resolutions)]
        thumbs.append(resize(x, size).half().cpu())
        losses.append(torch.stack([F.cross_entropy(z, target, reduction='none') for z in logits], 1).cpu())
        correct.append(torch.stack([z.argmax(-1) == target for z in logits], 1).cpu())
        if log_fn is not None:
            log_fn(batch_idx, len(loader))
    return ResolutionOutputs(torch.cat(thumbs), torch.cat(losses), torch.cat(correct))


def _soft_cross_entropy(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return -(targets * scores.float().log_softmax(-1)).sum(-1).mean()


def fit_predictor(
        model: DRNet,
        train: ResolutionOutputs,
        costs: Sequence[float],
        settings: PredictorFitSettings,
        monitor: Optional[ResolutionOutputs] = None,
        on_epoch: Optional[Callable[[int, Dict[str, float]], None]] = None,
) -> List[Dict[str, float]]:
    """ Train ``model.predictor`` towards ``resolution_targets`` of ``train``; the backbone is not touched.

    ``costs`` are the backbone's costs at the candidates. Each epoch shuffles the images (the torch RNG), and after
    it calls ``on_epoch(epoch, metrics)`` (a checkpoint, say); ``monitor`` (held-out images) adds their soft
    cross-entropy and the top-1 and cost of routing each to its highest-scored candidate. Marks the predictor
    trained. Returns every epoch's metrics.
    """
    s = settings
    device = next(model.predictor.parameters()).device
    costs = torch.tensor(costs, dtype=torch.float32)
    targets = resolution_targets(train.losses, costs, s.cost_weight, s.temperature)
    model.predictor.requires_grad_(True)
    optimizer = create_optimizer_v2(model.predictor, **(s.optimizer or dict(opt='adamw', lr=1e-3, weight_decay=0.05)))
    steps = (len(targets) + s.batch_size - 1) // s.batch_size
    scheduler, _ = create_scheduler_v2(optimizer, sched='cosine', num_epochs=s.epochs, warmup_epochs=s.warmup_epochs,
                                       warmup_lr=1e-6, step_on_epochs=False, updates_per_epoch=steps)
    history = []
    for epoch in range(s.epochs):
        start, total = time.time(), 0.
        model.predictor.train()
        order = torch.randperm(len(targets))
        for step, rows in enumerate(order.split(s.batch_size)):
            scores = model.predictor(train.thumbnails[rows].to(device).float())
            loss = _soft_cross_entropy(scores, targets[rows].to(device))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step_update(num_updates=epoch * steps + step + 1)
            total += loss.item() * len(rows)
        metrics = dict(loss=total / len(targets))
        if monitor is not None:
            metrics.update(_monitor_metrics(model, monitor, costs, s))
        history.append(metrics)
        _logger.info(f'Predictor epoch {epoch + 1}/{s.epochs} {time.time() - start:.1f}s: ' +
                     ' '.join(f'{k} {v:.4g}' for k, v in metrics.items()))
        if on_epoch is not None:
            on_epoch(epoch, metrics)
    model.mark_predictor_trained()
    return history


@torch.no_grad()
def _monitor_metrics(model: DRNet, monitor: ResolutionOutputs, costs: torch.Tensor,
                     s: PredictorFitSettings) -> Dict[str, float]:
    device = next(model.predictor.parameters()).device
    model.predictor.eval()
    scores = torch.cat([model.predictor(t.to(device).float()).cpu() for t in monitor.thumbnails.split(256)])
    targets = resolution_targets(monitor.losses, costs, s.cost_weight, s.temperature)
    chosen = scores.argmax(-1)
    return dict(monitor_loss=_soft_cross_entropy(scores, targets).item(),
                monitor_top1=100 * monitor.correct.gather(1, chosen[:, None]).float().mean().item(),
                monitor_cost=costs[chosen].mean().item())


def train_predictor_stage(
        model: DRNet,
        settings: PredictorFitSettings,
        loader_train: Any,
        loader_monitor: Optional[Any],
        stage_dir: Path,
        record: Any,
        precision: Precision,
        stop: StopSignal,
        device: Optional[torch.device] = None,
) -> List[Dict[str, float]]:
    """ The ``predictor`` stage of ``train.py``: one pass of the frozen model over both loaders (which should not
    augment), then ``fit_predictor``; after each epoch the model, its DRNet config and the epoch's metrics go to
    ``last.pth.tar`` (atomically), and at the end ``model.safetensors`` + ``config.json``. ``record`` is the run's
    ``CheckpointRecord``; ``device`` moves batches there (None: they arrive on it). SIGTERM (``stop``) ends it
    after the current batch of the pass or epoch of training with ``TrainingInterrupted`` (the stage starts over
    when run again)."""
    start = time.time()
    last = stage_dir / 'last.pth.tar'

    def check(*_) -> None:
        if stop.requested:
            raise TrainingInterrupted('stopped by SIGTERM in the predictor stage',
                                      last if last.exists() else None, resumable=False)
    train = resolution_outputs(model, loader_train, precision, device, check)
    monitor = resolution_outputs(model, loader_monitor, precision, device, check) if loader_monitor is not None \
        else None
    _logger.info(f'Per-resolution losses of {len(train.losses)} training images in {time.time() - start:.0f}s; '
                 f'top-1 at each candidate there ' +
                 '/'.join(f'{100 * c:.1f}' for c in train.correct.float().mean(0).tolist()))
    costs = model.cost_table(record.drnet_config['input_size']).backbone

    def save(epoch: int, metrics: Dict[str, float]) -> None:
        atomic_torch_save(dict(epoch=epoch, stage='predictor', state_dict=model.state_dict(), metrics=metrics,
                               drnet=record.drnet_config, args=record.run_args), last)
        check()
    history = fit_predictor(model, train, costs, settings, monitor, save)
    save(settings.epochs - 1, history[-1])  # the flag marking the predictor trained, set at the end
    export_safetensors(model, stage_dir, record.model_args, record.data_config)
    return history
