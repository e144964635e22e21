""" Resolution predictors

The tiny CNN that looks at a downsized copy of each image and scores the m candidate resolutions
(DRNet section 3.1). Two designs from the paper:

* ``ResNetPredictor``: 4 stages of one BasicBlock each, widths 64/128/256/512, 7x7/2 stem + max pool,
  128x128 input (about 0.29 GMACs, 4.9M params), used for ResNet backbones. It is timm's own ResNet
  with ``layers=(1, 1, 1, 1)``.
* ``MobilePredictor``: the same 4-stage layout with inverted-residual blocks at 64x64 input, for mobile
  backbones whose whole budget is a few hundred MMACs.

Beyond the paper, ``BackbonePredictor`` reuses the backbone's own first stages (a copy, with their
ImageNet weights) at 64x64 input. The paper trains its predictor on 1.28M images; on a few thousand, a
predictor learned from scratch does not learn which images need the large resolution, while early
pretrained features already describe object scale and clutter (see ``benchmarks/predictor_ceiling.py``).
``'backbone'`` copies the first three feature stages (stride 8), ``'stem'`` only the first (stride 2: ResNet's
7x7 stem, EfficientNet's stem and first block): at batch 1 on a CPU, a predictor's time goes by its count of
layers more than by its MACs (Lite0 at 32 px, one image: 3 convolutions against 15, about a quarter of the time).

Every predictor has ``reparameterize()``, which timm's ``reparameterize_model`` calls: for inference, its batch norms
fold into the convolutions (Lite0's backbone predictor, one image, eager CPU: 15 fewer ops, about 0.2 of 1.1 ms).
"""
import copy
from typing import Optional, Sequence, Type

import torch
from torch import nn
from timm.layers import ConvNormAct, SelectAdaptivePool2d, make_divisible
from timm.models import BasicBlock, ResNet

from .fold_bn import fold_batch_norms

__all__ = ['ResNetPredictor', 'MobilePredictor', 'BackbonePredictor', 'InvertedResidual', 'create_predictor',
           'PREDICTORS', 'BACKBONE_FEATURE_INDEX', 'FoldsForInference']


class FoldsForInference:
    """ ``reparameterize()``: the batch norms folded into the convolutions they follow, in place, for inference.

    timm's ``reparameterize_model`` calls it. The scores are the same to float rounding; the predictor is then in eval
    mode with no batch norms to train.
    """
    default_input_size: int

    def reparameterize(self) -> None:
        conv = next(m for m in self.modules() if isinstance(m, nn.Conv2d))
        size = self.default_input_size
        fold_batch_norms(self, conv.weight.new_empty(2, conv.in_channels, size, size).normal_())


class ResNetPredictor(FoldsForInference, ResNet):
    """ The paper's ResNet predictor: timm ResNet, one BasicBlock per stage, ``num_resolutions`` outputs."""
    first_conv = 'conv1'
    default_input_size = 128

    def __init__(self, num_resolutions: int, in_chans: int = 3):
        super().__init__(block=BasicBlock, layers=(1, 1, 1, 1), num_classes=num_resolutions, in_chans=in_chans)


class InvertedResidual(nn.Module):
    """ MobileNetV2 block: 1x1 expand, 3x3 depthwise, 1x1 linear project, residual when shapes allow."""

    def __init__(self, in_chs: int, out_chs: int, stride: int = 1, exp_ratio: float = 4.0,
                 act_layer: Type[nn.Module] = nn.ReLU6):
        super().__init__()
        mid_chs = make_divisible(in_chs * exp_ratio)
        self.conv_pw = ConvNormAct(in_chs, mid_chs, 1, act_layer=act_layer)
        self.conv_dw = ConvNormAct(mid_chs, mid_chs, 3, stride=stride, groups=mid_chs, act_layer=act_layer)
        self.conv_pwl = ConvNormAct(mid_chs, out_chs, 1, apply_act=False)
        self.has_skip = stride == 1 and in_chs == out_chs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.conv_pwl(self.conv_dw(self.conv_pw(x)))
        return x + shortcut if self.has_skip else x


