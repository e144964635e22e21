""" Interruption and resume

SIGTERM stops training after the current step, with that step's state written to ``last.pth.tar``; a resumed
run continues the interrupted epoch exactly (same batches, same augmentation and Gumbel noise), and a resumed
run's settings must be those the checkpoint was trained with. A failing checkpoint write or a non-finite loss
stops the run with an error that says what is still on disk.
"""
import logging
import os
import signal
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, Mapping, Optional, Sequence, Set, Tuple

import torch

from ..checkpoint import set_rng_state
from ..errors import literal, setting_error
from .distributed import Distributed

__all__ = [
    'CheckpointWriteError', 'EpochInterrupted', 'NonFiniteLossError', 'StopSignal', 'TrainingInterrupted',
    'GROWABLE_SETTINGS', 'RESUME_SETTINGS', 'epoch_batches', 'resume_position', 'resume_settings', 'write_checkpoint',
]

_logger = logging.getLogger(__name__)

# run settings a resumed run must share with its checkpoint: they shape the optimisation it continues
RESUME_SETTINGS = (
    'stage', 'batch_size', 'opt', 'opt_eps', 'opt_betas', 'momentum', 'weight_decay',
    'lr', 'sched', 'sched_on_updates', 'warmup_lr', 'min_lr', 'warmup_epochs', 'decay_epochs', 'decay_milestones',
    'decay_rate', 'smoothing', 'resolutions', 'predictor_grad', 'predictor_lr_scale', 'freeze_backbone',
    'flops_target', 'flops_weight', 'flops_two_sided', 'gumbel_tau', 'gumbel_tau_end', 'gumbel_tau_decay',
    'distill', 'distill_weight', 'distill_temperature', 'distill_teacher', 'model_ema', 'model_ema_decay',
    'model_ema_warmup', 'no_aug', 'scale', 'ratio', 'hflip', 'vflip', 'color_jitter', 'aa', 'train_interpolation',
    'amp', 'amp_dtype', 'sync_bn', 'dist_bn',
)
# taken from the checkpoint when not given, but a resumed run may change them: more epochs extend the run
GROWABLE_SETTINGS = ('epochs', 'multires_epochs')


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite."""


class CheckpointWriteError(RuntimeError):
    """A checkpoint could not be written; the previous one is intact (writes are atomic)."""


class TrainingInterrupted(Exception):
    """SIGTERM stopped training after a checkpoint of the state at that point was written (if ``checkpoint``);
    ``resumable``: ``--resume`` continues from it (the predictor stage starts over instead)."""

    def __init__(self, message: str, checkpoint: Optional[Path], resumable: bool = True):
        super().__init__(message)
        self.checkpoint, self.resumable = checkpoint, resumable


class EpochInterrupted(Exception):
    """Raised by the epoch loop after the step at which SIGTERM stops it: what resuming that step needs."""

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


def write_checkpoint(write: Callable[[], Any], what: str, stage_dir: Path) -> None:
    """Run ``write``; an OSError (a full disk) becomes a ``CheckpointWriteError`` saying what is still intact."""
    try:
        write()
    except OSError as e:
        previous = stage_dir / 'last.pth.tar'
        kept = f'the previous checkpoint {previous} is intact' if previous.exists() else 'no earlier checkpoint exists'
        raise CheckpointWriteError(f'could not write the {what} checkpoint to {stage_dir} ({e}); {kept}') from e


def resume_position(resume: Dict[str, Any], ctx: Distributed) -> Optional[Dict[str, Any]]:
    """ This rank's mid-epoch position in a SIGTERM checkpoint; None for an epoch-end one.

    The position is only valid with the sharding it was saved with: resumed with another number of
    processes, the interrupted epoch starts over (its steps done so far stay in the weights).
    """
    interrupted = resume.get('interrupted')
    if interrupted is None:
        return None
    if len(interrupted['ranks']) != ctx.world_size:
        _logger.warning(f'The checkpoint was interrupted in epoch {interrupted["epoch"] + 1} with '
                        f'{len(interrupted["ranks"])} processes, this run has {ctx.world_size}: that epoch starts '
                        f'over from its first step.')
        return None
    return interrupted['ranks'][ctx.rank]


def epoch_batches(loader: Any, position: Optional[Dict[str, Any]]) -> Iterator[Tuple[int, Any]]:
    """ ``enumerate(loader)``, or with ``position`` (of a SIGTERM checkpoint) its batches after ``position['step']``.

    For a resumed epoch the RNG must hold the epoch's starting state (the interrupted run's) before the call.
    The batches before the position are read again but not returned, so the sampler order and the loader
    workers' augmentation RNG advance exactly as they did. The main process's RNG is set to the interrupted
    run's state at the end of the step before the last one skipped, ahead of the read that (through timm's
    prefetcher) loads the first batch returned, and to its state at the interruption after, so the rest of
    the epoch, loaded with no loader workers or not, is the same as in a run never stopped.
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


def resume_settings(
        saved: Mapping[str, Any],
        current: Mapping[str, Any],
        given: Set[str],
        keys: Sequence[str] = RESUME_SETTINGS,
        override: bool = False,
        growable: Sequence[str] = GROWABLE_SETTINGS,
) -> Dict[str, Any]:
    """ The settings a resumed run continues with: ``current`` with every key of ``keys`` and ``growable`` the caller
    did not give (``given``) taken from the checkpoint's ``saved`` settings.

    A given setting of ``keys`` whose value differs from the checkpoint's raises one ValueError naming each such
    setting, unless ``override``, which keeps the given values (the checkpoint's optimiser and schedule state still
    load); ``growable`` ones may differ.
    """
    settings = dict(current)
    differ = []
    for key in (*keys, *growable):
        if key not in saved:
            continue
        if key not in given:
            settings[key] = saved[key]
        elif saved[key] != current.get(key) and key not in growable:
            differ.append(key)
    if differ and not override:
        listed = '; '.join(f'{{{k}}}: {literal(repr(saved[k]))} in the checkpoint, {literal(repr(current.get(k)))} now'
                           for k in differ)
        raise setting_error(ValueError, f'The resumed checkpoint was trained with other settings ({listed}). '
                                        f'Resume with the checkpoint\'s settings (drop these), or pass '
                                        f'{{resume_override}} to continue with the new ones.')
    return settings
