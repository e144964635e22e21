""" ONNX export: exact resize taps, BN folding, per-graph and routed parity with onnxruntime, the runner."""
import copy
import json

import numpy as np
import onnx
import pytest
import torch
from torch import nn
import torch.nn.functional as F
import timm
from timm.layers import Conv2dSame

from timm_drnet import ONNX_CONFIG_NAME, OnnxDRNet, TapResize, export_onnx, fold_batch_norms, write_graph
from timm_drnet.layers import AxisResize, StaticPadConv2d, fix_same_padding, resize_matrix, strided_taps
from timm_drnet.layers import is_batch_norm

SIZE = 96


@pytest.mark.parametrize('in_size,out_size', [
    ((96, 96), (72, 72)), ((96, 96), (48, 48)), ((224, 224), (168, 168)), ((225, 160), (113, 80)),
    ((96, 96), (96, 48)), ((40, 300), (17, 33)), ((48, 48), (64, 56)), ((96, 224), (32, 56)),
])
def test_tap_resize_equals_interpolate(in_size, out_size):
    x = torch.randn(3, 3, *in_size)
    ref = F.interpolate(x, size=out_size, mode='bilinear', align_corners=False, antialias=True)
    torch.testing.assert_close(TapResize(in_size, out_size)(x), ref, rtol=0, atol=2e-6)
    with pytest.raises(ValueError, match='built for'):
        TapResize(in_size, out_size)(torch.randn(1, 3, 50, 50))
    with pytest.raises(ValueError, match='built for'):
        TapResize(in_size, out_size)(torch.randn(1, 4, *in_size))


@pytest.mark.parametrize('in_len,out_len,stride', [(224, 112, 2), (96, 32, 3), (224, 56, 4), (225, 113, None),
                                                   (224, 168, None), (48, 64, None)])
def test_whole_factor_axes_run_as_strided_convolutions(in_len, out_len, stride):
    """An axis that shrinks by a whole factor is a convolution of one kernel (renormalised at the edges): the band it
    spans, rebuilt tap by tap, is PyTorch's resize of that axis; other axes stay matrix products."""
    axis = AxisResize(in_len, out_len, -1, channels=3)
    if stride is None:
        assert axis.weight is None and strided_taps(resize_matrix(in_len, out_len)) is None
        return
    assert axis.weight is not None and axis.matrix is None and axis.stride == (1, stride)
    kernel, padding, scale = strided_taps(resize_matrix(in_len, out_len))
    rebuilt = torch.zeros(out_len, in_len)
    for o in range(out_len):
        for k, w in enumerate(kernel):
            if 0 <= stride * o - padding + k < in_len:
                rebuilt[o, stride * o - padding + k] = w * scale[o]
    basis = torch.eye(in_len).view(in_len, 1, 1, in_len).expand(-1, -1, 2, -1)  # one-hot rows, 2 high
    ref = F.interpolate(basis, size=(2, out_len), mode='bilinear', align_corners=False, antialias=True)[:, 0, 0]
    torch.testing.assert_close(rebuilt, ref.t(), rtol=0, atol=1e-7)


def random_bn_stats(model: nn.Module) -> nn.Module:
    for m in model.modules():
        if is_batch_norm(m):
            m.running_mean.normal_(0, 0.5)
            m.running_var.uniform_(0.5, 2.)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.normal_(0, 0.3)
    return model.eval()


@pytest.mark.parametrize('name', ['test_resnet', 'test_efficientnet'])  # BatchNorm2d / BatchNormAct2d
def test_fold_batch_norms_keeps_the_function(name):
    model = random_bn_stats(timm.create_model(name))
    reference = timm.create_model(name).eval()
    reference.load_state_dict(model.state_dict())
    fold_batch_norms(model, torch.randn(2, 3, 64, 64))
    assert not any(is_batch_norm(m) for m in model.modules())  # shortcut / downsample norms included
    acts = [type(m) for m in reference.modules() if isinstance(m, (nn.ReLU, nn.SiLU))]
    assert [type(m) for m in model.modules() if isinstance(m, (nn.ReLU, nn.SiLU))] == acts  # fused acts kept
    x = torch.randn(4, 3, 80, 80)  # not the probe input
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x), rtol=0, atol=1e-5)


