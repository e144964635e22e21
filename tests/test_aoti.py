""" AOTInductor export: each package against the model, the runner's routes (predictor, cascade, prepared) against
the model's, its errors. Compiling a package takes a C++ build (10-20 s each on 2 cores): one export per test module
setting, every test marked slow."""
import json

import pytest
import torch
import torch.nn.functional as F

from timm_drnet import AOTI_CONFIG_NAME, AotiDRNet, export_aoti

SIZE = 96
pytestmark = pytest.mark.slow


def _spread_bias(model, x) -> None:
    """A resolution bias under which each candidate gets at least 3 of the images ``x``."""
    with torch.no_grad():
        scores = model.predict_logits(x, bias=False)
        g = torch.Generator().manual_seed(0)
        for _ in range(1000):
            model.resolution_bias.copy_(torch.randn(3, generator=g) * scores.std(0))
            if torch.bincount(model.predict_logits(x).argmax(1), minlength=3).min() >= 3:
                return
    raise AssertionError('no resolution bias spreads the images')


@pytest.fixture(scope='module')
def aoti(warm_drnet, varied_images, tmp_path_factory):
    """A warm DRNet whose routes cover every resolution, exported full-size, and prepared with a cascade set."""
    model = warm_drnet('test_efficientnet')
    x = varied_images(24, SIZE, generator_seed=5)
    _spread_bias(model, x)
    directory = tmp_path_factory.mktemp('aoti')
    configs = dict(full=export_aoti(model, directory / 'full', (3, SIZE, SIZE)))
    model.set_cascade(0.5)
    try:
        configs['prepared'] = export_aoti(model, directory / 'prepared', (3, SIZE, SIZE), prepared=True)
    finally:
        model.set_cascade(None)
    return model, directory, configs, x


def _resized(x, size):
    return F.interpolate(x, size=size, mode='bilinear', align_corners=False, antialias=True)


def test_each_package_matches_the_model(aoti):
    model, directory, configs, x = aoti
    runner = AotiDRNet(directory / 'full')
    assert configs['full']['torch_version'] == torch.__version__
    with torch.no_grad():
        for batch in (1, 7):  # dynamic batch axis
            images = x[:batch]
            torch.testing.assert_close(runner.predictor(images), model.predict_logits(images), atol=1e-4, rtol=0)
            for j, package in enumerate(runner.backbones):
                torch.testing.assert_close(package(images), model(images, resolution_index=j), atol=1e-4, rtol=0)


def test_runner_routes_like_the_model(aoti):
    model, directory, configs, x = aoti
    with torch.no_grad():
        out = model.forward_routed(x)
    assert len(out.resolution_index.unique()) == model.num_resolutions  # every package is exercised
    runner = AotiDRNet(directory / 'full')
    result = runner.forward_routed(x)
    assert result.resolution_index.tolist() == out.resolution_index.tolist()
    torch.testing.assert_close(result.logits, out.logits, atol=1e-4, rtol=0)
    torch.testing.assert_close(result.scores, model.predict_logits(x).detach(), atol=1e-4, rtol=0)
    for i in range(len(x)):  # one image at a time, as a server at batch 1 sends them
        one = runner.forward_routed(x[i:i + 1])
        assert one.resolution_index.tolist() == out.resolution_index[i:i + 1].tolist()
        torch.testing.assert_close(one.logits, out.logits[i:i + 1], atol=1e-4, rtol=0)
    assert runner.forward_routed(x[:0]).logits.shape == (0, model.num_classes)


def test_runner_cascade_routes_like_the_model(aoti):
    """A cascade set on the runner answers as the model's: each level's package on the images still going."""
    model, directory, configs, x = aoti
    with torch.no_grad():
        points = model(x, resolution_index=2).softmax(-1).amax(-1).sort().values
    k = len(x) // 4 + points[len(x) // 4:3 * len(x) // 4].diff().argmax()
    threshold = ((points[k] + points[k + 1]) / 2).item()  # far from every confidence; stops some images at 2
    model.set_cascade(threshold, levels=(2, 0))
    try:
        with torch.no_grad():
            ref = model.forward_routed(x)
    finally:
        model.set_cascade(None)
    runner = AotiDRNet(directory / 'full')
    runner.set_cascade(threshold, levels=(2, 0))
    result = runner.forward_routed(x)
    assert result.resolution_index.tolist() == ref.resolution_index.tolist()
    assert 0 < int((ref.resolution_index == 0).sum()) < len(x)
    torch.testing.assert_close(result.logits, ref.logits, atol=1e-4, rtol=0)
    for i in range(len(x)):
        one = runner.forward_routed(x[i:i + 1])
        assert one.resolution_index.tolist() == ref.resolution_index[i:i + 1].tolist()
        torch.testing.assert_close(one.logits, ref.logits[i:i + 1], atol=1e-4, rtol=0)


