""" torch.hub entry points: ``torch.hub.load('path/to/timm-drnet', 'drnet_resnet50', source='local')``.

Each entry is the timm model of the same name, so every ``timm.create_model`` argument works here too.
"""
from functools import partial

import timm

import timm_drnet

dependencies = ['torch', 'torchvision', 'timm', 'safetensors', 'huggingface_hub']

for _name in ('drnet', *timm_drnet.DRNET_BACKBONES):
    globals()[_name] = partial(timm.create_model, _name)