def test_fold_leaves_norms_after_other_layers_and_refuses_shared_outputs():
    pre_act = nn.Sequential(nn.BatchNorm2d(3), nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU())
    random_bn_stats(pre_act)
    fold_batch_norms(pre_act, torch.randn(2, 3, 16, 16))
    assert is_batch_norm(pre_act[0]) and isinstance(pre_act[2], nn.Identity)

    class Shared(nn.Module):  # the conv output also feeds the residual sum: folding would change it
        def __init__(self):
            super().__init__()
            self.conv, self.bn = nn.Conv2d(3, 3, 3, padding=1), nn.BatchNorm2d(3)

        def forward(self, x):
            y = self.conv(x)
            return self.bn(y) + y
    with pytest.raises(RuntimeError, match='another consumer'):
        fold_batch_norms(random_bn_stats(Shared()), torch.randn(2, 3, 16, 16))


@pytest.fixture(scope='module', params=['test_resnet', 'test_efficientnet', 'test_efficientnet_same'])
def exported(request, warm_drnet, varied_images, tmp_path_factory):
    """A warm DRNet whose resolution bias spreads the images over all resolutions, exported to ONNX (``_same``: with
    TF "SAME" padding, timm's ``Conv2dSame``)."""
    if request.param.endswith('_same'):
        model = warm_drnet(timm.create_model(request.param[:-len('_same')], pad_type='same'))
    else:
        model = warm_drnet(request.param)
    x = varied_images(24, SIZE, generator_seed=5)
    with torch.no_grad():
        scores = model.predict_logits(x)
        g = torch.Generator().manual_seed(0)
        for _ in range(1000):  # a resolution bias under which each candidate gets at least 3 images
            model.resolution_bias.copy_(torch.randn(3, generator=g) * scores.std(0))
            if torch.bincount(model.predict_logits(x).argmax(1), minlength=3).min() >= 3:
                break
    directory = tmp_path_factory.mktemp(f'onnx_{request.param}')
    config = export_onnx(model, directory, (3, SIZE, SIZE))
    return model, directory, config, x


def test_each_graph_matches_pytorch(exported):
    model, directory, config, x = exported
    runner = OnnxDRNet(directory)
    for batch in (1, 7):  # dynamic batch axis
        images = x[:batch]
        with torch.no_grad():
            scores = model.predict_logits(images).numpy()
            assert np.abs(runner.predictor.run(None, {'images': images.numpy()})[0] - scores).max() < 1e-4
            for j, session in enumerate(runner.backbones):
                logits = model(images, resolution_index=j).numpy()
                assert np.abs(session.run(None, {'images': images.numpy()})[0] - logits).max() < 1e-4


def test_runner_routes_like_the_model(exported):
    model, directory, config, x = exported
    with torch.no_grad():
        out = model.forward_routed(x)
    assert len(out.resolution_index.unique()) == model.num_resolutions  # every graph is exercised
    result = OnnxDRNet(directory).forward_routed(x.numpy())
    assert result.resolution_index.tolist() == out.resolution_index.tolist()
    assert np.abs(result.logits - out.logits.numpy()).max() < 1e-4
    np.testing.assert_allclose(result.scores, model.predict_logits(x).detach().numpy(), atol=1e-4)
    for j in range(model.num_resolutions):  # single images, and batches that all go one way
        chosen = torch.nonzero(out.resolution_index == j).flatten()
        for images in (x[chosen[:1]], x[chosen]):
            one = OnnxDRNet(directory).forward_routed(images.numpy())
            assert (one.resolution_index == j).all()
            assert np.abs(one.logits - out.logits[chosen[:len(images)]].numpy()).max() < 1e-4


def test_runner_threads_stop_spinning_between_runs_unless_asked(exported):
    """Threads one graph's session leaves spinning would slow the next graph of the same routed call."""
    import onnxruntime
    directory = exported[1]
    key = 'session.force_spinning_stop'
    runner = OnnxDRNet(directory)
    for session in [runner.predictor, *runner.backbones]:
        assert session.get_session_options().get_session_config_entry(key) == '1'
    options = onnxruntime.SessionOptions()
    options.add_session_config_entry('session.intra_op.allow_spinning', '0')
    runner = OnnxDRNet(directory, session_options=options)
    assert runner.backbones[0].get_session_options().get_session_config_entry('session.intra_op.allow_spinning') == '0'


