#!/usr/bin/env python3
""" DRNet Training Script

Trains Dynamic Resolution Networks (Zhu et al., NeurIPS 2021) the way timm's train.py trains timm models,
with timm's data, optimizer, scheduler, EMA and checkpoint utilities, in the paper's two stages:

* ``--stage multires`` (stage 1): every batch at all m candidate resolutions, each through its own private
  BN branch, the m cross-entropy losses summed. The predictor is frozen and unused.
* ``--stage drnet`` (stage 2): predictor and backbone fine-tuned jointly, each image at the resolution the
  predictor picks (Gumbel-softmax, straight through), loss = CE + eta * FLOPs loss; the predictor learns at
  ``--predictor-lr-scale`` x the learning rate.
* ``--stage both`` (the default): stage 1, then stage 2 starting from its weights.

With no ``--data-dir`` the built-in synthetic data set is used, so ``python train.py`` alone runs the whole
recipe on a small DRNet on a CPU and ends with a table of the DRNet against the static backbone at each
resolution and a random router at the DRNet's resolution shares.

Outputs go to ``<output>/<experiment>/<stage>/``: ``last.pth.tar`` and the best ``checkpoint-N.pth.tar``
(complete training state, atomic writes, weights-only loadable), ``summary.csv``, ``args.yaml``, and at the
end of a stage ``model.safetensors`` + ``config.json`` (``timm.create_model('local-dir:<dir>')`` loads them).

SIGTERM stops training after the current step with that step's state in ``last.pth.tar`` (exit status 143);
``--resume`` continues the interrupted epoch exactly. ``--cost latency`` measures per-resolution latency on
this device and uses it, in ms, wherever GMACs are used otherwise. Unreadable image files are skipped and
named (``--strict-data``: stop at the first).

The paper's ImageNet recipe on 8 GPUs:
    torchrun --nproc_per_node=8 train.py -c configs/drnet_resnet50_multires.yaml --data-dir /data/imagenet
"""
import argparse
import json
import logging
import math
import os
import signal
import sys
import tempfile
import time
from collections import OrderedDict
from contextlib import suppress
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import torch
import torch.distributed as dist
import yaml
from torch import nn
from torch.nn.parallel import DistributedDataParallel as NativeDDP

from timm.data import resolve_data_config
from timm.models import safe_model_name
from timm.optim import create_optimizer_v2, optimizer_kwargs, param_groups_weight_decay
from timm.scheduler import create_scheduler_v2, scheduler_kwargs
from timm.utils import (
    ModelEmaV3, NativeScaler, ParseKwargs, accuracy, add_bool_arg, distribute_bn,
    init_distributed_device, random_seed, setup_default_logging, trim_summary, update_summary,
)

import timm_drnet
from timm_drnet.checkpoint import (
    DRNetCheckpointSaver, atomic_replace, get_rng_state, load_checkpoint_weights, load_training_checkpoint,
    set_rng_state,
)
from timm_drnet.config import (
    DEFAULT_MODEL, DEFAULT_MODEL_KWARGS, build_drnet, check_input_size, check_single_image_maps, drnet_config,
    install_saved_cost_tables, resolve_model_args, saved_cost_tables,
)
from timm_drnet.data import (
    SYNTHETIC_NAME, apply_synthetic_defaults, create_dataset, create_loader, dataset_classes, is_synthetic,
)
from timm_drnet.evaluate import collect_predictions, format_table, summarize

_logger = logging.getLogger('train')

STAGES = ('multires', 'drnet')

# The first arg parser parses out only the --config argument, this argument is used to
# load a yaml file containing key-values that override the defaults for the main parser below
config_parser = parser = argparse.ArgumentParser(description='Training Config', add_help=False)
parser.add_argument('-c', '--config', default='', type=str, metavar='FILE',
                    help='YAML config file specifying default arguments')

parser = argparse.ArgumentParser(description='DRNet training (timm-style, two stages)')

group = parser.add_argument_group('Dataset parameters')
group.add_argument('--data-dir', metavar='DIR', default=None,
                   help='path to dataset root (default: none, the built-in synthetic data set)')
group.add_argument('--dataset', metavar='NAME', default='',
                   help='dataset type + name ("<type>/<name>"), as timm; empty = ImageFolder/ImageTar, '
                        f'"{SYNTHETIC_NAME}" = the built-in set (the default without --data-dir)')
group.add_argument('--train-split', metavar='NAME', default='train', help='dataset train split (default: train)')
group.add_argument('--val-split', metavar='NAME', default='validation',
                   help='dataset validation split (default: validation)')
group.add_argument('--dataset-download', action='store_true', default=False,
                   help='allow download of dataset for torch/ and tfds/ datasets that support it')
group.add_argument('--class-map', default='', type=str, metavar='FILENAME',
                   help='path to class to idx mapping file (default: "")')
group.add_argument('--synthetic-samples', type=int, nargs=2, default=(6000, 2000), metavar=('TRAIN', 'VAL'),
                   help='images in the synthetic train / validation sets (default: 6000 2000)')
group.add_argument('--strict-data', action='store_true', default=False,
                   help='stop at the first unreadable image file, naming it (default: skip bad files with a warning '
                        'each, replaced by the next readable file in training, left out in evaluation)')

group = parser.add_argument_group('Model parameters')
group.add_argument('--model', default=None, type=str, metavar='MODEL',
                   help=f'DRNet model name (default: the checkpoint\'s, else "{DEFAULT_MODEL}")')
group.add_argument('--model-kwargs', nargs='*', default=None, action=ParseKwargs,
                   help='create_model keyword arguments, e.g. backbone=resnet18 (default: the checkpoint\'s, '
                        'else ' + ' '.join(f'{k}={v}' for k, v in DEFAULT_MODEL_KWARGS.items()) +
                        f' for --model {DEFAULT_MODEL})')
add_bool_arg(group, 'pretrained', default=False,
             help='start from the backbone\'s pretrained timm weights, copied into every BN branch (default: off)')
group.add_argument('--pretrained-path', default=None, type=str,
                   help='load these weights (a backbone or DRNet file) instead of the hub\'s with --pretrained')
group.add_argument('--initial-checkpoint', default='', type=str, metavar='PATH',
                   help='load these model weights (e.g. a stage-1 checkpoint) before training')
group.add_argument('--resume', default='', type=str, metavar='PATH',
                   help='resume the full training state (epoch, optimizer, scheduler, EMA, RNG) from checkpoint')
group.add_argument('--no-resume-opt', action='store_true', default=False,
                   help='prevent resume of optimizer state when resuming model')
group.add_argument('--num-classes', type=int, default=None, metavar='N',
                   help='number of label classes (default: the checkpoint\'s, else the data set\'s)')
