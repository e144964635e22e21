""" DRNet model registry

``@register_model`` entry points so that, after ``import timm_drnet``, ``timm.create_model('drnet_resnet50',
pretrained=True)`` works like any timm model, plus ``drnet`` / ``create_drnet`` to wrap any timm backbone.

Every registered model has a pretrained tag that names what its weights are. ``.backbone_<tag>`` (the default
today, e.g. ``drnet_resnet50.backbone_a1_in1k``): the backbone's timm ImageNet weights (``resnet50.a1_in1k``)
copied into every BN branch, as the paper starts from a pretrained classifier, and an untrained predictor, so
the model routes every image at full resolution until its predictor is trained or a cascade is set. DRNet-trained
weights get tags of their own (``.<data>_drnet``, with an ``hf_hub_id``) when they are published; ``hf-hub:`` and
``local-dir:`` names and a ``file`` overlay holding a DRNet state dict load a DRNet's own weights today. A
``file`` overlay holding a plain backbone checkpoint is loaded into the backbone.

``features_only=True`` gives timm's ``FeatureGetterNet`` over ``DRNet.forward_intermediates``: each image's
feature maps at its routed resolution, on the full-resolution grid.
"""
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Union

from torch import nn
from timm.models import (
    build_model_with_cfg,
    create_model,
    generate_default_cfgs,
    get_pretrained_cfg,
    register_model,
    resolve_pretrained_cfg,
    split_model_name_tag,
)

from .drnet import DRNet
from .hub import read_state_dict_keys
from .layers import BACKBONE_FEATURE_INDEX, PREDICTORS

__all__ = ['create_drnet', 'DRNET_BACKBONES']

# registered variant -> (backbone with the timm pretrained tag to start from, predictor, resolutions)
DRNET_BACKBONES: Dict[str, Dict[str, Any]] = {
    'drnet_resnet18': dict(backbone='resnet18.a1_in1k', predictor='mobile'),
    'drnet_resnet34': dict(backbone='resnet34.a1_in1k', predictor='mobile'),
    'drnet_resnet50': dict(backbone='resnet50.a1_in1k', predictor='resnet'),
    'drnet_resnet101': dict(backbone='resnet101.a1h_in1k', predictor='resnet'),
    'drnet_mobilenetv2_100': dict(backbone='mobilenetv2_100.ra_in1k', predictor='mobile',
                                  resolutions=(1.0, 0.875, 0.75)),
    'drnet_tf_efficientnet_lite0': dict(backbone='tf_efficientnet_lite0.in1k', predictor='mobile'),
    'drnet_efficientnet_b0': dict(backbone='efficientnet_b0.ra_in1k', predictor='mobile'),
}

_SOURCE_KEYS = ('url', 'file', 'state_dict', 'hf_hub_id')
_DATA_KEYS = ('input_size', 'test_input_size', 'min_input_size', 'interpolation', 'crop_pct', 'test_crop_pct',
              'crop_mode', 'mean', 'std', 'num_classes', 'license', 'pool_size', 'test_pool_size')
# the tag prefix of cfgs whose weights are the backbone's timm weights (every branch) with an untrained predictor
BACKBONE_TAG = 'backbone_'


def _as_tuple(names: Optional[Union[str, Sequence[str]]]) -> tuple:
    if not names:
        return ()
    return (names,) if isinstance(names, str) else tuple(names)


def _backbone_cfg(backbone: Union[str, nn.Module]) -> Dict[str, Any]:
    if isinstance(backbone, nn.Module):
        return dict(getattr(backbone, 'pretrained_cfg', {}))
    cfg = get_pretrained_cfg(backbone)
    return cfg.to_dict() if cfg is not None else {}


def _structure_cfg(backbone: Union[str, nn.Module], predictor: str) -> Dict[str, Any]:
    """first_conv (predictor stem + backbone stem) and classifier names of the wrapped model."""
    cfg = _backbone_cfg(backbone)
    stems = _as_tuple(cfg.get('first_conv'))
    predictor_stems = tuple(f'trunk.{c}' for c in stems) if predictor in BACKBONE_FEATURE_INDEX else \
        (PREDICTORS[predictor].first_conv,)
    return dict(
        first_conv=(*(f'predictor.{c}' for c in predictor_stems), *(f'backbone.{c}' for c in stems)),
        classifier=tuple(f'backbone.{c}' for c in _as_tuple(cfg.get('classifier'))) or None,
    )


def _drnet_cfg(backbone: Union[str, nn.Module], predictor: str, **kwargs) -> Dict[str, Any]:
    """A DRNet pretrained_cfg: the backbone's data config (mean, std, size, crop), no weights of its own."""
    cfg = _backbone_cfg(backbone)
    return {
        **{k: cfg[k] for k in _DATA_KEYS if cfg.get(k) is not None},
        **_structure_cfg(backbone, predictor),
        'paper_ids': 'arXiv:2106.02898',
        **kwargs,
    }


def _backbone_weights_cfg(backbone: str, predictor: str) -> Dict[str, Any]:
    """The cfg of a registered model whose weights are its backbone's timm weights, with an untrained predictor."""
    cfg = _backbone_cfg(backbone)
    return _drnet_cfg(
        backbone, predictor, hf_hub_id=cfg.get('hf_hub_id'), url=cfg.get('url'),
        description=f'timm {backbone} ImageNet weights in every resolution branch; predictor untrained: every '
                    f'image runs at full resolution until the predictor is trained or a cascade is set')