def test_graphs_hold_folded_private_norms(exported):
    model, directory, config, x = exported
    weights = []
    for name in config['backbones']:
        graph = onnx.load(str(directory / name))
        ops = {node.op_type for node in graph.graph.node}
        assert 'BatchNormalization' not in ops and 'Conv' in ops
        assert graph.graph.input[0].type.tensor_type.shape.dim[0].dim_param == 'batch'
        init = {i.name: onnx.numpy_helper.to_array(i) for i in graph.graph.initializer}
        stem = next(n for n in graph.graph.node if n.op_type == 'Conv' and n.input[1] in init)
        weights.append(init[stem.input[1]])  # the stem, not the 0.5x graph's resize (a Constant node)
    # the first conv's weight carries each resolution's own BN statistics
    assert not np.allclose(weights[0], weights[1]) and not np.allclose(weights[1], weights[2])
    assert config['resolutions'] == list(model.resolutions) and config['cost_table']['unit'] == 'gmacs'


def test_graphs_work_out_no_sizes_at_run_time(exported):
    """Every size but the batch is fixed in the graphs: no ``Shape`` chains, and timm's TF "SAME" pads sit in the
    ``Conv`` nodes (asymmetric where the input size needs it), with no ``Pad`` node."""
    model, directory, config, x = exported
    asymmetric = 0
    for name in [config['predictor'], *config['backbones']]:
        nodes = onnx.load(str(directory / name)).graph.node
        assert not {'Shape', 'Pad'} & {node.op_type for node in nodes}, name
        for node in nodes:
            pads = next((list(a.ints) for a in node.attribute if a.name == 'pads'), [0] * 4)
            asymmetric += node.op_type == 'Conv' and pads[:2] != pads[2:]
    assert (asymmetric > 0) == any(isinstance(m, Conv2dSame) for m in model.modules())


def test_pads_move_into_the_convolutions_they_feed(tmp_path):
    """Zero pads before a ``Conv`` become its ``pads``; a pad of another value, or before another op, stays."""
    import onnxruntime

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = StaticPadConv2d(nn.Conv2d(3, 4, 3, stride=2), (0, 1, 1, 2))
            self.b = nn.Conv2d(4, 4, 3, padding=1)
            self.c = nn.Conv2d(4, 4, 3)

        def forward(self, x):
            x = self.b(self.a(x))
            y = self.c(F.pad(x, (1, 1, 1, 1), value=0.5))
            return F.max_pool2d(F.pad(y, (0, 1, 0, 1)), 2)

    net = Net().eval()
    x = torch.randn(2, 3, 21, 30)
    write_graph(net, x, tmp_path / 'net.onnx')
    graph = onnx.load(str(tmp_path / 'net.onnx')).graph
    assert [n.op_type for n in graph.node].count('Pad') == 2  # the 0.5 pad, and the pad before the max pool
    convs = [n for n in graph.node if n.op_type == 'Conv']
    assert [list(a.ints) for a in convs[0].attribute if a.name == 'pads'] == [[1, 0, 2, 1]]  # H, W begins; ends
    session = onnxruntime.InferenceSession(str(tmp_path / 'net.onnx'), providers=['CPUExecutionProvider'])
    for batch in (1, 2):
        with torch.no_grad():
            ref = net(x[:batch]).numpy()
        assert np.abs(session.run(None, {'images': x[:batch].numpy()})[0] - ref).max() < 1e-5


def test_fix_same_padding_equals_timms_dynamic_padding():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = Conv2dSame(3, 4, 3, stride=2)
            self.b = Conv2dSame(4, 4, 5, stride=2, dilation=2)
            self.c = nn.Sequential(Conv2dSame(4, 4, 4, stride=3, groups=2))
            self.twice = Conv2dSame(4, 4, 3, stride=2)

        def forward(self, x):
            x = self.c(self.b(self.a(x)))
            return self.twice(self.twice(x))  # at two sizes: stays dynamic

    net = Net().eval()
    x = torch.randn(2, 3, 37, 50)
    with torch.no_grad():
        ref = net(x)
        fixed = fix_same_padding(copy.deepcopy(net), x)
        assert isinstance(fixed.a, StaticPadConv2d) and isinstance(fixed.c[0], StaticPadConv2d)
        assert type(fixed.twice) is Conv2dSame
        assert torch.equal(fixed(x), ref)
        assert fixed.a.weight is not net.a.weight and torch.equal(fixed.a.weight, net.a.weight)