group.add_argument('--img-size', type=int, default=None, metavar='N', help='image size (default: None => model)')
group.add_argument('--input-size', default=None, nargs=3, type=int, metavar='N',
                   help='input dimensions (d h w, e.g. --input-size 3 224 224), uses model default if empty')
group.add_argument('--crop-pct', default=None, type=float, metavar='N', help='input image center crop percent')
group.add_argument('--mean', type=float, nargs='+', default=None, metavar='MEAN',
                   help='override mean pixel value of dataset')
group.add_argument('--std', type=float, nargs='+', default=None, metavar='STD', help='override std deviation')
group.add_argument('--interpolation', default='', type=str, metavar='NAME',
                   help='image resize interpolation type (overrides model)')
group.add_argument('-b', '--batch-size', type=int, default=64, metavar='N',
                   help='input batch size for training, per process (default: 64)')
group.add_argument('-vb', '--validation-batch-size', type=int, default=None, metavar='N',
                   help='validation batch size override (default: None)')

group = parser.add_argument_group('DRNet parameters')
group.add_argument('--stage', default='both', choices=('both',) + STAGES,
                   help='multires (stage 1), drnet (stage 2) or both in turn (default: both)')
group.add_argument('--multires-epochs', type=int, default=5, metavar='N',
                   help='stage-1 epochs with --stage both (--epochs is then stage 2\'s) (default: 5)')
group.add_argument('--resolutions', type=float, nargs='+', default=None, metavar='SCALE',
                   help='candidate scales of the input size, largest first (default: the model\'s, 1 0.75 0.5)')
group.add_argument('--predictor', default=None, choices=sorted(timm_drnet.PREDICTORS),
                   help='resolution predictor design: resnet (the paper\'s), mobile, or backbone (a copy of the '
                        'backbone\'s first stages with its --pretrained weights) (default: the model\'s)')
group.add_argument('--predictor-size', type=int, default=None, metavar='N',
                   help='side of the image the predictor sees (default: the model\'s)')
group.add_argument('--cost', default=None, choices=('macs', 'latency'),
                   help='C_j of the FLOPs loss and of every reported average: counted GMACs, or the latency (ms per '
                        'image, predictor included) measured on this device before training and saved with the '
                        'checkpoints (default: the table saved in the --resume / --initial-checkpoint checkpoint, '
                        'if any, else macs; a resumed run always keeps its checkpoint\'s)')
group.add_argument('--latency-batch-size', type=int, default=1, metavar='N',
                   help='batch size the latency table is measured at (--cost latency; default: 1)')
group.add_argument('--latency-repeats', type=int, default=20, metavar='N',
                   help='timed runs per entry of the latency table, the median is kept (default: 20)')
group.add_argument('--flops-target', type=float, default=None, metavar='COST',
                   help='alpha: target average backbone cost per image, GMACs (ms with --cost latency) (paper '
                        'eq. 7; default: the mean of the candidates\' costs, what a uniform random choice spends)')
group.add_argument('--flops-weight', type=float, default=0.1, metavar='ETA',
                   help='eta: weight of the FLOPs loss (paper eq. 8, its ablation spans 0.1 to 1; default: 0.1)')
add_bool_arg(group, 'flops-two-sided', default=True,
             help='penalise the average cost below alpha too, holding it at alpha (default: on; the paper only '
                  'caps it, --no-flops-two-sided, which on the built-in set lets routing collapse to the '
                  'smallest resolution)')
group.add_argument('--gumbel-tau', type=float, default=3.0, metavar='TAU',
                   help='Gumbel-softmax temperature at the start of stage 2 (default: 3.0)')
group.add_argument('--gumbel-tau-end', type=float, default=None, metavar='TAU',
                   help='temperature at the end of stage 2, decayed per update (default: none, constant)')
group.add_argument('--gumbel-tau-decay', default='exp', choices=('exp', 'linear', 'cosine'),
                   help='shape of the temperature decay with --gumbel-tau-end (default: exp)')
group.add_argument('--predictor-grad', default=None, choices=timm_drnet.PREDICTOR_GRADS,
                   help='the predictor\'s straight-through gradient: routed (each image\'s chosen resolution only), '
                        'or all (also each image\'s logits at the other resolutions, computed without gradient: '
                        'the predictor compares resolutions, one extra forward per image and resolution) '
                        '(default: the model\'s, routed)')
group.add_argument('--predictor-lr-scale', type=float, default=0.1, metavar='SCALE',
                   help='predictor learning rate as a multiple of --lr (paper: 0.1, the default)')
group.add_argument('--freeze-backbone', action='store_true', default=False,
                   help='stage 2 trains the predictor only (backbone weights and BN statistics fixed)')

group = parser.add_argument_group('Optimizer parameters')
group.add_argument('--opt', default='sgd', type=str, metavar='OPTIMIZER', help='optimizer (default: "sgd")')
group.add_argument('--opt-eps', default=None, type=float, metavar='EPSILON', help='optimizer epsilon')
group.add_argument('--opt-betas', default=None, type=float, nargs='+', metavar='BETA', help='optimizer betas')
group.add_argument('--momentum', type=float, default=0.9, metavar='M', help='optimizer momentum (default: 0.9)')
group.add_argument('--weight-decay', type=float, default=1e-4, help='weight decay (default: 1e-4)')

group = parser.add_argument_group('Learning rate schedule parameters')
group.add_argument('--sched', type=str, default='cosine', metavar='SCHEDULER',
                   help='LR scheduler (default: "cosine"; the paper uses "step")')
add_bool_arg(group, 'sched-on-updates', default=True,
             help='step the LR schedule (and warmup) every update rather than every epoch (default: on)')
group.add_argument('--lr', type=float, default=0.1, metavar='LR', help='learning rate (default: 0.1)')
group.add_argument('--warmup-lr', type=float, default=1e-5, metavar='LR', help='warmup learning rate (default: 1e-5)')
group.add_argument('--min-lr', type=float, default=0, metavar='LR', help='lower lr bound for cyclic schedulers')
group.add_argument('--epochs', type=int, default=6, metavar='N',
                   help='number of epochs to train (stage 2\'s with --stage both) (default: 6)')
group.add_argument('--decay-epochs', type=float, default=90, metavar='N', help='epoch interval to decay LR')
group.add_argument('--decay-milestones', default=[90, 180, 270], type=int, nargs='+', metavar='MILESTONES',
                   help='list of decay epoch indices for multistep lr')
group.add_argument('--decay-rate', '--dr', type=float, default=0.1, metavar='RATE', help='LR decay rate')
group.add_argument('--warmup-epochs', type=int, default=1, metavar='N', help='epochs to warmup LR (default: 1)')

