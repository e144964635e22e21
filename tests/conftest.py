import pytest
import torch

import timm_drnet  # noqa: F401  registers the drnet_* models


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(params=[
    'cpu',
    pytest.param('cuda', marks=pytest.mark.skipif(not torch.cuda.is_available(), reason='no CUDA device')),
])
def device(request) -> torch.device:
    """Run a test on the CPU and, when one is present, on a CUDA device."""
    return torch.device(request.param)


def _varied_images(n: int, size: int = 96, generator_seed: int = 1) -> torch.Tensor:
    """Noise images with a different contrast and colour cast each, so a predictor scores them differently."""
    g = torch.Generator().manual_seed(generator_seed)
    scale = torch.rand(n, 1, 1, 1, generator=g) * 3 + 0.1
    return torch.randn(n, 3, size, size, generator=g) * scale + torch.randn(n, 3, 1, 1, generator=g)


@pytest.fixture(scope='session')
def varied_images():
    """Factory ``(n, size=96, generator_seed=1) -> (n, 3, size, size)`` images the predictor tells apart."""
    return _varied_images


@pytest.fixture(scope='session')
def warm_drnet():
    """ Factory for a tiny DRNet standing in for a trained one (``timm.create_model('drnet', ...)`` kwargs).

    Every batch norm, in the predictor and in each resolution's private branch, gets the statistics of
    real activations (a different input distribution per resolution), so predictor scores vary across
    images and the branches differ, as after training. Returned in eval mode.
    """
    def make(backbone: str = 'test_resnet', size: int = 96, seed: int = 0, **kwargs):
        import timm
        torch.manual_seed(seed)
        kwargs.setdefault('predictor', 'mobile')
        kwargs.setdefault('num_classes', 5)
        model = timm.create_model('drnet', backbone=backbone, **kwargs)
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.reset_running_stats()
                m.momentum = None  # cumulative average: one pass sets the statistics
        x = _varied_images(32, size, generator_seed=2)
        model.train()
        with torch.no_grad():
            model.predict_logits(x)
            for j in range(model.num_resolutions):
                model(x * (j + 1) + j, resolution_index=j)
        model.mark_predictor_trained()  # it stands in for a trained model: eval routes by its predictor
        return model.eval()
    return make
