""" Parameter groups: the predictor learns at a fraction of the backbone's learning rate (the paper's 0.1x) """
from typing import Dict, List

from torch import nn
from timm.optim import param_groups_weight_decay

__all__ = ['predictor_param_groups']


def predictor_param_groups(model: nn.Module, weight_decay: float, predictor_lr_scale: float) -> List[Dict]:
    """timm's weight-decay groups for the backbone, and for the predictor with ``lr_scale`` (the paper's 0.1x)."""
    groups = []
    for module, lr_scale in ((model.backbone, 1.0), (model.predictor, predictor_lr_scale)):
        for group in param_groups_weight_decay(module, weight_decay):
            if group['params']:
                groups.append(dict(group, lr_scale=lr_scale))
    return groups