group = parser.add_argument_group('Augmentation and regularization parameters')
group.add_argument('--no-aug', action='store_true', default=False, help='disable all training augmentation')
group.add_argument('--scale', type=float, nargs=2, default=None, metavar=('MIN', 'MAX'),
                   help='random resize crop area range (default: 0.08 1, the synthetic set 0.7 1)')
group.add_argument('--ratio', type=float, nargs=2, default=[3. / 4., 4. / 3.], metavar=('MIN', 'MAX'),
                   help='random resize crop aspect ratio range (default: 0.75 1.33)')
group.add_argument('--hflip', type=float, default=0.5, help='horizontal flip training aug probability')
group.add_argument('--vflip', type=float, default=0., help='vertical flip training aug probability')
group.add_argument('--color-jitter', type=float, default=0.4, metavar='PCT', help='color jitter factor')
group.add_argument('--aa', type=str, default=None, metavar='NAME', help='auto augment policy, e.g. "rand-m9-mstd0.5"')
group.add_argument('--smoothing', type=float, default=0.0, help='label smoothing (default: 0, the paper\'s CE)')
group.add_argument('--train-interpolation', type=str, default=None,
                   help='training interpolation (random, bilinear, bicubic; default: the data config\'s)')

group = parser.add_argument_group('Model exponential moving average parameters')
group.add_argument('--model-ema', action='store_true', default=False, help='keep an EMA of the model weights')
group.add_argument('--model-ema-decay', type=float, default=0.9998, help='decay factor for model weights EMA')
group.add_argument('--model-ema-warmup', action='store_true', help='enable warmup for model EMA decay')

group = parser.add_argument_group('Miscellaneous parameters')
group.add_argument('--seed', type=int, default=42, metavar='S', help='random seed (default: 42)')
group.add_argument('--log-interval', type=int, default=50, metavar='N', help='batches between progress logs')
group.add_argument('--checkpoint-hist', type=int, default=3, metavar='N', help='number of checkpoints to keep')
group.add_argument('-j', '--workers', type=int, default=2, metavar='N', help='data loading processes (default: 2)')
group.add_argument('--amp', action='store_true', default=False, help='mixed precision training (GPU only)')
group.add_argument('--amp-dtype', default='float16', choices=('float16', 'bfloat16'), help='AMP dtype')
group.add_argument('--pin-mem', action='store_true', default=False, help='pin CPU memory in DataLoader')
group.add_argument('--no-prefetcher', action='store_true', default=False, help='disable fast prefetcher')
group.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu', type=str,
                   help='device (default: cuda if available, else cpu)')
group.add_argument('--output', default='', type=str, metavar='PATH', help='output folder (default: ./output/train)')
group.add_argument('--experiment', default='', type=str, metavar='NAME',
                   help='name of the train experiment, the output subfolder (default: a timestamp, or the '
                        'resumed checkpoint\'s)')
group.add_argument('--eval-metric', default='top1', type=str, metavar='EVAL_METRIC', help='best metric (default: top1)')
group.add_argument('--dist-bn', type=str, default='reduce', choices=('broadcast', 'reduce', ''),
                   help='distribute BatchNorm stats between nodes after each epoch (default: reduce)')
group.add_argument('--no-ddp-bb', action='store_true', default=False,
                   help='do not broadcast buffers (BN statistics) from rank 0 at every DDP forward')


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite."""


class CheckpointWriteError(RuntimeError):
    """A checkpoint could not be written; the previous one is intact (writes are atomic)."""


class TrainingInterrupted(Exception):
    """SIGTERM stopped training after a checkpoint of the state at that point was written."""

    def __init__(self, message: str, checkpoint: Path):
        super().__init__(message)
        self.checkpoint = checkpoint


class EpochInterrupted(Exception):
    """Raised by ``train_one_epoch`` after the step at which SIGTERM stops it: what resuming that step needs."""

    def __init__(self, step: int, sums: torch.Tensor, rng_prev: Optional[Dict], rng_step: Dict):
        super().__init__(f'interrupted after step {step}')
        self.step, self.sums, self.rng_prev, self.rng_step = step, sums, rng_prev, rng_step


class StopSignal:
    """ SIGTERM sets ``requested``: training stops after the current step and writes a checkpoint first.

    Further SIGTERMs are ignored, so a repeated signal cannot cut the checkpoint write short (SIGKILL still
    ends the process at once). Loader workers forked later inherit the handler and keep serving batches until
    the main process shuts them down.
    """

    def __init__(self):
        self.requested = False
        self._pid = os.getpid()
        signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum: int, frame: Any) -> None:
        if os.getpid() == self._pid and not self.requested:
            _logger.warning('SIGTERM received: finishing the current step, then writing a checkpoint and exiting.')
        self.requested = True


def _parse_args() -> Tuple[argparse.Namespace, str]:
    # Do we have a config file to parse?
    args_config, remaining = config_parser.parse_known_args()
    if args_config.config:
        with open(args_config.config, 'r') as f:
            cfg = yaml.safe_load(f) or {}
        known = {a.dest for a in parser._actions}
        unknown = sorted(set(cfg) - known)
        if unknown:
            parser.error(f'{args_config.config}: unknown setting(s) {unknown}; use the long flag names with '
                         f'underscores, e.g. batch_size, flops_target')
        parser.set_defaults(**cfg)

    # The main arg parser parses the rest of the args, the usual
    # defaults will have been overridden if config file specified.
    args = parser.parse_args(remaining)

    # Cache the args as a text string to save them in the output dir later
    args_text = yaml.safe_dump(args.__dict__, default_flow_style=False)
    return args, args_text


class StageForward(nn.Module):
    """ The model's training forward for one stage, as the single module call DDP wraps.

    ``multires``: the whole batch at every candidate resolution, one logits tensor each. ``drnet``: the
    routed forward with its routing record (``DRNetOutput``).
    """

    def __init__(self, model: nn.Module, stage: str):
        super().__init__()
        self.model = model
        self.stage = stage

    def forward(self, x: torch.Tensor) -> Any:
        if self.stage == 'multires':
            return tuple(self.model(x, resolution_index=j) for j in range(self.model.num_resolutions))
        return self.model.forward_routed(x)


def gumbel_tau(progress: float, start: float, end: Optional[float], decay: str) -> float:
    """Temperature after ``progress`` (0..1) of the stage: ``start`` decayed to ``end`` (constant if None)."""
    if end is None:
        return start
    progress = min(max(progress, 0.), 1.)
    if decay == 'linear':
        return start + (end - start) * progress
    if decay == 'cosine':
        return end + (start - end) * 0.5 * (1 + math.cos(math.pi * progress))
    return start * (end / start) ** progress


def predictor_param_groups(model: nn.Module, weight_decay: float, predictor_lr_scale: float) -> List[Dict]:
    """timm's weight-decay groups for the backbone, and for the predictor with ``lr_scale`` (the paper's 0.1x)."""
    groups = []
    for module, lr_scale in ((model.backbone, 1.0), (model.predictor, predictor_lr_scale)):
        for group in param_groups_weight_decay(module, weight_decay):
            if group['params']:
                groups.append(dict(group, lr_scale=lr_scale))
    return groups


def resolve_flops_target(flops_target: Optional[float], costs: Tuple[float, ...], unit: str, two_sided: bool) -> float:
    """ alpha for the FLOPs loss: the given target, checked to be reachable, or the candidates' mean cost."""
    low, high = min(costs), max(costs)
    if flops_target is None:
        return sum(costs) / len(costs)
    if flops_target < low:
        raise ValueError(
            f'--flops-target {flops_target:g} {unit} is below the smallest reachable average: the backbone '
            f'costs {low:.4g} {unit} per image even at the smallest resolution. Choose a target between '
            f'{low:.4g} and {high:.4g} {unit} (candidate costs: {", ".join(f"{c:.4g}" for c in costs)}).')
    if flops_target >= high:
        effect = 'pulls every image to the largest resolution' if two_sided else \
            'is never active and routing learns accuracy only'
        _logger.warning(f'--flops-target {flops_target:g} {unit} is at or above the largest resolution\'s '
                        f'{high:.4g} {unit}: the FLOPs loss {effect}.')
    return flops_target