def test_runner_errors(exported, tmp_path):
    model, directory, config, x = exported
    runner = OnnxDRNet(directory)
    with pytest.raises(ValueError, match=r'\(B, 3, 96, 96\)'):
        runner(np.zeros((2, 3, 64, 64), np.float32))
    with pytest.raises(TypeError, match='floating point'):
        runner(np.zeros((2, 3, SIZE, SIZE), np.uint8))
    assert runner(np.zeros((0, 3, SIZE, SIZE), np.float32)).shape == (0, model.num_classes)
    with pytest.raises(FileNotFoundError, match='export_onnx'):
        OnnxDRNet(tmp_path)


def _resized(images: torch.Tensor, size) -> np.ndarray:
    return F.interpolate(images, size=size, mode='bilinear', antialias=True).numpy()


@pytest.fixture(scope='module')
def prepared(exported, tmp_path_factory):
    """The ``exported`` model written again with ``prepared=True``, and its runner."""
    model, directory, config, x = exported
    target = tmp_path_factory.mktemp('prepared')
    return export_onnx(model, target, (3, SIZE, SIZE), prepared=True), target, OnnxDRNet(target)


def test_prepared_export_takes_each_graph_input_at_its_own_size(exported, prepared):
    """A prepared export's graphs hold no resize: fed the small images and each route's images resized by PyTorch
    beforehand, ``route`` then ``classify`` give the model's routes and logits; on a full-size export the same two
    calls take full-size images."""
    model, directory, config, x = exported
    prepared_config, target, runner = prepared
    assert prepared_config['prepared'] and prepared_config['single_image'] is None and not config['prepared']
    sizes, p = model.candidate_sizes(SIZE, SIZE), model.predictor_size
    for name, size in [('predictor.onnx', (p, p)), *((f'backbone_{j}.onnx', s) for j, s in enumerate(sizes))]:
        graph = onnx.load(str(target / name)).graph
        assert [d.dim_value for d in graph.input[0].type.tensor_type.shape.dim][1:] == [3, *size]
        resizing = len(onnx.load(str(directory / name)).graph.node) - len(graph.node)  # TapResize's nodes
        assert resizing == 0 if size == (SIZE, SIZE) else resizing > 0
    assert runner.predictor_input_size == (3, p, p) and runner.backbone_input_sizes == [(3, *s) for s in sizes]
    with torch.no_grad():
        out = model.forward_routed(x)
    index, scores = runner.route(_resized(x, (p, p)))
    assert index.tolist() == out.resolution_index.tolist()
    np.testing.assert_allclose(scores, model.predict_logits(x).detach().numpy(), atol=1e-4)
    for j, size in enumerate(sizes):
        chosen = np.flatnonzero(index == j)
        assert np.abs(runner.classify(_resized(x[chosen], size), j) - out.logits[chosen].numpy()).max() < 1e-4
    full = OnnxDRNet(directory)
    assert full.route(x.numpy())[0].tolist() == index.tolist()
    assert np.abs(full.classify(x.numpy(), 1) - model(x, resolution_index=1).detach().numpy()).max() < 1e-4
    with pytest.raises(ValueError, match=r'prepared=True.*forward_prepared\(\)'):
        runner.forward_routed(x.numpy())
    with pytest.raises(ValueError, match=rf"predictor takes image batches shaped \(B, 3, {p}, {p}\)"):
        runner.route(x.numpy())
    with pytest.raises(ValueError, match=r'backbone 2 takes image batches shaped \(B, 3, 48, 48\)'):
        runner.classify(_resized(x, sizes[1]), 2)
    with pytest.raises(ValueError, match=r'candidate in \[0, 3\)'):
        runner.classify(_resized(x, sizes[0]), 3)


