""" One training stage: optimiser, schedule, EMA, the epoch loop, per-epoch evaluation and checkpoints

``train_stage`` trains a DRNet through one stage (``multires`` or ``drnet``) from its start or from a checkpoint,
as timm's train.py trains a model, with timm's optimiser, scheduler, EMA and checkpoint saver. ``StageSettings``
holds every setting in Python terms (``train.py`` fills it from its flags); ``train_one_epoch`` is its epoch loop.
"""
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Dict, Optional

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel as NativeDDP
from timm.optim import create_optimizer_v2
from timm.scheduler import create_scheduler_v2
from timm.utils import ModelEmaV3, distribute_bn, trim_summary, update_summary

from ..checkpoint import DRNetCheckpointSaver, export_safetensors, get_rng_state, set_rng_state
from ..costs import CostTable, unit_label
from ..drnet import DRNet
from ..errors import literal, setting_error
from ..evaluate import collect_predictions, metric_sums, resolution_names, stage_metrics
from ..loss import DRNetLoss, MultiResolutionLoss
from ..precision import Precision
from .distributed import Distributed, all_min, any_rank, average_gradients_hook, barrier, gather, reduce_sum
from .params import predictor_param_groups
from .resume import (
    EpochInterrupted, NonFiniteLossError, StopSignal, TrainingInterrupted, epoch_batches, resume_position,
    write_checkpoint,
)
from .schedule import GumbelSchedule, resolve_flops_target
from .stage import STAGES, StageForward

__all__ = ['CheckpointRecord', 'StageRun', 'StageSettings', 'evaluate_stage', 'train_one_epoch', 'train_stage']

_logger = logging.getLogger(__name__)


@dataclass
class StageSettings:
    """ The settings of one training stage, in Python terms (mostly ``train.py``'s flags of the same names;
    ``resume_optimizer`` is ``not --no-resume-opt``, ``broadcast_buffers`` ``not --no-ddp-bb``, ``gumbel`` the
    ``--gumbel-tau*`` flags).

    ``optimizer`` and ``scheduler`` are timm's ``create_optimizer_v2`` / ``create_scheduler_v2`` keyword arguments
    (``timm.optim.optimizer_kwargs`` / ``timm.scheduler.scheduler_kwargs`` of the flags); the scheduler's
    ``num_epochs`` is ``epochs``.
    """
    stage: str
    epochs: int
    optimizer: Dict[str, Any]
    scheduler: Dict[str, Any]
    predictor_lr_scale: float = 0.1
    freeze_backbone: bool = False
    smoothing: float = 0.
    flops_target: Optional[float] = None
    flops_weight: float = 0.1
    flops_two_sided: bool = True
    gumbel: GumbelSchedule = field(default_factory=GumbelSchedule)
    model_ema: bool = False
    model_ema_decay: float = 0.9998
    model_ema_warmup: bool = False
    resume_optimizer: bool = True
    log_interval: int = 50
    eval_metric: str = 'top1'
    checkpoint_hist: int = 3
    dist_bn: str = 'reduce'
    broadcast_buffers: bool = True
    sync_bn: bool = False  # the model's batch norms are SyncBatchNorms (distributed, stage 1 / frozen backbone)
    distill: str = 'none'  # stage-1 cross-resolution distillation (``loss.MultiResolutionLoss``)
    distill_weight: float = 1.0
    distill_temperature: float = 1.0

    def __post_init__(self):
        if self.stage not in STAGES:
            raise setting_error(ValueError, f'{{stage}} must be one of {STAGES}, got {self.stage!r}')
        if self.epochs < 1:
            raise setting_error(ValueError, f'{{epochs}} must be >= 1, got {self.epochs}')
        if self.sync_bn and self.stage == 'drnet' and not self.freeze_backbone:
            # routed groups differ between ranks: their per-branch collectives would pair up wrongly or hang
            raise setting_error(ValueError, '{sync_bn} cannot train stage 2 with the backbone: ranks route their '
                                            'images differently, so their per-resolution BatchNorm collectives do '
                                            'not match; use it for stage 1, or with {freeze_backbone}.')


@dataclass
class CheckpointRecord:
    """What the stage's checkpoints and exported weights record about the run besides its state."""
    arch: str  # model name
    model_args: Dict[str, Any]  # create_model keyword arguments (config.json model_args)
    drnet_config: Dict[str, Any]  # ``config.drnet_config`` of the model
    data_config: Dict[str, Any]
    run_args: Optional[Dict[str, Any]] = None  # every setting of the run (the checkpoint's ``args``)
    args_text: str = ''  # written to ``args.yaml``