def _collective_device() -> torch.device:
    """Where tensors for collectives must live: NCCL takes CUDA tensors only."""
    return torch.device('cuda', torch.cuda.current_device()) if dist.get_backend() == 'nccl' else torch.device('cpu')


def _any_rank(flag: bool, distributed: bool) -> bool:
    """True on every rank when ``flag`` is true on any."""
    if not distributed:
        return flag
    t = torch.tensor([float(flag)], device=_collective_device())
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def _gather(obj: Any, args: argparse.Namespace) -> List[Any]:
    """``obj`` of every rank, in rank order (a one-element list without distributed training)."""
    if not args.distributed:
        return [obj]
    objs = [None] * args.world_size
    dist.all_gather_object(objs, obj)
    return objs


def epoch_batches(loader: Any, position: Optional[Dict[str, Any]]) -> Iterator[Tuple[int, Any]]:
    """ ``enumerate(loader)``, or with ``position`` (of a SIGTERM checkpoint) its batches after ``position['step']``.

    For a resumed epoch the RNG must hold the epoch's starting state (the interrupted run's) before the call.
    The batches before the position are read again but not returned, so the sampler order and the loader
    workers' augmentation RNG advance exactly as they did. The main process's RNG is set to the interrupted
    run's state at the end of the step before the last one skipped, ahead of the read that (through timm's
    prefetcher) loads the first batch returned, and to its state at the interruption after, so the rest of
    the epoch, loaded with ``--workers 0`` or not, is the same as in a run never stopped.
    """
    if position is None:
        yield from enumerate(loader)
        return
    start = position['step']
    if start >= len(loader):  # stopped after the epoch's last step: no batch left to read
        set_rng_state(position['rng_step'])
        return
    for batch_idx, batch in enumerate(loader):
        if batch_idx >= start:
            yield batch_idx, batch
        elif batch_idx == start - 2:
            set_rng_state(position['rng_prev'])
        elif batch_idx == start - 1:
            set_rng_state(position['rng_step'])


def _reduce_sum(t: torch.Tensor, distributed: bool) -> torch.Tensor:
    if distributed:
        t = t.to(_collective_device(), copy=True)
        dist.all_reduce(t)
        t = t.cpu()
    return t


def _format_eta(seconds: float) -> str:
    return str(timedelta(seconds=int(max(seconds, 0))))


def _res_names(resolutions: Tuple[float, ...]) -> List[str]:
    return [f'{r:g}x' for r in resolutions]