def test_cascade_travels_with_the_export(aoti):
    model, directory, configs, x = aoti
    assert configs['full']['cascade'] is None and AotiDRNet(directory / 'full').cascade is None
    saved = json.loads((directory / 'prepared' / AOTI_CONFIG_NAME).read_text())
    assert saved['cascade'] == dict(threshold=0.5, levels=[2, 1, 0])
    assert AotiDRNet(directory / 'prepared').cascade == ((2, 1, 0), 0.5)


def test_forward_prepared_routes_like_the_model(aoti):
    """``forward_prepared`` asks for each route's images, at each package's own size, and answers as the model."""
    model, directory, configs, x = aoti
    runner = AotiDRNet(directory / 'prepared')
    runner.set_cascade(None)  # the predictor's routes
    sizes = model.candidate_sizes(SIZE, SIZE)
    assert runner.predictor_input_size == (3, model.predictor_size, model.predictor_size)
    assert runner.backbone_input_sizes == [(3, *s) for s in sizes]
    small = _resized(x, (model.predictor_size,) * 2)
    at_size = [_resized(x, s) for s in sizes]
    asked = []

    def images_at(j, chosen):
        asked.append((j, chosen.tolist()))
        return at_size[j][chosen]
    with torch.no_grad():
        out = model.forward_routed(x)
    result = runner.forward_prepared(small, images_at)
    assert result.resolution_index.tolist() == out.resolution_index.tolist()
    torch.testing.assert_close(result.logits, out.logits, atol=1e-4, rtol=0)
    assert sorted(asked) == [(j, torch.nonzero(out.resolution_index == j).flatten().tolist()) for j in range(3)]
    index, scores = runner.route(small)
    assert index.tolist() == out.resolution_index.tolist()
    j = int(index[0])
    torch.testing.assert_close(runner.classify(at_size[j][:1], j), out.logits[:1], atol=1e-4, rtol=0)


def test_untrained_predictor_sends_every_image_to_full_resolution(aoti, tmp_path):
    """An export of a never-trained predictor (its config says so) routes as the model does: every image at 1x."""
    model, directory, configs, x = aoti
    for name in [configs['full']['predictor'], *configs['full']['backbones']]:
        (tmp_path / name).symlink_to(directory / 'full' / name)
    (tmp_path / AOTI_CONFIG_NAME).write_text(json.dumps(dict(configs['full'], predictor_trained=False)))
    result = AotiDRNet(tmp_path).forward_routed(x[:5])
    assert result.resolution_index.tolist() == [0] * 5
    torch.testing.assert_close(result.scores, F.one_hot(torch.zeros(5, dtype=torch.long), 3).float())
    with torch.no_grad():
        torch.testing.assert_close(result.logits, model(x[:5], resolution_index=0), atol=1e-4, rtol=0)


def test_runner_errors(aoti, tmp_path):
    model, directory, configs, x = aoti
    with pytest.raises(FileNotFoundError, match=f'No {AOTI_CONFIG_NAME} in .*export_aoti'):
        AotiDRNet(tmp_path)
    (tmp_path / AOTI_CONFIG_NAME).write_text(json.dumps(dict(format='timm-drnet-onnx')))
    with pytest.raises(ValueError, match='is not a timm-drnet-aoti export config'):
        AotiDRNet(tmp_path)
    config = dict(configs['full'], predictor='gone.pt2')
    (tmp_path / AOTI_CONFIG_NAME).write_text(json.dumps(config))
    with pytest.raises(FileNotFoundError, match='gone.pt2 is missing'):
        AotiDRNet(tmp_path)
    runner = AotiDRNet(directory / 'full')
    with pytest.raises(ValueError, match=r'routed forward input must be shaped \(B, 3, 96, 96\), got \(2, 3, 64, 64\)'):
        runner.forward_routed(x[:2, :, :64, :64])
    with pytest.raises(TypeError, match='float32 on the CPU'):
        runner.forward_routed(x[:2].double())
    with pytest.raises(ValueError, match='prepared=True'):
        AotiDRNet(directory / 'prepared').forward_routed(x)
    with pytest.raises(ValueError, match=r'candidate in \[0, 3\)'):
        runner.classify(x, 3)
    with pytest.raises(ValueError, match='max_batch_size must be >= 2'):
        export_aoti(model, tmp_path / 'small', (3, SIZE, SIZE), max_batch_size=1)
