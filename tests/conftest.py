import pytest
import torch

import timm_drnet  # noqa: F401  registers the drnet_* models


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