def train_one_epoch(
        epoch: int,
        num_epochs: int,
        stage: str,
        model: nn.Module,
        forward: nn.Module,
        loader: Any,
        optimizer: torch.optim.Optimizer,
        criterion: nn.Module,
        drnet_loss: Optional[timm_drnet.DRNetLoss],
        costs: timm_drnet.CostTable,
        args: argparse.Namespace,
        device: torch.device,
        lr_scheduler: Any,
        model_ema: Optional[ModelEmaV3],
        amp_autocast: Callable,
        loss_scaler: Optional[NativeScaler],
        stop: StopSignal,
        position: Optional[Dict[str, Any]] = None,
) -> Dict[str, float]:
    """ One epoch of stage ``stage``; returns the epoch's metrics, averaged over every rank's images.

    Raises ``EpochInterrupted`` after the step at which any rank got SIGTERM. ``position`` (this rank's part
    of a SIGTERM checkpoint) continues the epoch after its step, with the interrupted run's metric sums.
    """
    forward.train()
    if stage == 'drnet' and args.freeze_backbone:
        model.backbone.eval()  # predictor-only training: backbone BN statistics stay fixed too
    m = model.num_resolutions
    names = _res_names(model.resolutions)
    # sums over images: loss, ce, flops loss, cost, images, then per resolution (stage 1: ce, stage 2: count)
    sums = position['sums'].clone() if position is not None else torch.zeros(5 + m, dtype=torch.float64)
    num_batches = len(loader)
    first_step = position['step'] if position is not None else 0
    num_updates = epoch * num_batches + first_step
    rng_prev = position['rng_step'] if position is not None else None  # RNG at the end of the previous step
    start = time.time()
    for batch_idx, (x, target) in epoch_batches(loader, position):
        if args.no_prefetcher:
            x, target = x.to(device), target.to(device)
        if stage == 'drnet':
            model.tau = gumbel_tau((epoch + batch_idx / num_batches) / num_epochs, args.gumbel_tau,
                                   args.gumbel_tau_end, args.gumbel_tau_decay)
        with amp_autocast():
            if stage == 'multires':
                ce_per_res = torch.stack([criterion(logits, target) for logits in forward(x)])
                loss = ce_per_res.sum()
            else:
                out = forward(x)
                parts = drnet_loss(out.logits, target, out.hard, costs.backbone)
                loss = parts.total

        # one all-reduce for both: the loss is finite on every rank, and no rank got SIGTERM
        status = torch.stack([torch.isfinite(loss.detach()), torch.tensor(not stop.requested, device=loss.device)])
        status = status.float()
        if args.distributed:
            dist.all_reduce(status, op=dist.ReduceOp.MIN)
        finite, go_on = status.tolist()
        if not finite:
            raise NonFiniteLossError(f'the training loss became {loss.item()} in stage {stage}, epoch {epoch + 1}/'
                                     f'{num_epochs}, step {batch_idx + 1}/{num_batches} (update {num_updates + 1})')

        optimizer.zero_grad()
        if loss_scaler is not None:
            loss_scaler(loss, optimizer, parameters=[p for p in model.parameters() if p.requires_grad])
        else:
            loss.backward()
            optimizer.step()
        if model_ema is not None:
            model_ema.update(model, step=num_updates)
        num_updates += 1
        lr_scheduler.step_update(num_updates=num_updates)

        n = x.shape[0]
        with torch.no_grad():
            if stage == 'multires':
                batch = [loss.item(), loss.item(), 0., 0., 1.] + ce_per_res.tolist()
            else:
                counts = torch.bincount(out.resolution_index, minlength=m).tolist()
                batch = [parts.total.item(), parts.ce.item(), parts.flops.item(), out.cost.float().mean().item(),
                         1.] + [c / n for c in counts]
        sums += torch.tensor(batch, dtype=torch.float64) * n

        last = batch_idx == num_batches - 1
        if args.rank == 0 and (last or batch_idx % args.log_interval == 0):
            elapsed = time.time() - start
            avg = sums / sums[4]
            lr = optimizer.param_groups[0]['lr']
            if stage == 'multires':
                detail = 'ce ' + '/'.join(f'{c:.3f}' for c in avg[5:].tolist()) + f' ({"/".join(names)})'
            else:
                detail = (f'ce {avg[1]:.3f} flops {avg[2]:.3f} {timm_drnet.unit_label(costs.unit)} {avg[3]:.4g} shares '
                          + '/'.join(f'{100 * s:.0f}' for s in avg[5:].tolist()) + f'% tau {model.tau:.3g}')
            _logger.info(
                f'Train [{stage}] epoch {epoch + 1}/{num_epochs} [{batch_idx + 1:>4d}/{num_batches} '
                f'{100. * (batch_idx + 1) / num_batches:>3.0f}%] loss {avg[0]:.3f} {detail} lr {lr:.3g} '
                f'{(batch_idx + 1 - first_step) * n * args.world_size / max(elapsed, 1e-9):.0f} img/s '
                f'ETA {_format_eta(elapsed / (batch_idx + 1 - first_step) * (num_batches - batch_idx - 1))}')
        if not go_on:
            raise EpochInterrupted(batch_idx + 1, sums, rng_prev, get_rng_state())
        rng_prev = get_rng_state()

    sums = _reduce_sum(sums, args.distributed)
    avg = (sums / sums[4]).tolist()
    metrics = OrderedDict(loss=avg[0])
    if stage == 'multires':
        metrics.update((f'ce_{name}', c) for name, c in zip(names, avg[5:]))
    else:
        metrics.update(ce=avg[1], flops_loss=avg[2], **{costs.unit: avg[3]}, tau=model.tau)
        metrics.update((f'share_{name}', s) for name, s in zip(names, avg[5:]))
    return metrics


@torch.no_grad()
def validate(
        stage: str,
        model: nn.Module,
        loader: Any,
        args: argparse.Namespace,
        device: torch.device,
        amp_autocast: Callable,
) -> Dict[str, float]:
    """ Eval metrics of one stage, reduced over ranks.

    ``multires``: top-1 / top-5 at each candidate alone, ``top1`` / ``top5`` their mean. ``drnet``: the routed
    model's top-1 / top-5, average cost with the predictor (keyed by the cost unit, ``gmacs`` or ``ms``), and the
    share of images at each resolution.
    """
    model.eval()
    m = model.num_resolutions
    names = _res_names(model.resolutions)
    k = min(5, model.num_classes)
    # sums over images: images, then stage 1: (top1, topk) per resolution; stage 2: top1, topk, cost, counts
    sums = torch.zeros(1 + (2 * m if stage == 'multires' else 3 + m), dtype=torch.float64)
    for x, target in loader:
        if args.no_prefetcher:
            x, target = x.to(device), target.to(device)
        n = x.shape[0]
        with amp_autocast():
            if stage == 'multires':
                batch = []
                for j in range(m):
                    batch += [a.item() * n / 100 for a in accuracy(model(x, resolution_index=j), target, (1, k))]
            else:
                out = model.forward_routed(x)
                batch = [a.item() * n / 100 for a in accuracy(out.logits, target, (1, k))]
                batch += [out.cost.float().sum().item()]
                batch += torch.bincount(out.resolution_index, minlength=m).tolist()
        sums += torch.tensor([n] + batch, dtype=torch.float64)
    sums = _reduce_sum(sums, args.distributed)
    avg = (sums[1:] / sums[0]).tolist()
    metrics = OrderedDict()
    if stage == 'multires':
        top1, topk = avg[0::2], avg[1::2]
        metrics.update(top1=100 * sum(top1) / m, top5=100 * sum(topk) / m)
        for name, a1, ak in zip(names, top1, topk):
            metrics.update({f'top1_{name}': 100 * a1, f'top5_{name}': 100 * ak})
    else:
        metrics.update(top1=100 * avg[0], top5=100 * avg[1], **{model.cost_unit: avg[2]})
        metrics.update((f'share_{name}', s) for name, s in zip(names, avg[3:]))
    return metrics


def export_safetensors(model: nn.Module, folder: Path, model_kwargs: Dict, data_config: Dict) -> None:
    """``model.safetensors`` + ``config.json`` (timm ``save_for_hf`` format) in ``folder``, each replaced atomically."""
    with tempfile.TemporaryDirectory(dir=folder, prefix='.export-') as tmp:
        timm_drnet.save_for_hf(model, tmp, model_args=model_kwargs, data_config=data_config)
        for name in os.listdir(tmp):
            atomic_replace(os.path.join(tmp, name), folder / name)