@dataclass
class StageRun:
    """What the epoch loop of one stage works with, set up once by ``train_stage``."""
    settings: StageSettings
    model: DRNet
    forward: nn.Module  # ``StageForward`` of the model, DDP-wrapped in distributed training
    loader: Any
    optimizer: torch.optim.Optimizer
    lr_scheduler: Any
    loss: nn.Module  # ``MultiResolutionLoss`` (stage 1) or ``DRNetLoss`` (stage 2)
    costs: CostTable
    device: torch.device
    precision: Precision
    stop: StopSignal
    ctx: Distributed
    model_ema: Optional[ModelEmaV3] = None
    to_device: bool = False  # move batches to ``device`` (no prefetcher)
    teacher: Optional[nn.Module] = None  # eval-mode model whose logits ``distill='teacher'`` learns


def _format_eta(seconds: float) -> str:
    return str(timedelta(seconds=int(max(seconds, 0))))


def train_one_epoch(run: StageRun, epoch: int, num_epochs: int, position: Optional[Dict[str, Any]] = None
                    ) -> Dict[str, float]:
    """ One epoch of the stage; returns the epoch's metrics, averaged over every rank's images.

    Raises ``EpochInterrupted`` after the step at which any rank got SIGTERM. ``position`` (this rank's part
    of a SIGTERM checkpoint) continues the epoch after its step, with the interrupted run's metric sums.
    """
    s, model, stage = run.settings, run.model, run.settings.stage
    run.forward.train()
    if stage == 'drnet' and s.freeze_backbone:
        model.backbone.eval()  # predictor-only training: backbone BN statistics stay fixed too
    m = model.num_resolutions
    names = resolution_names(model.resolutions)
    # sums over images: loss, ce, flops loss, cost, images, then per resolution (stage 1: ce, stage 2: count)
    sums = position['sums'].clone() if position is not None else torch.zeros(5 + m, dtype=torch.float64)
    num_batches = len(run.loader)
    first_step = position['step'] if position is not None else 0
    num_updates = epoch * num_batches + first_step
    rng_prev = position['rng_step'] if position is not None else None  # RNG at the end of the previous step
    start = time.time()
    for batch_idx, (x, target) in epoch_batches(run.loader, position):
        if run.to_device:
            x, target = x.to(run.device), target.to(run.device)
        if stage == 'drnet':
            model.tau = s.gumbel.at((epoch + batch_idx / num_batches) / num_epochs)
        with run.precision.autocast():
            out = run.forward(x)
            if stage == 'multires':
                with torch.no_grad():
                    teacher = run.teacher(x, resolution_index=0) if run.teacher is not None else None
                parts = run.loss(out, target, teacher)
            else:
                parts = run.loss(out.logits, target, out.hard, run.costs.backbone)
            loss = parts.total

        # one all-reduce for both: the loss is finite on every rank, and no rank got SIGTERM
        status = torch.tensor([float(torch.isfinite(loss.detach()).item()), float(not run.stop.requested)])
        finite, go_on = all_min(status, run.ctx).tolist()
        if not finite:
            raise NonFiniteLossError(f'the training loss became {loss.item()} in stage {stage}, epoch {epoch + 1}/'
                                     f'{num_epochs}, step {batch_idx + 1}/{num_batches} (update {num_updates + 1})')

        run.optimizer.zero_grad()
        if run.precision.loss_scaler is not None:
            run.precision.loss_scaler(loss, run.optimizer,
                                      parameters=[p for p in model.parameters() if p.requires_grad])
        else:
            loss.backward()
            run.optimizer.step()
        if run.model_ema is not None:
            run.model_ema.update(model, step=num_updates)
        num_updates += 1
        run.lr_scheduler.step_update(num_updates=num_updates)

        n = x.shape[0]
        with torch.no_grad():
            if stage == 'multires':
                batch = [loss.item(), parts.ce.sum().item(), parts.distill.item(), 0., 1.] + parts.ce.tolist()
            else:
                counts = torch.bincount(out.resolution_index, minlength=m).tolist()
                batch = [parts.total.item(), parts.ce.item(), parts.flops.item(), out.cost.float().mean().item(),
                         1.] + [c / n for c in counts]
        sums += torch.tensor(batch, dtype=torch.float64) * n

        last = batch_idx == num_batches - 1
        if run.ctx.primary and (last or batch_idx % s.log_interval == 0):
            elapsed = time.time() - start
            avg = sums / sums[4]
            lr = run.optimizer.param_groups[0]['lr']
            if stage == 'multires':
                detail = 'ce ' + '/'.join(f'{c:.3f}' for c in avg[5:].tolist()) + f' ({"/".join(names)})'
            else:
                detail = (f'ce {avg[1]:.3f} flops {avg[2]:.3f} {unit_label(run.costs.unit)} {avg[3]:.4g} shares '
                          + '/'.join(f'{100 * v:.0f}' for v in avg[5:].tolist()) + f'% tau {model.tau:.3g}')
            _logger.info(
                f'Train [{stage}] epoch {epoch + 1}/{num_epochs} [{batch_idx + 1:>4d}/{num_batches} '
                f'{100. * (batch_idx + 1) / num_batches:>3.0f}%] loss {avg[0]:.3f} {detail} lr {lr:.3g} '
                f'{(batch_idx + 1 - first_step) * n * run.ctx.world_size / max(elapsed, 1e-9):.0f} img/s '
                f'ETA {_format_eta(elapsed / (batch_idx + 1 - first_step) * (num_batches - batch_idx - 1))}')
        if not go_on:
            raise EpochInterrupted(batch_idx + 1, sums, rng_prev, get_rng_state())
        rng_prev = get_rng_state()

    sums = reduce_sum(sums, run.ctx)
    avg = (sums / sums[4]).tolist()
    metrics = OrderedDict(loss=avg[0])
    if stage == 'multires':
        if s.distill != 'none':
            metrics.update(distill=avg[2])
        metrics.update((f'ce_{name}', c) for name, c in zip(names, avg[5:]))
    else:
        metrics.update(ce=avg[1], flops_loss=avg[2], **{run.costs.unit: avg[3]}, tau=model.tau)
        metrics.update((f'share_{name}', v) for name, v in zip(names, avg[5:]))
    return metrics