class MobilePredictor(FoldsForInference, nn.Module):
    """ 4-stage inverted-residual predictor (one stride-2 block per stage) for 64x64 inputs."""
    first_conv = 'stem.conv'
    default_input_size = 64

    def __init__(
            self,
            num_resolutions: int,
            in_chans: int = 3,
            stem_chs: int = 16,
            widths: Sequence[int] = (24, 48, 96, 192),
            num_features: int = 512,
            act_layer: Type[nn.Module] = nn.ReLU6,
    ):
        super().__init__()
        self.stem = ConvNormAct(in_chans, stem_chs, 3, stride=2, act_layer=act_layer)
        stages, prev_chs = [], stem_chs
        for chs in widths:
            stages.append(InvertedResidual(prev_chs, chs, stride=2, act_layer=act_layer))
            prev_chs = chs
        self.stages = nn.Sequential(*stages)
        self.conv_head = ConvNormAct(prev_chs, num_features, 1, act_layer=act_layer)
        self.global_pool = SelectAdaptivePool2d(pool_type='avg', flatten=True)
        self.fc = nn.Linear(num_features, num_resolutions)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_head(self.stages(self.stem(x)))
        return self.fc(self.global_pool(x))


class BackbonePredictor(FoldsForInference, nn.Module):
    """ A copy of a timm backbone's first ``feature_index + 1`` feature stages (index 2: stride 8 on ResNets and
    EfficientNets, 16 on ConvNeXt), average pooled, and a linear scorer. Built from the backbone before its BNs
    become private, so it starts from the backbone's weights; it then trains as the predictor's own copy.
    """
    default_input_size = 64

    def __init__(self, num_resolutions: int, in_chans: int = 3, backbone: Optional[nn.Module] = None,
                 feature_index: int = 2):
        super().__init__()
        if backbone is None or not hasattr(backbone, 'prune_intermediate_layers'):
            raise ValueError("predictor='backbone' and 'stem' need a timm backbone with forward_intermediates() "
                             f"(ResNet, EfficientNet, MobileNet, ConvNeXt, ...); got {type(backbone).__name__}")
        self.feature_index = feature_index
        self.trunk = copy.deepcopy(backbone)
        self.trunk.prune_intermediate_layers(indices=[feature_index], prune_norm=True, prune_head=True)
        num_chs = backbone.feature_info[feature_index]['num_chs']
        self.global_pool = SelectAdaptivePool2d(pool_type='avg', flatten=True)
        self.fc = nn.Linear(num_chs, num_resolutions)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.trunk.forward_intermediates(x, indices=[self.feature_index], intermediates_only=True)[-1]
        return self.fc(self.global_pool(x))


PREDICTORS = {'resnet': ResNetPredictor, 'mobile': MobilePredictor, 'backbone': BackbonePredictor,
              'stem': BackbonePredictor}
BACKBONE_FEATURE_INDEX = {'backbone': 2, 'stem': 0}  # the BackbonePredictor designs: the last feature stage copied


def create_predictor(name: str, num_resolutions: int, in_chans: int = 3, backbone: Optional[nn.Module] = None,
                     ) -> nn.Module:
    """Build predictor ``name`` ('resnet', 'mobile', or from ``backbone``: 'backbone', its first three feature
    stages, or 'stem', its first) for ``num_resolutions``."""
    if name not in PREDICTORS:
        raise ValueError(f"Unknown predictor '{name}', choose one of {sorted(PREDICTORS)}.")
    if name in BACKBONE_FEATURE_INDEX:
        return BackbonePredictor(num_resolutions, in_chans=in_chans, backbone=backbone,
                                 feature_index=BACKBONE_FEATURE_INDEX[name])
    return PREDICTORS[name](num_resolutions, in_chans=in_chans)