def setup(args: argparse.Namespace, device: torch.device) -> Dict[str, Any]:
    """Checkpoints, data sets, model, data config and loaders, with clear errors for bad settings."""
    if args.resume and args.initial_checkpoint:
        raise ValueError('Use either --resume (continue a run) or --initial-checkpoint (start from weights), not both.')
    ckpt_path = args.resume or args.initial_checkpoint
    ckpt = load_training_checkpoint(ckpt_path) if ckpt_path else None
    ckpt_cfg = ckpt.get('drnet') if ckpt else None
    if args.resume and not ckpt.get('stage'):
        raise ValueError(f'{args.resume} is not a train.py training checkpoint (no stage or training state); '
                         f'start from its weights with --initial-checkpoint instead.')

    if ckpt_cfg and args.input_size is None and args.img_size is None:
        args.input_size = list(ckpt_cfg['input_size'])
    if is_synthetic(args.dataset, args.data_dir):
        apply_synthetic_defaults(args)
    img_size = (args.input_size or [args.img_size or 64])[-1]
    dataset_kwargs = dict(img_size=img_size, class_map=args.class_map, strict_data=args.strict_data,
                          download=args.dataset_download, batch_size=args.batch_size)
    dataset_train = create_dataset(args.dataset, root=args.data_dir, split=args.train_split, is_training=True,
                                   num_samples=args.synthetic_samples[0], **dataset_kwargs)
    dataset_eval = create_dataset(args.dataset, root=args.data_dir, split=args.val_split, is_training=False,
                                  num_samples=args.synthetic_samples[1], **dataset_kwargs)
    classes = dataset_classes(dataset_train)
    flags = dict(resolutions=args.resolutions, predictor=args.predictor, predictor_size=args.predictor_size,
                 predictor_grad=args.predictor_grad, num_classes=args.num_classes)
    name, kwargs = resolve_model_args(args.model, args.model_kwargs, flags, ckpt_cfg,
                                      len(classes) if classes else None)
    args.model, args.num_classes = name, kwargs.pop('num_classes')
    args.model_kwargs = kwargs
    if classes and len(classes) > args.num_classes:
        raise ValueError(f'The data set has {len(classes)} classes but the model is built for {args.num_classes}; '
                         f'pass --num-classes {len(classes)}.')
    model = build_drnet(name, dict(kwargs, num_classes=args.num_classes), args.pretrained, args.pretrained_path)
    if ckpt is not None:
        load_checkpoint_weights(model, ckpt, ckpt_path)

    data_config = resolve_data_config(vars(args), model=model, verbose=args.rank == 0)
    check_input_size(model, data_config['input_size'])
    if args.stage != 'multires' and not args.freeze_backbone:  # stage 2 trains BN on routed groups of any size
        check_single_image_maps(model, data_config['input_size'])
    return dict(model=model, ckpt=ckpt, dataset_train=dataset_train, dataset_eval=dataset_eval,
                data_config=data_config)


def install_costs(model: nn.Module, args: argparse.Namespace, ckpt: Optional[Dict[str, Any]],
                  input_size: Sequence[int], device: torch.device) -> None:
    """ ``--cost``: counted MACs, or a latency table measured here (rank 0, shared with every rank) and installed.

    Without ``--cost`` a run starting from a checkpoint takes the latency table saved in it, if any. A resumed
    run always keeps its checkpoint's costs (the FLOPs loss and its target are in their units); ``--cost
    latency`` in any other run measures afresh on this device.
    """
    path = args.resume or args.initial_checkpoint
    cfg = ckpt.get('drnet') if ckpt else None
    trained_with = 'latency' if saved_cost_tables(cfg) else 'macs'
    if args.resume and args.cost not in (None, trained_with):
        raise ValueError(f'{args.resume} was trained with --cost {trained_with}; a resumed run keeps its costs '
                         f'(the FLOPs loss and --flops-target are in their units). Drop --cost {args.cost}, or '
                         f'start a new run from its weights with --initial-checkpoint.')
    if (args.resume or args.cost is None) and install_saved_cost_tables(model, cfg, input_size, path):
        args.cost = 'latency'
        if args.rank == 0:
            _logger.info(f'Costs: the latency table saved in {path} '
                         f'({model.cost_table(input_size).describe(model.resolutions)}).')
        return
    args.cost = args.cost or 'macs'
    if args.cost == 'macs':
        return
    if args.latency_batch_size < 1 or args.latency_repeats < 1:
        raise ValueError(f'--latency-batch-size and --latency-repeats must be >= 1, got {args.latency_batch_size} '
                         f'and {args.latency_repeats}.')
    tables = [None]
    if args.rank == 0:
        use_amp = args.amp and device.type == 'cuda'
        amp_dtype = torch.bfloat16 if args.amp_dtype == 'bfloat16' else torch.float16
        with torch.autocast('cuda', dtype=amp_dtype) if use_amp else suppress():
            tables[0] = timm_drnet.measure_cost_table(model, input_size, batch_size=args.latency_batch_size,
                                                      repeats=args.latency_repeats)
        _logger.info(f'Costs: latency measured on {device} (batch {args.latency_batch_size}, median of '
                     f'{args.latency_repeats} runs): {tables[0].describe(model.resolutions)}.')
    if args.distributed:
        dist.broadcast_object_list(tables, src=0)
    model.set_cost_table(tables[0])


def create_loaders(args: argparse.Namespace, s: Dict[str, Any], device: torch.device) -> Tuple[Any, Any]:
    data_config = s['data_config']
    common = dict(
        input_size=data_config['input_size'], interpolation=data_config['interpolation'],
        mean=data_config['mean'], std=data_config['std'], num_workers=args.workers,
        distributed=args.distributed, pin_memory=args.pin_mem, device=device,
        use_prefetcher=not args.no_prefetcher,
        persistent_workers=False,  # fresh workers seeded from the main RNG each epoch: resume is exact
    )
    loader_train = create_loader(
        s['dataset_train'], batch_size=args.batch_size, is_training=True, no_aug=args.no_aug,
        scale=args.scale, ratio=args.ratio, hflip=args.hflip, vflip=args.vflip, color_jitter=args.color_jitter,
        auto_augment=args.aa, **dict(common, interpolation=args.train_interpolation or data_config['interpolation']),
    )
    loader_eval = create_loader(
        s['dataset_eval'], batch_size=args.validation_batch_size or args.batch_size, is_training=False,
        crop_pct=data_config['crop_pct'], **common,
    )
    return loader_train, loader_eval


def _write_checkpoint(write: Callable[[], Any], what: str, stage_dir: Path) -> None:
    """Run ``write``; an OSError (a full disk) becomes a ``CheckpointWriteError`` saying what is still intact."""
    try:
        write()
    except OSError as e:
        previous = stage_dir / 'last.pth.tar'
        kept = f'the previous checkpoint {previous} is intact' if previous.exists() else 'no earlier checkpoint exists'
        raise CheckpointWriteError(f'could not write the {what} checkpoint to {stage_dir} ({e}); {kept}') from e


def _resume_position(resume: Dict[str, Any], args: argparse.Namespace) -> Optional[Dict[str, Any]]:
    """This rank's mid-epoch position in a SIGTERM checkpoint; None for an epoch-end one.

    The position is only valid with the sharding it was saved with: resumed with another number of
    processes, the interrupted epoch starts over (its steps done so far stay in the weights).
    """
    interrupted = resume.get('interrupted')
    if interrupted is None:
        return None
    if len(interrupted['ranks']) != args.world_size:
        _logger.warning(f'The checkpoint was interrupted in epoch {interrupted["epoch"] + 1} with '
                        f'{len(interrupted["ranks"])} processes, this run has {args.world_size}: that epoch starts '
                        f'over from its first step.')
        return None
    return interrupted['ranks'][args.rank]