@torch.no_grad()
def evaluate_stage(model: DRNet, stage: str, loader: Any, device: torch.device, precision: Precision,
                   ctx: Distributed, to_device: bool = False) -> Dict[str, float]:
    """The stage's eval metrics on ``loader`` (every rank's shard), summed over ranks (see ``stage_metrics``)."""
    preds = collect_predictions(model, loader, static=stage == 'multires', routed=stage == 'drnet',
                                device=device if to_device else None, amp_autocast=precision.autocast)
    sums = reduce_sum(metric_sums(preds, stage, model.num_resolutions), ctx)
    return stage_metrics(sums, stage, model.resolutions, model.cost_unit)


def _stage_loss(model: DRNet, settings: StageSettings, costs: CostTable, ctx: Distributed) -> nn.Module:
    criterion = nn.CrossEntropyLoss(label_smoothing=settings.smoothing)
    if settings.stage == 'multires':
        return MultiResolutionLoss(model.num_resolutions, criterion, settings.distill, settings.distill_weight,
                                   settings.distill_temperature)
    alpha = resolve_flops_target(settings.flops_target, costs.backbone, costs.unit, settings.flops_two_sided)
    if ctx.primary:
        _logger.info(f'Stage 2 FLOPs loss: alpha {alpha:.4g} {unit_label(costs.unit)} (backbone average target, '
                     f'{"two-sided" if settings.flops_two_sided else "cap"}), eta {settings.flops_weight:g}; '
                     f'candidate costs {costs.describe(model.resolutions)}')
    return DRNetLoss(alpha=alpha, eta=settings.flops_weight, base_loss=criterion, two_sided=settings.flops_two_sided)


