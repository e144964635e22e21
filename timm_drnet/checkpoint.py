""" Training checkpoints

A training checkpoint is one file holding everything a run needs to continue exactly where it stopped:
model and EMA weights, optimizer, LR scheduler, AMP scaler, the RNG states of every rank, the epoch,
and the DRNet settings the weights belong to (model, backbone, resolutions, predictor, classes, input
size), so that loading it into a differently built model fails with a message naming the difference.

Files are written atomically: a temporary file in the same folder, flushed and fsynced, then
``os.replace``d over the target and the folder fsynced. A crash at any moment leaves either the previous
complete file or the new complete file, never a partial one. Checkpoints hold only tensors and plain
Python containers, so they load with ``torch.load(weights_only=True)`` (``load_state_dict_file``) and
never run code while loading.
"""
import os
import random
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import numpy as np
import torch
from torch import nn
from timm.models import clean_state_dict
from timm.utils import CheckpointSaver, get_state_dict, unwrap_model

from .drnet import DRNet, complete_state_dict
from .errors import literal, setting_error
from .hub import PathLike, load_state_dict_file, save_for_hf

__all__ = [
    'DRNetCheckpointSaver', 'CheckpointMismatchError', 'atomic_torch_save', 'atomic_replace', 'get_rng_state',
    'set_rng_state', 'load_training_checkpoint', 'check_checkpoint_compatible', 'load_checkpoint_weights',
    'export_safetensors',
]


class CheckpointMismatchError(ValueError):
    """A checkpoint made for a differently built DRNet (resolutions, classes, backbone)."""


def _fsync_dir(path: Path) -> None:
    """Persist a rename in ``path`` (a folder); a no-op where folders cannot be opened (Windows)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_replace(src: PathLike, dst: PathLike) -> None:
    """Rename ``src`` over ``dst`` in one step (never a moment without ``dst``) and persist the rename."""
    os.replace(src, dst)
    _fsync_dir(Path(dst).parent)


def atomic_torch_save(obj: Any, path: PathLike) -> None:
    """ ``torch.save`` that never leaves a partial file at ``path``.

    Writes a temporary file next to ``path``, fsyncs it and renames it over ``path``. On any error the
    temporary file is removed and ``path`` keeps its previous content.
    """
    path = Path(path)
    tmp = path.with_name(f'.{path.name}.{os.getpid()}.tmp')
    try:
        with open(tmp, 'wb') as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        atomic_replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def get_rng_state() -> Dict[str, Any]:
    """torch (CPU and CUDA), numpy and Python RNG states of this process, as tensors and plain containers."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return dict(
        torch=torch.get_rng_state(),
        cuda=torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        numpy=dict(kind=kind, keys=torch.from_numpy(keys.astype(np.int64)), pos=pos, has_gauss=has_gauss,
                   cached_gaussian=cached),
        python=random.getstate(),
    )


def set_rng_state(state: Dict[str, Any]) -> None:
    """Restore RNG states saved by ``get_rng_state``."""
    torch.set_rng_state(state['torch'])
    if state['cuda'] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state['cuda'])
    n = state['numpy']
    np.random.set_state((n['kind'], n['keys'].numpy().astype(np.uint32), n['pos'], n['has_gauss'],
                         n['cached_gaussian']))
    version, internal, gauss = state['python']
    random.setstate((version, tuple(internal), gauss))