def train_stage(
        stage: str,
        model: nn.Module,
        loaders: Tuple[Any, Any],
        args: argparse.Namespace,
        args_text: str,
        device: torch.device,
        stage_dir: Path,
        data_config: Dict,
        resume: Optional[Dict],
        stop: StopSignal,
) -> Optional[nn.Module]:
    """ Train one stage from its start or from ``resume`` (a checkpoint of this stage); returns the EMA model.

    Raises ``TrainingInterrupted`` once SIGTERM stopped it (after a step or an epoch) and its state is saved.
    """
    loader_train, loader_eval = loaders
    epochs = args.multires_epochs if stage == 'multires' and args.stage == 'both' else args.epochs
    primary = args.rank == 0

    model.predictor.requires_grad_(stage == 'drnet')
    model.backbone.requires_grad_(not (stage == 'drnet' and args.freeze_backbone))
    optimizer = create_optimizer_v2(
        model, **optimizer_kwargs(cfg=args),
        param_group_fn=partial(predictor_param_groups, weight_decay=args.weight_decay,
                               predictor_lr_scale=args.predictor_lr_scale))

    use_amp = args.amp and device.type == 'cuda'
    if args.amp and not use_amp:
        _logger.warning('--amp needs a GPU; training in float32.')
    amp_dtype = torch.bfloat16 if args.amp_dtype == 'bfloat16' else torch.float16
    amp_autocast = partial(torch.autocast, device_type='cuda', dtype=amp_dtype) if use_amp else suppress
    loss_scaler = NativeScaler(device='cuda') if use_amp and amp_dtype == torch.float16 else None

    forward = StageForward(model, stage)
    if args.distributed:  # wrapping broadcasts rank 0's weights, so the EMA below starts from them on every rank
        forward = NativeDDP(forward, device_ids=[device] if device.type == 'cuda' else None,
                            broadcast_buffers=not args.no_ddp_bb)
    model_ema = ModelEmaV3(model, decay=args.model_ema_decay, use_warmup=args.model_ema_warmup) \
        if args.model_ema else None

    stage_args = argparse.Namespace(**dict(vars(args), epochs=epochs))
    lr_scheduler, num_epochs = create_scheduler_v2(
        optimizer, **scheduler_kwargs(stage_args), updates_per_epoch=len(loader_train))
    if lr_scheduler is None:
        raise ValueError(f"--sched {args.sched} gives no schedule; choose e.g. cosine or step.")

    start_epoch, position = 0, None
    if resume is not None:
        start_epoch = resume['epoch'] + 1
        position = _resume_position(resume, args)
        if not args.no_resume_opt:
            optimizer.load_state_dict(resume['optimizer'])
            if loss_scaler is not None and loss_scaler.state_dict_key in resume:
                loss_scaler.load_state_dict(resume[loss_scaler.state_dict_key])
        if model_ema is not None and 'state_dict_ema' in resume:
            model_ema.module.load_state_dict(resume['state_dict_ema'])
        if 'scheduler' in resume:
            lr_scheduler.load_state_dict(resume['scheduler'])
        if primary:
            _logger.info(f'Resumed stage {stage} after epoch {start_epoch} of {num_epochs}' + (
                f', step {position["step"]} of {len(loader_train)} of epoch {start_epoch + 1}.' if position else '.'))
    if args.sched_on_updates:
        lr_scheduler.step_update(start_epoch * len(loader_train) + (position['step'] if position else 0))
    else:
        lr_scheduler.step(start_epoch)

    costs = model.cost_table(data_config['input_size'])
    drnet_loss = None
    criterion = nn.CrossEntropyLoss(label_smoothing=args.smoothing)
    if stage == 'drnet':
        alpha = resolve_flops_target(args.flops_target, costs.backbone, costs.unit, args.flops_two_sided)
        drnet_loss = timm_drnet.DRNetLoss(alpha=alpha, eta=args.flops_weight, base_loss=criterion,
                                          two_sided=args.flops_two_sided)
        if primary:
            _logger.info(f'Stage 2 FLOPs loss: alpha {alpha:.4g} {timm_drnet.unit_label(costs.unit)} (backbone '
                         f'average target, {"two-sided" if args.flops_two_sided else "cap"}), eta '
                         f'{args.flops_weight:g}; candidate costs {costs.describe(model.resolutions)}')

    saver = None
    summary_csv = stage_dir / 'summary.csv'
    train_state: Dict[str, Any] = {}
    if primary:
        saver = DRNetCheckpointSaver(
            model=model, optimizer=optimizer, args=args, model_ema=model_ema, amp_scaler=loss_scaler,
            checkpoint_dir=str(stage_dir), recovery_dir=str(stage_dir), decreasing='loss' in args.eval_metric,
            max_history=args.checkpoint_hist, extra_state=lambda: train_state)
        (stage_dir / 'args.yaml').write_text(args_text)
        if resume is not None:
            saver.load_state_dict_from_checkpoint(args.resume)
        trim_summary(str(summary_csv), start_epoch)

    eval_model = model_ema.module if model_ema is not None else model
    if primary:
        _logger.info(f'Stage {stage}: {num_epochs} epochs of {len(loader_train)} steps, output {stage_dir}')
    for epoch in range(start_epoch, num_epochs):
        if resume is not None and epoch == start_epoch and 'rng' in resume:
            rng = resume['rng']
            set_rng_state(rng[args.rank] if len(rng) == args.world_size else rng[0])
        if args.distributed and hasattr(loader_train.sampler, 'set_epoch'):
            loader_train.sampler.set_epoch(epoch)
        epoch_start = time.time()
        rng_epoch = get_rng_state()  # the loader's shuffling and worker seeds come from it
        try:
            train_metrics = train_one_epoch(
                epoch, num_epochs, stage, model, forward, loader_train, optimizer, criterion, drnet_loss,
                costs, args, device, lr_scheduler, model_ema, amp_autocast, loss_scaler, stop,
                position if epoch == start_epoch else None)
        except EpochInterrupted as e:
            ranks = _gather((rng_epoch, dict(step=e.step, sums=e.sums, rng_prev=e.rng_prev, rng_step=e.rng_step)),
                            args)
            last = stage_dir / 'last.pth.tar'
            if primary:
                train_state.update(
                    stage=stage, scheduler=lr_scheduler.state_dict(), rng=[r for r, _ in ranks],
                    drnet=drnet_config(model, args.model, args.model_kwargs, data_config['input_size']),
                    interrupted=dict(epoch=epoch, step=e.step, ranks=[p for _, p in ranks]))
                _write_checkpoint(lambda: saver.save_interrupted(epoch - 1), f'epoch {epoch + 1} step {e.step}',
                                  stage_dir)
            if args.distributed:
                dist.barrier()  # no rank exits (and has the launcher stop the others) before the checkpoint exists
            raise TrainingInterrupted(f'stopped by SIGTERM after step {e.step} of {len(loader_train)} in epoch '
                                      f'{epoch + 1} of stage {stage}', last) from None
        if args.distributed and args.dist_bn in ('broadcast', 'reduce'):
            distribute_bn(model, args.world_size, args.dist_bn == 'reduce')
            if model_ema is not None:
                distribute_bn(model_ema, args.world_size, args.dist_bn == 'reduce')
        eval_metrics = validate(stage, eval_model, loader_eval, args, device, amp_autocast)

        rng_states = [None] * args.world_size
        if args.distributed:
            dist.all_gather_object(rng_states, get_rng_state())
        else:
            rng_states = [get_rng_state()]
        if primary:
            _logger.info(
                f'Epoch {epoch + 1}/{num_epochs} [{stage}] {time.time() - epoch_start:.0f}s: '
                + ' '.join(f'train_{k} {v:.4g}' for k, v in train_metrics.items()) + ' | '
                + ' '.join(f'eval_{k} {v:.4g}' for k, v in eval_metrics.items()))
            update_summary(epoch, train_metrics, eval_metrics, filename=str(summary_csv),
                           lr=optimizer.param_groups[0]['lr'], write_header=epoch == 0 or not summary_csv.exists())
            train_state.update(
                stage=stage, scheduler=lr_scheduler.state_dict(), rng=rng_states,
                drnet=drnet_config(model, args.model, args.model_kwargs, data_config['input_size']))
            _write_checkpoint(lambda: saver.save_checkpoint(epoch, metric=eval_metrics[args.eval_metric]),
                              f'epoch {epoch + 1}', stage_dir)
        lr_scheduler.step(epoch + 1, eval_metrics[args.eval_metric])
        if _any_rank(stop.requested, args.distributed):
            raise TrainingInterrupted(f'stopped by SIGTERM after epoch {epoch + 1} of stage {stage}',
                                      stage_dir / 'last.pth.tar')

    if primary:
        export_safetensors(eval_model, stage_dir, args.model_kwargs, data_config)
    return model_ema