def train_stage(
        model: DRNet,
        settings: StageSettings,
        loader_train: Any,
        loader_eval: Any,
        device: torch.device,
        stage_dir: Path,
        record: CheckpointRecord,
        precision: Precision,
        stop: StopSignal,
        ctx: Distributed = Distributed(),
        resume: Optional[Dict[str, Any]] = None,
        resume_path: Optional[str] = None,
        to_device: bool = False,
        teacher: Optional[nn.Module] = None,
) -> Optional[ModelEmaV3]:
    """ Train one stage from its start or from ``resume`` (a checkpoint of this stage, read from ``resume_path``).

    Writes ``last.pth.tar`` and the best checkpoints each epoch, ``summary.csv`` and ``args.yaml``, and at the end
    ``model.safetensors`` + ``config.json`` (of the EMA model when there is one) to ``stage_dir``. Returns the EMA
    model, if any. ``teacher`` (an eval-mode model, called as ``teacher(x, resolution_index=0)``) is the external
    teacher of ``distill='teacher'``. Raises ``TrainingInterrupted`` once SIGTERM stopped it (after a step or an
    epoch) and its state is saved, ``NonFiniteLossError`` for a NaN / Inf loss, ``CheckpointWriteError`` when a
    checkpoint cannot be written.
    """
    s, stage = settings, settings.stage
    if (s.distill == 'teacher') != (teacher is not None):
        raise setting_error(ValueError, "{distill} 'teacher' needs a teacher model ({distill_teacher}), and a teacher "
                                        "needs {distill} 'teacher'")
    model.predictor.requires_grad_(stage == 'drnet')
    model.backbone.requires_grad_(not (stage == 'drnet' and s.freeze_backbone))
    costs = model.cost_table(record.drnet_config['input_size'])
    loss = _stage_loss(model, s, costs, ctx).to(device)
    groups = predictor_param_groups(model, s.optimizer.get('weight_decay', 0.), s.predictor_lr_scale)
    if any(True for _ in loss.parameters()):  # the ensemble teacher's weights learn with the backbone's lr
        groups.append(dict(params=list(loss.parameters()), weight_decay=0., lr_scale=1.0))
        for p in loss.parameters():  # outside DDP: their gradients are averaged over the ranks by hand
            p.register_hook(average_gradients_hook(ctx))
    optimizer = create_optimizer_v2(groups, **s.optimizer)

    forward = StageForward(model, stage)
    if ctx.distributed:  # wrapping broadcasts rank 0's weights, so the EMA below starts from them on every rank
        forward = NativeDDP(forward, device_ids=[device] if device.type == 'cuda' else None,
                            broadcast_buffers=s.broadcast_buffers)
    model_ema = ModelEmaV3(model, decay=s.model_ema_decay, use_warmup=s.model_ema_warmup) if s.model_ema else None

    lr_scheduler, num_epochs = create_scheduler_v2(optimizer, **dict(s.scheduler, num_epochs=s.epochs),
                                                   updates_per_epoch=len(loader_train))
    if lr_scheduler is None:
        raise setting_error(ValueError, f"{{sched}} {s.scheduler.get('sched')} gives no schedule; choose e.g. cosine "
                                        f"or step.")
    start_epoch, position = 0, None
    if resume is not None:
        start_epoch = resume['epoch'] + 1
        position = resume_position(resume, ctx)
        if s.resume_optimizer:
            optimizer.load_state_dict(resume['optimizer'])
            scaler = precision.loss_scaler
            if scaler is not None and scaler.state_dict_key in resume:
                scaler.load_state_dict(resume[scaler.state_dict_key])
        if model_ema is not None and 'state_dict_ema' in resume:
            model_ema.module.load_state_dict(resume['state_dict_ema'])
        if 'scheduler' in resume:
            lr_scheduler.load_state_dict(resume['scheduler'])
        if resume.get('loss', {}).keys() == loss.state_dict().keys():  # not across distillation forms
            loss.load_state_dict(resume['loss'])
        if ctx.primary:
            _logger.info(f'Resumed stage {stage} after epoch {start_epoch} of {num_epochs}' + (
                f', step {position["step"]} of {len(loader_train)} of epoch {start_epoch + 1}.' if position else '.'))
    if not s.scheduler.get('step_on_epochs', True):  # the schedule (and warm-up) steps every update
        lr_scheduler.step_update(start_epoch * len(loader_train) + (position['step'] if position else 0))
    else:
        lr_scheduler.step(start_epoch)

    if teacher is not None:
        teacher.eval().requires_grad_(False)
    run = StageRun(s, model, forward, loader_train, optimizer, lr_scheduler, loss, costs, device, precision, stop, ctx,
                   model_ema, to_device, teacher)

    saver = None
    summary_csv = stage_dir / 'summary.csv'
    train_state: Dict[str, Any] = {}
    if ctx.primary:
        saver = DRNetCheckpointSaver(
            model=model, optimizer=optimizer, model_ema=model_ema, amp_scaler=precision.loss_scaler,
            checkpoint_dir=str(stage_dir), recovery_dir=str(stage_dir), decreasing='loss' in s.eval_metric,
            max_history=s.checkpoint_hist, arch=record.arch, run_args=record.run_args,
            extra_state=lambda: train_state)
        (stage_dir / 'args.yaml').write_text(record.args_text)
        if resume is not None:
            saver.load_state_dict_from_checkpoint(resume_path)
        trim_summary(str(summary_csv), start_epoch)

    eval_model = model_ema.module if model_ema is not None else model
    if ctx.primary:
        _logger.info(f'Stage {stage}: {num_epochs} epochs of {len(loader_train)} steps, output {stage_dir}')
    for epoch in range(start_epoch, num_epochs):
        if resume is not None and epoch == start_epoch and 'rng' in resume:
            rng = resume['rng']
            set_rng_state(rng[ctx.rank] if len(rng) == ctx.world_size else rng[0])
        if ctx.distributed and hasattr(loader_train.sampler, 'set_epoch'):
            loader_train.sampler.set_epoch(epoch)
        epoch_start = time.time()
        rng_epoch = get_rng_state()  # the loader's shuffling and worker seeds come from it
        try:
            train_metrics = train_one_epoch(run, epoch, num_epochs, position if epoch == start_epoch else None)
        except NonFiniteLossError as e:
            last = stage_dir / 'last.pth.tar'
            kept = f'the last good checkpoint is {last}; resume from it' if last.exists() else \
                'no checkpoint was written yet; restart'
            raise setting_error(NonFiniteLossError, f'{literal(e)}. Nothing was saved after it: {literal(kept)} with '
                                                    f'a lower {{lr}}, or check the data for corrupt images.') from None
        except EpochInterrupted as e:
            ranks = gather((rng_epoch, dict(step=e.step, sums=e.sums, rng_prev=e.rng_prev, rng_step=e.rng_step)), ctx)
            if ctx.primary:
                train_state.update(stage=stage, scheduler=lr_scheduler.state_dict(), rng=[r for r, _ in ranks],
                                   drnet=record.drnet_config, loss=loss.state_dict(),
                                   interrupted=dict(epoch=epoch, step=e.step, ranks=[p for _, p in ranks]))
                write_checkpoint(lambda: saver.save_interrupted(epoch - 1), f'epoch {epoch + 1} step {e.step}',
                                 stage_dir)
            barrier(ctx)  # no rank exits (and has the launcher stop the others) before the checkpoint exists
            raise TrainingInterrupted(f'stopped by SIGTERM after step {e.step} of {len(loader_train)} in epoch '
                                      f'{epoch + 1} of stage {stage}', stage_dir / 'last.pth.tar') from None
        if ctx.distributed and s.dist_bn in ('broadcast', 'reduce'):
            distribute_bn(model, ctx.world_size, s.dist_bn == 'reduce')
            if model_ema is not None:
                distribute_bn(model_ema, ctx.world_size, s.dist_bn == 'reduce')
        eval_metrics = evaluate_stage(eval_model, stage, loader_eval, device, precision, ctx, to_device)

        rng_states = gather(get_rng_state(), ctx)
        if ctx.primary:
            _logger.info(
                f'Epoch {epoch + 1}/{num_epochs} [{stage}] {time.time() - epoch_start:.0f}s: '
                + ' '.join(f'train_{k} {v:.4g}' for k, v in train_metrics.items()) + ' | '
                + ' '.join(f'eval_{k} {v:.4g}' for k, v in eval_metrics.items()))
            update_summary(epoch, train_metrics, eval_metrics, filename=str(summary_csv),
                           lr=optimizer.param_groups[0]['lr'], write_header=epoch == 0 or not summary_csv.exists())
            train_state.update(stage=stage, scheduler=lr_scheduler.state_dict(), rng=rng_states,
                               drnet=record.drnet_config, loss=loss.state_dict())
            write_checkpoint(lambda: saver.save_checkpoint(epoch, metric=eval_metrics[s.eval_metric]),
                             f'epoch {epoch + 1}', stage_dir)
        lr_scheduler.step(epoch + 1, eval_metrics[s.eval_metric])
        if any_rank(stop.requested, ctx):
            raise TrainingInterrupted(f'stopped by SIGTERM after epoch {epoch + 1} of stage {stage}',
                                      stage_dir / 'last.pth.tar')

    if ctx.primary:
        export_safetensors(eval_model, stage_dir, record.model_args, record.data_config)
    return model_ema
