""" Saving and loading DRNet weights

Everything we write is safetensors. Everything we read goes through safetensors or
``torch.load(weights_only=True)``, so a checkpoint can never execute code while loading.

``save_for_hf`` / ``push_to_hf_hub`` wrap timm's functions of the same name, adding the DRNet settings
(backbone, resolutions, predictor, ...) to ``config.json`` as ``model_args``; the result loads back with
``timm.create_model('hf-hub:org/name', pretrained=True)`` or ``'local-dir:/path'``.
"""
import hashlib
import os
import pickle
import shutil
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

import safetensors
import safetensors.torch
import torch
from torch import nn
from timm.models import push_to_hf_hub as timm_push_to_hf_hub, save_for_hf as timm_save_for_hf

__all__ = [
    'load_state_dict_file', 'read_state_dict_keys', 'save_for_hf', 'push_to_hf_hub', 'add_to_hf_cache',
    'UnsafeCheckpointError',
]

PathLike = Union[str, os.PathLike]


class UnsafeCheckpointError(RuntimeError):
    """A checkpoint that would need to run pickled code (or is not a checkpoint at all)."""


def _is_safetensors(path: Path) -> bool:
    return path.suffix == '.safetensors'


def load_state_dict_file(path: PathLike, map_location: str = 'cpu') -> Dict[str, Any]:
    """ Load a checkpoint file without ever executing code from it.

    ``.safetensors`` files are read with safetensors; anything else with ``torch.load(weights_only=True)``,
    which refuses pickled objects other than tensors and plain containers.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f'Checkpoint file not found: {path}')
    if _is_safetensors(path):
        try:
            return safetensors.torch.load_file(str(path), device=map_location)
        except Exception as e:
            raise UnsafeCheckpointError(f'{path} is not a readable safetensors file: {e}') from e
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as e:
        raise UnsafeCheckpointError(
            f'Refusing to load {path}: it is not a plain tensor checkpoint readable with '
            f'torch.load(weights_only=True) ({type(e).__name__}: {str(e).splitlines()[0]}). '
            f'Only load pickled checkpoints you trust, and convert them to safetensors.'
        ) from e


def read_state_dict_keys(path: PathLike) -> List[str]:
    """Parameter names stored in a checkpoint (safetensors header only, or a weights-only load)."""
    path = Path(path)
    if _is_safetensors(path):
        with safetensors.safe_open(str(path), framework='pt') as f:
            return list(f.keys())
    state = load_state_dict_file(path)
    for key in ('state_dict_ema', 'model_ema', 'state_dict', 'model'):
        if isinstance(state.get(key), dict):
            state = state[key]
            break
    return list(state.keys())


def _model_args(model: nn.Module, model_args: Optional[Dict]) -> Dict:
    return {**model.drnet_args(), **(model_args or {})}


def save_for_hf(model: nn.Module, save_directory: PathLike, model_args: Optional[Dict] = None, **kwargs) -> None:
    """timm's ``save_for_hf`` in safetensors, with the DRNet settings in ``config.json``."""
    kwargs.setdefault('safe_serialization', True)
    timm_save_for_hf(model, str(save_directory), model_args=_model_args(model, model_args), **kwargs)


def push_to_hf_hub(model: nn.Module, repo_id: str, model_args: Optional[Dict] = None, **kwargs) -> Any:
    """timm's ``push_to_hf_hub`` in safetensors only, with the DRNet settings in ``config.json``."""
    kwargs.setdefault('safe_serialization', True)
    return timm_push_to_hf_hub(model, repo_id, model_args=_model_args(model, model_args), **kwargs)


def add_to_hf_cache(folder: PathLike, repo_id: str, cache_dir: Optional[PathLike] = None) -> Path:
    """ Place a saved model folder (config.json, model.safetensors) in a Hugging Face cache as ``repo_id``.

    Lays out ``models--org--name/refs/main`` and ``snapshots/<sha>/`` exactly as ``huggingface_hub``
    does after a download, so ``timm.create_model('hf-hub:org/name', pretrained=True)`` then works on an
    offline machine (``HF_HUB_OFFLINE=1``). ``cache_dir`` defaults to huggingface_hub's cache (HF_HUB_CACHE).
    Returns the snapshot folder.
    """
    from huggingface_hub import constants
    folder = Path(folder)
    files = sorted(p for p in folder.iterdir() if p.is_file())
    if not files:
        raise FileNotFoundError(f'No files to cache in {folder}')
    digest = hashlib.sha1()
    for p in files:
        digest.update(p.name.encode())
        digest.update(p.read_bytes())
    revision = digest.hexdigest()
    repo_dir = Path(cache_dir or constants.HF_HUB_CACHE) / ('models--' + repo_id.replace('/', '--'))
    snapshot = repo_dir / 'snapshots' / revision
    snapshot.mkdir(parents=True, exist_ok=True)
    for p in files:
        shutil.copy2(p, snapshot / p.name)
    (repo_dir / 'refs').mkdir(exist_ok=True)
    (repo_dir / 'refs' / 'main').write_text(revision)
    return snapshot