def final_report(model: nn.Module, args: argparse.Namespace, s: Dict[str, Any], device: torch.device,
                 exp_dir: Path) -> None:
    """DRNet vs static resolutions vs random routing vs oracle on the validation set (rank 0, whole set)."""
    data_config = s['data_config']
    loader = create_loader(
        s['dataset_eval'], input_size=data_config['input_size'],
        batch_size=args.validation_batch_size or args.batch_size, is_training=False,
        interpolation=data_config['interpolation'], mean=data_config['mean'], std=data_config['std'],
        crop_pct=data_config['crop_pct'], num_workers=args.workers, device=device,
        use_prefetcher=not args.no_prefetcher, persistent_workers=False)
    preds = collect_predictions(model, loader, static=True, device=device)
    table = model.cost_table(data_config['input_size'])
    summary = summarize(preds, table, model.resolutions, model.candidate_sizes(*data_config['input_size'][1:]))
    text = format_table(summary)
    (exp_dir / 'results.json').write_text(json.dumps(summary, indent=2))
    (exp_dir / 'results.txt').write_text(text + '\n')
    print('\n' + text, flush=True)


def _experiment_dir(args: argparse.Namespace, data_config: Dict) -> Path:
    if args.resume and not args.experiment:  # continue in the resumed run's folder
        return Path(args.resume).resolve().parent.parent
    name = args.experiment or '-'.join([
        datetime.now().strftime('%Y%m%d-%H%M%S'), safe_model_name(args.model), str(data_config['input_size'][-1])])
    return Path(args.output or './output/train') / name


def main() -> None:
    setup_default_logging()
    args, args_text = _parse_args()
    device = init_distributed_device(args)
    primary = args.rank == 0
    if args.distributed:
        _logger.info(f'Training in distributed mode, process {args.rank} of {args.world_size}, device {device}.')
    random_seed(args.seed, args.rank)
    stop = StopSignal()

    try:
        s = setup(args, device)
        model = s['model'].to(device)
        install_costs(model, args, s['ckpt'], s['data_config']['input_size'], device)
    except (ValueError, FileNotFoundError, timm_drnet.UnsafeCheckpointError) as e:
        _logger.error(str(e))
        sys.exit(2)
    resume = s['ckpt'] if args.resume else None
    stages = STAGES if args.stage == 'both' else (args.stage,)
    if resume is not None:
        if resume['stage'] not in stages:
            _logger.error(f'{args.resume} is a stage-{resume["stage"]} checkpoint, this run trains stage '
                          f'{args.stage}; to start stage {args.stage} from its weights use --initial-checkpoint.')
            sys.exit(2)
        stages = stages[stages.index(resume['stage']):]
    if primary:
        _logger.info(f'Model {args.model} {args.model_kwargs}: {sum(p.numel() for p in model.parameters()):,} '
                     f'params, {args.num_classes} classes, data config {s["data_config"]}')

    exp_dir = _experiment_dir(args, s['data_config'])
    loaders = create_loaders(args, s, device)
    model_ema = None
    try:
        for stage in stages:
            stage_dir = exp_dir / stage
            if primary:
                stage_dir.mkdir(parents=True, exist_ok=True)
            stage_resume = resume if resume is not None and resume['stage'] == stage else None
            model_ema = train_stage(stage, model, loaders, args, args_text, device, stage_dir, s['data_config'],
                                    stage_resume, stop)
    except ValueError as e:
        _logger.error(str(e))
        sys.exit(2)
    except TrainingInterrupted as e:
        if primary:
            _logger.warning(f'Training {e}; checkpoint {e.checkpoint}. Continue with: train.py --resume '
                            f'{e.checkpoint} (and the same settings).')
        sys.exit(128 + signal.SIGTERM)
    except CheckpointWriteError as e:
        _logger.error(f'Training stopped: {e}. Free space or fix the folder, then resume.')
        sys.exit(1)
    except NonFiniteLossError as e:
        last = stage_dir / 'last.pth.tar'
        kept = f'the last good checkpoint is {last}; resume from it' if last.exists() else \
            'no checkpoint was written yet; restart'
        _logger.error(f'Training stopped: {e}. Nothing was saved after it: {kept} with a lower --lr, or check '
                      f'the data for corrupt images.')
        sys.exit(1)

    if stages[-1] == 'drnet' and primary:
        final_report(model_ema.module if model_ema is not None else model, args, s, device, exp_dir)
    if args.distributed:
        dist.barrier()
        dist.destroy_process_group()


if __name__ == '__main__':
    main()