default_cfgs = generate_default_cfgs({
    f'{name}.{BACKBONE_TAG}{split_model_name_tag(args["backbone"])[1]}':
        _backbone_weights_cfg(args['backbone'], args['predictor'])
    for name, args in DRNET_BACKBONES.items()
})


def _loads_backbone_weights(cfg: Dict[str, Any], backbone: Union[str, nn.Module]) -> bool:
    """True for a backbone-weights cfg: its only weight source is the backbone's own (no DRNet weights)."""
    if not str(cfg.get('tag') or '').startswith(BACKBONE_TAG) or cfg.get('file') or cfg.get('state_dict'):
        return False
    own = _backbone_cfg(backbone)
    return all(cfg.get(k) == own.get(k) for k in ('hf_hub_id', 'url'))


def _is_backbone_checkpoint(path: str) -> bool:
    """True for a single weights file that is not a DRNet state dict (``local-dir:`` sources are folders)."""
    if not Path(path).is_file():
        return False
    keys = read_state_dict_keys(path)
    return not (any(k.startswith('predictor.') for k in keys) and any(k.startswith('backbone.') for k in keys))


def _create_drnet(variant: str, pretrained: bool = False, **kwargs) -> DRNet:
    backbone = kwargs.get('backbone', 'resnet50')
    predictor = kwargs.get('predictor', 'resnet')
    if predictor not in PREDICTORS:
        raise ValueError(f"Unknown predictor '{predictor}', choose one of {sorted(PREDICTORS)}.")
    pretrained_cfg = kwargs.pop('pretrained_cfg', None)
    overlay = dict(kwargs.pop('pretrained_cfg_overlay', None) or {})
    if variant == 'drnet' and not pretrained_cfg:
        pretrained_cfg = _drnet_cfg(backbone, predictor, architecture='drnet')
    cfg = resolve_pretrained_cfg(variant, pretrained_cfg=pretrained_cfg, pretrained_cfg_overlay=overlay).to_dict()
    cfg.update(_structure_cfg(backbone, predictor))

    if pretrained and cfg.get('file') and _is_backbone_checkpoint(cfg['file']):
        # a plain checkpoint of the backbone: load it into the backbone, then copy into every BN branch
        kwargs['backbone_pretrained_cfg_overlay'] = dict(file=cfg.pop('file'))
    has_own_weights = any(cfg.get(k) for k in _SOURCE_KEYS) and not _loads_backbone_weights(cfg, backbone)
    return build_model_with_cfg(
        DRNet,
        variant,
        pretrained=pretrained and has_own_weights,
        pretrained_cfg=cfg,
        feature_cfg=dict(feature_cls='getter', out_indices=None),  # every level of the backbone's feature_info
        backbone_pretrained=pretrained and not has_own_weights,
        **kwargs,
    )


def _create_variant(variant: str, pretrained: bool, **kwargs) -> DRNet:
    return _create_drnet(variant, pretrained, **dict(DRNET_BACKBONES[variant], **kwargs))


@register_model
def drnet(pretrained: bool = False, **kwargs) -> DRNet:
    """DRNet around any timm backbone: ``timm.create_model('drnet', backbone='convnext_tiny')``."""
    return _create_drnet('drnet', pretrained, **kwargs)


@register_model
def drnet_resnet18(pretrained: bool = False, **kwargs) -> DRNet:
    """DR-ResNet-18, inverted-residual predictor."""
    return _create_variant('drnet_resnet18', pretrained, **kwargs)


@register_model
def drnet_resnet34(pretrained: bool = False, **kwargs) -> DRNet:
    """DR-ResNet-34, inverted-residual predictor."""
    return _create_variant('drnet_resnet34', pretrained, **kwargs)


@register_model
def drnet_resnet50(pretrained: bool = False, **kwargs) -> DRNet:
    """DR-ResNet-50 with the paper's ResNet predictor, candidates 1x / 0.75x / 0.5x."""
    return _create_variant('drnet_resnet50', pretrained, **kwargs)


@register_model
def drnet_resnet101(pretrained: bool = False, **kwargs) -> DRNet:
    """DR-ResNet-101 with the paper's ResNet predictor."""
    return _create_variant('drnet_resnet101', pretrained, **kwargs)


@register_model
def drnet_mobilenetv2_100(pretrained: bool = False, **kwargs) -> DRNet:
    """DR-MobileNetV2, inverted-residual predictor, the paper's candidates 1x / 0.875x / 0.75x."""
    return _create_variant('drnet_mobilenetv2_100', pretrained, **kwargs)


@register_model
def drnet_tf_efficientnet_lite0(pretrained: bool = False, **kwargs) -> DRNet:
    """DR-EfficientNet-Lite0, inverted-residual predictor."""
    return _create_variant('drnet_tf_efficientnet_lite0', pretrained, **kwargs)


@register_model
def drnet_efficientnet_b0(pretrained: bool = False, **kwargs) -> DRNet:
    """DR-EfficientNet-B0, inverted-residual predictor."""
    return _create_variant('drnet_efficientnet_b0', pretrained, **kwargs)


def create_drnet(
        backbone: Union[str, nn.Module],
        resolutions: Sequence[float] = (1.0, 0.75, 0.5),
        predictor: str = 'resnet',
        pretrained: bool = False,
        **kwargs,
) -> DRNet:
    """ Wrap any timm backbone (name or built model) as a DRNet in one call.

    Equivalent to ``timm.create_model('drnet', backbone=..., ...)``; ``pretrained=True`` loads the
    backbone's timm weights into every BN branch.
    """
    return create_model('drnet', pretrained=pretrained, backbone=backbone, resolutions=resolutions,
                        predictor=predictor, **kwargs)