def test_forward_prepared_routes_like_the_model(exported, prepared):
    """``forward_prepared`` asks for each route's images and answers as the model does, by the predictor and by a
    cascade (each level's images of those still going)."""
    model, directory, config, x = exported
    runner = prepared[2]
    small = _resized(x, (model.predictor_size,) * 2)
    at_size = [_resized(x, size) for size in model.candidate_sizes(SIZE, SIZE)]
    with torch.no_grad():
        out = model.forward_routed(x)
    result = runner.forward_prepared(small, lambda j, chosen: at_size[j][chosen])
    assert result.resolution_index.tolist() == out.resolution_index.tolist()
    assert np.abs(result.logits - out.logits.numpy()).max() < 1e-4
    assert runner.forward_prepared(small[:0], lambda j, chosen: at_size[j][chosen]).logits.shape[0] == 0
    with torch.no_grad():  # a threshold far from every confidence, that stops some images at the first level
        points = model(x, resolution_index=2).softmax(-1).amax(-1).sort().values
    k = len(x) // 4 + points[len(x) // 4:3 * len(x) // 4].diff().argmax()
    threshold = ((points[k] + points[k + 1]) / 2).item()
    model.set_cascade(threshold, levels=(2, 0))
    runner.set_cascade(threshold, levels=(2, 0))
    try:
        with torch.no_grad():
            ref = model.forward_routed(x)
        asked = []

        def images_at(j, chosen):
            asked.append((j, len(chosen)))
            return at_size[j][chosen]
        cascaded = runner.forward_prepared(small, images_at)
    finally:
        model.set_cascade(None)
        runner.set_cascade(None)
    assert cascaded.resolution_index.tolist() == ref.resolution_index.tolist()
    assert np.abs(cascaded.logits - ref.logits.numpy()).max() < 1e-4
    going = int((ref.resolution_index == 0).sum())
    assert 0 < going < len(x) and asked == [(2, len(x)), (0, going)]


def test_candidate_transforms_make_each_size_in_one_resize():
    """Each transform is timm's eval crop at its size: the decoded image resized once to size / crop_pct on its
    short side (PIL: the config's bicubic at the full size, bilinear below it), centre-cropped, normalised."""
    from PIL import Image
    from timm_drnet.data import candidate_transforms
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (150, 200, 3), dtype=np.uint8))
    cfg = dict(input_size=(3, 96, 96), interpolation='bicubic', mean=(0.5, 0.4, 0.3), std=(0.2, 0.3, 0.4),
               crop_pct=0.875, crop_mode='center')
    transforms = candidate_transforms(cfg, [(96, 96), (72, 72), (24, 24)])
    for transform, side in zip(transforms, (96, 72, 24)):
        short = int(side / 0.875)
        resized = image.resize((round(short * 200 / 150), short), Image.BICUBIC if side == 96 else Image.BILINEAR)
        left, top = int(round((resized.width - side) / 2.)), int(round((resized.height - side) / 2.))
        ref = np.asarray(resized.crop((left, top, left + side, top + side)), np.float32) / 255.
        ref = (ref - np.array(cfg['mean'], np.float32)) / np.array(cfg['std'], np.float32)
        np.testing.assert_allclose(transform(image).numpy(), ref.transpose(2, 0, 1), atol=1e-5)
    with pytest.raises(ValueError, match='input_size'):
        candidate_transforms({'crop_pct': 0.875}, [(96, 96)])


def test_runner_cascade_routes_like_the_model(exported):
    """A cascade set on the model travels with the export; the runner's routes and logits match the model's."""
    model, directory, config, x = exported
    with torch.no_grad():
        conf = torch.stack([model(x, resolution_index=j).softmax(-1).amax(-1) for j in range(3)])
    points = conf[1:].flatten().sort().values  # a threshold far from every image's confidence at levels 2 and 1
    k = points.diff().argmax()
    threshold = ((points[k] + points[k + 1]) / 2).item()
    model.set_cascade(threshold)
    try:
        with torch.no_grad():
            out = model.forward_routed(x)
        cascaded = export_onnx(model, directory / 'cascade', (3, SIZE, SIZE))
    finally:
        model.set_cascade(None)
    saved = json.loads((directory / 'cascade' / ONNX_CONFIG_NAME).read_text())['cascade']
    assert saved == dict(levels=[2, 1, 0], threshold=threshold) and cascaded['cascade']['threshold'] == threshold
    runner = OnnxDRNet(directory / 'cascade')
    assert runner.cascade.levels == (2, 1, 0)
    result = runner.forward_routed(x.numpy())
    assert result.resolution_index.tolist() == out.resolution_index.tolist()
    assert len(set(result.resolution_index.tolist())) > 1
    assert np.abs(result.logits - out.logits.numpy()).max() < 1e-4
    runner.set_cascade(None)  # back to the predictor graph
    assert runner.forward_routed(x.numpy()).resolution_index.tolist() == \
        OnnxDRNet(directory).forward_routed(x.numpy()).resolution_index.tolist()
    assert config['cascade'] is None