class DRNetCheckpointSaver(CheckpointSaver):
    """ timm's ``CheckpointSaver`` (``last``, top-n ``checkpoint-N``, ``model_best``) with safe, complete files.

    Differences from timm's: every file is written atomically (``last`` is replaced in one rename, never
    unlinked first); the checkpoint holds only weights-only-loadable content (``run_args``, the run's settings,
    as a plain dict under ``args``); and ``extra_state()`` adds the rest of the training state (scheduler, RNG of
    every rank, DRNet config, stage). ``arch`` is the model name stored as timm's checkpoints do.
    """

    def __init__(self, *args, arch: str = 'drnet', run_args: Optional[Dict[str, Any]] = None,
                 extra_state: Optional[Callable[[], Dict[str, Any]]] = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.arch = arch
        self.run_args = run_args
        self.extra_state = extra_state

    def _save(self, save_path: str, epoch: int, metric: Optional[float] = None) -> None:
        state = {
            'epoch': epoch,
            'version': 2,  # epoch is the last completed one, resume starts at epoch + 1
            'arch': self.arch,
            'state_dict': get_state_dict(self.model, self.unwrap_fn),
            'optimizer': self.optimizer.state_dict(),
            'saver': self.state_dict(epoch, metric),
        }
        if self.run_args is not None:
            state['args'] = dict(self.run_args)
        if self.model_ema is not None:
            state['state_dict_ema'] = get_state_dict(self.model_ema, self.unwrap_fn)
        if self.amp_scaler is not None:
            state[self.amp_scaler.state_dict_key] = self.amp_scaler.state_dict()
        if metric is not None:
            state['metric'] = metric
        if self.extra_state is not None:
            state.update(self.extra_state())
        atomic_torch_save(state, save_path)

    def save_interrupted(self, epoch: int) -> str:
        """ Write the current mid-epoch state over ``last`` (atomically), leaving the top-n history alone.

        ``epoch`` is the last completed epoch (-1 for none), so a reader unaware of the mid-epoch position
        restarts the interrupted epoch. Returns the path written.
        """
        path = os.path.join(self.checkpoint_dir, 'last' + self.extension)
        self._save(path, epoch)
        return path

    def _replace(self, src: str, dst: str) -> None:
        atomic_replace(src, dst)

    def _duplicate(self, src: str, dst: str) -> None:
        tmp = f'{dst}.{os.getpid()}.tmp'
        try:
            if self.can_hardlink:
                try:
                    os.link(src, tmp)
                except OSError:
                    self.can_hardlink = False
            if not self.can_hardlink:
                shutil.copy2(src, tmp)
            atomic_replace(tmp, dst)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def load_training_checkpoint(path: PathLike) -> Dict[str, Any]:
    """ Read a checkpoint without running code from it; a bare state dict comes back as ``{'state_dict': ...}``.

    Accepts our training checkpoints, timm's, and plain weight files (``.safetensors`` or torch).
    """
    ckpt = load_state_dict_file(path)
    if not (isinstance(ckpt, dict) and isinstance(ckpt.get('state_dict'), dict)):
        ckpt = {'state_dict': ckpt}
    return ckpt


_BRANCH_KEY = re.compile(r'\.branches\.(\d+)\.')


def _checkpoint_resolutions(ckpt: Dict[str, Any]) -> Optional[List[float]]:
    cfg = ckpt.get('drnet')
    return list(cfg['resolutions']) if isinstance(cfg, dict) and 'resolutions' in cfg else None


def _num_branches(state_dict: Dict[str, Any]) -> Optional[int]:
    """Number of private BN branches (candidate resolutions) in a DRNet state dict; None for other weights."""
    found = [int(m.group(1)) for k in state_dict if (m := _BRANCH_KEY.search(k))]
    return max(found) + 1 if found else None


def _num_classes(state_dict: Dict[str, Any], model: nn.Module) -> Optional[int]:
    """Outputs of the classifier stored in a state dict, found by the model's classifier parameter name."""
    classifier = model.get_classifier()
    names = {id(p): n for n, p in model.named_parameters()}
    for p in classifier.parameters():
        name = names.get(id(p))
        if name and name.endswith('weight') and name in state_dict:
            return int(state_dict[name].shape[0])
    return None


def check_checkpoint_compatible(model: nn.Module, ckpt: Dict[str, Any], path: PathLike) -> None:
    """ Raise ``CheckpointMismatchError`` naming the problem and the fix when ``ckpt`` was made for another DRNet.

    Compares the number of candidate resolutions and of classes, from the checkpoint's DRNet config
    when it has one, else from the shapes of its predictor and classifier weights.
    """
    model = unwrap_model(model)
    state_dict = clean_state_dict(ckpt['state_dict'])
    cfg = ckpt.get('drnet') if isinstance(ckpt.get('drnet'), dict) else {}
    res = _checkpoint_resolutions(ckpt)
    num_res = len(res) if res is not None else _num_branches(state_dict)
    if num_res is not None and num_res != model.num_resolutions:
        shown = f' {tuple(res)}' if res is not None else ''
        fix = f'{{resolutions}} {" ".join(str(r) for r in res)}' if res is not None else \
            f'{{resolutions}} with {num_res} values'
        raise setting_error(
            CheckpointMismatchError,
            f'{literal(path)} was made for {num_res} candidate resolutions{shown}, but the model has '
            f'{model.num_resolutions} {tuple(model.resolutions)}. Build the model to match with {fix}, '
            f'or use a checkpoint made for these resolutions.')
    num_classes = cfg.get('num_classes') or _num_classes(state_dict, model)
    if num_classes is not None and num_classes != model.num_classes:
        raise setting_error(
            CheckpointMismatchError,
            f'{literal(path)} has a {num_classes}-class classifier, but the model is built for {model.num_classes} '
            f'classes. Set {{num_classes}} {num_classes} to match it, or use a checkpoint trained for '
            f'{model.num_classes} classes.')


def load_checkpoint_weights(
        model: DRNet,
        ckpt: Dict[str, Any],
        path: PathLike,
        use_ema: bool = False,
) -> None:
    """Check ``ckpt`` against ``model`` and load its weights (its EMA weights with ``use_ema``), strictly."""
    model = unwrap_model(model)
    check_checkpoint_compatible(model, ckpt, path)
    key = 'state_dict_ema' if use_ema else 'state_dict'
    if key not in ckpt:
        raise setting_error(CheckpointMismatchError,
                            f'{literal(path)} holds no EMA weights; drop {{use_ema}} to load its weights.')
    # an old stage-1 checkpoint's predictor never trained; other old checkpoints routed by theirs
    state_dict = complete_state_dict(clean_state_dict(ckpt[key]), trained=ckpt.get('stage') != 'multires')
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    wrong_shape = [k for k in own if k in state_dict and tuple(own[k].shape) != tuple(state_dict[k].shape)]
    if missing or unexpected or wrong_shape:
        cfg = ckpt.get('drnet') if isinstance(ckpt.get('drnet'), dict) else {}
        made_for = f" (made for backbone {cfg['backbone']!r}, predictor {cfg['predictor']!r})" if cfg else ''
        details = '; '.join(f'{what}: {", ".join(keys[:3])}{" ..." if len(keys) > 3 else ""}' for what, keys in (
            ('missing', missing), ('unexpected', unexpected), ('different shape', wrong_shape)) if keys)
        raise setting_error(
            CheckpointMismatchError,
            f'{literal(path)}{literal(made_for)} does not fit the model with backbone {model.backbone_name!r} '
            f'({literal(details)}). Build the model the checkpoint was trained with ({{model}}, and backbone=... '
            f'predictor=... in {{model_kwargs}}), or use a checkpoint of this model.')
    model.load_state_dict(state_dict)


def export_safetensors(model: DRNet, folder: PathLike, model_args: Dict[str, Any], data_config: Dict[str, Any]) -> None:
    """``model.safetensors`` + ``config.json`` (timm ``save_for_hf`` format) in ``folder``, each replaced atomically.

    ``timm.create_model('local-dir:<folder>')`` loads them back.
    """
    with tempfile.TemporaryDirectory(dir=folder, prefix='.export-') as tmp:
        save_for_hf(model, tmp, model_args=model_args, data_config=data_config)
        for name in os.listdir(tmp):
            atomic_replace(os.path.join(tmp, name), Path(folder) / name)