def _single_images(runner: OnnxDRNet, x: torch.Tensor):
    outs = [runner.forward_routed(x[i:i + 1].numpy()) for i in range(len(x))]
    return (np.concatenate([o.logits for o in outs]), np.concatenate([o.resolution_index for o in outs]),
            np.concatenate([o.scores for o in outs]))


def test_single_image_graph_routes_one_image_in_one_call(exported):
    """The one-graph export answers single images as the model does (predictor routing), every resolution's ``If``
    branch taken; batches of two or more go through the separate graphs."""
    model, directory, config, x = exported
    graph = onnx.load(str(directory / config['single_image'])).graph
    assert [d.dim_value for d in graph.input[0].type.tensor_type.shape.dim] == [1, 3, SIZE, SIZE]
    assert [o.name for o in graph.output] == ['logits', 'resolution_index', 'scores']
    assert sum(node.op_type == 'If' for node in graph.node) == 1  # the other If nests in its else branch
    runner = OnnxDRNet(directory)
    with torch.no_grad():
        out = model.forward_routed(x)
        scores = model.predict_logits(x).numpy()
    logits, index, got_scores = _single_images(runner, x)
    assert index.tolist() == out.resolution_index.tolist() and len(set(index.tolist())) == model.num_resolutions
    assert np.abs(logits - out.logits.numpy()).max() < 1e-4
    np.testing.assert_allclose(got_scores, scores, atol=1e-4)
    separate = OnnxDRNet(directory, single_image=False)
    assert separate.single_image is None
    np.testing.assert_array_equal(_single_images(separate, x)[1], index)
    runner.single_image = None  # a batch never reaches the single-image graph
    np.testing.assert_array_equal(runner.forward_routed(x.numpy()).resolution_index, index)


@pytest.mark.slow  # two more exports per model (4.5 s)
def test_single_image_graph_holds_the_cascade_or_the_full_resolution(exported, tmp_path):
    """A cascade exported with the model is the single-image graph's routing (levels and threshold); another
    threshold set on the runner goes back to the separate graphs. An untrained predictor's graph answers at 1x."""
    model, directory, config, x = exported
    with torch.no_grad():
        conf = torch.stack([model(x, resolution_index=j).softmax(-1).amax(-1) for j in (2, 0)])
    points = conf[0].sort().values  # a threshold far from every image's confidence at the first level
    k = points.diff().argmax()
    threshold = ((points[k] + points[k + 1]) / 2).item()
    model.set_cascade(threshold, levels=(2, 0))
    try:
        with torch.no_grad():
            out = model.forward_routed(x)
        export_onnx(model, tmp_path / 'cascade', (3, SIZE, SIZE))
    finally:
        model.set_cascade(None)
    runner = OnnxDRNet(tmp_path / 'cascade')
    logits, index, scores = _single_images(runner, x)
    assert index.tolist() == out.resolution_index.tolist() and set(index.tolist()) == {0, 2}
    assert np.abs(logits - out.logits.numpy()).max() < 1e-4
    np.testing.assert_array_equal(scores, np.eye(3, dtype=np.float32)[index])
    runner.set_cascade(0., levels=(2, 0))  # every image stops at the first level: the separate graphs answer
    assert (_single_images(runner, x)[1] == 2).all()

    untrained = copy.deepcopy(model)
    untrained.mark_predictor_trained(False)
    export_onnx(untrained, tmp_path / 'untrained', (3, SIZE, SIZE))
    logits, index, scores = _single_images(OnnxDRNet(tmp_path / 'untrained'), x)
    with torch.no_grad():
        full = model(x, resolution_index=0).numpy()
    assert (index == 0).all() and np.abs(logits - full).max() < 1e-4
    np.testing.assert_array_equal(scores, np.eye(3, dtype=np.float32)[index])
