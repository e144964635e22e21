""" Inference paths: torch.compile without recompilation, channels_last, bf16 autocast training and eval."""
import copy

import pytest
import torch
import torch.nn.functional as F
from timm.utils import reparameterize_model
from torch import nn
from torch._dynamo.utils import counters

from timm_drnet import DRNetLoss
from timm_drnet.routing import resize

SIZE = 96


def routed(model, x):
    with torch.no_grad():
        return model.forward_routed(x)


@pytest.mark.slow  # 8 graphs compiled (aot_eager) over 14 batch sizes: 10-16 s
def test_compile_one_graph_per_resolution_without_recompiles(warm_drnet, varied_images, device):
    """After warm-up calls at each resolution with a group of several images and a single image, batches of other
    sizes and routings reuse the graphs: one per region for groups of any size, one per region for single images.

    CPU runs the dynamo + AOT autograd stack with the 'aot_eager' backend, whose guards decide
    recompiles (inductor's C++ codegen takes over a minute here); CUDA runs inductor.
    """
    torch._dynamo.reset()
    model = warm_drnet().to(device)
    eager = copy.deepcopy(model)
    model.compile_for_inference(backend='inductor' if device.type == 'cuda' else 'aot_eager')
    x = varied_images(40, SIZE).to(device)
    counters.clear()
    with torch.no_grad():
        for batch in (3, 1):
            model.forward_routed(x[:batch])
            for j in range(model.num_resolutions):
                model(x[:batch], resolution_index=j)
    graphs, frames = counters['stats']['unique_graphs'], counters['frames']['total']
    assert graphs == 2 * (model.num_resolutions + 1)  # selection + one per resolution, for groups and single images

    g = torch.Generator().manual_seed(0)
    seen = set()
    for batch in [1, 2, 5, 9, 13, 1, 7]:
        bias = torch.randn(model.num_resolutions, generator=g).to(device)
        model.resolution_bias.copy_(bias)
        eager.resolution_bias.copy_(bias)
        images = x[torch.randperm(len(x), generator=g)[:batch].to(device)]
        out, ref = routed(model, images), routed(eager, images)
        assert torch.equal(out.resolution_index, ref.resolution_index) and torch.equal(out.hard, ref.hard)
        torch.testing.assert_close(out.logits, ref.logits, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(out.probs, ref.probs, rtol=1e-4, atol=1e-6)
        seen.update(torch.bincount(out.resolution_index, minlength=3).tolist())  # group sizes met
    assert len(seen) >= 5  # groups of many different sizes went through the compiled graphs
    assert counters['stats']['unique_graphs'] == graphs and counters['frames']['total'] == frames

    # the confidence cascade runs the same per-resolution graphs on the images still going
    for threshold in (0.3, 0.5, 0.7):
        model.set_cascade(threshold)
        eager.set_cascade(threshold)
        out, ref = routed(model, x[:13]), routed(eager, x[:13])
        assert torch.equal(out.resolution_index, ref.resolution_index)
        torch.testing.assert_close(out.logits, ref.logits, rtol=1e-4, atol=1e-5)
    assert counters['stats']['unique_graphs'] == graphs and counters['frames']['total'] == frames
    model.set_cascade(None)

    model.train()  # training runs eagerly: no new graph
    model(x[:4])
    assert counters['frames']['total'] == frames


def compiled_and_eager(warm_drnet, x):
    """A DRNet after ``compile_for_inference`` (aot_eager), its eager copy, and images ``x`` prepared for
    ``forward_prepared``: (model, eager, small images, ``x`` at each candidate size)."""
    torch._dynamo.reset()
    model = warm_drnet()
    eager = copy.deepcopy(model)
    model.compile_for_inference(backend='aot_eager')
    small = resize(x, (model.predictor_size,) * 2)
    return model, eager, small, [resize(x, size) for size in model.candidate_sizes(SIZE, SIZE)]


@pytest.mark.slow  # 8 graphs compiled (aot_eager): 10-16 s
def test_compiled_routing_with_only_differentiating_guards(warm_drnet, varied_images):
    """``torch.compiler.set_stance(skip_guard_eval_unsafe=True)`` after warm-up (an option for compiled serving in
    docs/deployment.md) checks only the guards that tell graphs apart: the private norms' branch must be among them,
    so single images and groups still run at their own resolution and answer as the eager model."""
    x = varied_images(24, SIZE)
    model, eager, small, at_size = compiled_and_eager(warm_drnet, x)
    bias = model.resolution_bias.clone()

    def towards(j: int) -> None:  # the predictor's bias set to send every image to resolution j, on both models
        for m in (model, eager):
            m.resolution_bias.copy_(bias + 100. * F.one_hot(torch.tensor(j), model.num_resolutions))
    with torch.no_grad():
        for j in range(model.num_resolutions):  # warm-up: every region at every resolution, groups and one image
            towards(j)
            for batch in (3, 1):
                model.forward_routed(x[:batch])
                model.forward_prepared(small[:batch], lambda i, chosen: at_size[i][chosen], (3, SIZE, SIZE))
    counters.clear()
    with torch.compiler.set_stance(skip_guard_eval_unsafe=True):
        switching = []  # one image after another, each at another resolution than the one before
        for i in range(2 * model.num_resolutions):
            towards(i % model.num_resolutions)
            switching.append((routed(model, x[i:i + 1]), routed(eager, x[i:i + 1])))
        for m in (model, eager):
            m.resolution_bias.copy_(bias)
        single = [routed(model, x[i:i + 1]) for i in range(len(x))]
        group = routed(model, x[:13])
        with torch.no_grad():
            prepared = model.forward_prepared(small[:13], lambda j, chosen: at_size[j][chosen], (3, SIZE, SIZE))
    assert counters['frames']['total'] == 0  # nothing recompiled: every call ran a warm graph
    for i, (out, ref) in enumerate(switching):
        assert out.resolution_index.item() == ref.resolution_index.item() == i % model.num_resolutions
        torch.testing.assert_close(out.logits, ref.logits, rtol=1e-4, atol=1e-5)
    ref = routed(eager, x)
    index = torch.cat([s.resolution_index for s in single])
    assert len(index.unique()) > 1 and torch.equal(index, ref.resolution_index)
    torch.testing.assert_close(torch.cat([s.logits for s in single]), ref.logits, rtol=1e-4, atol=1e-5)
    for out in (group, prepared):
        assert torch.equal(out.resolution_index, ref.resolution_index[:13])
        torch.testing.assert_close(out.logits, ref.logits[:13], rtol=1e-4, atol=1e-5)


@pytest.mark.slow  # the predictor and the backbone on prepared images compiled (aot_eager): 5-10 s
def test_compiled_forward_prepared_matches_eager(warm_drnet, varied_images):
    """``forward_prepared`` after ``compile_for_inference`` runs compiled regions on the prepared images (groups of
    several images and single images) and answers as the eager model, by the predictor and by a cascade."""
    x = varied_images(12, SIZE)
    model, eager, small, at_size = compiled_and_eager(warm_drnet, x)
    counters.clear()
    with torch.no_grad():
        for threshold in (None, 0.5):
            model.set_cascade(threshold)
            eager.set_cascade(threshold)
            for batch in (12, 1, 5):
                out, ref = (m.forward_prepared(small[:batch], lambda j, chosen: at_size[j][chosen], (3, SIZE, SIZE))
                            for m in (model, eager))
                assert torch.equal(out.resolution_index, ref.resolution_index)
                torch.testing.assert_close(out.logits, ref.logits, rtol=1e-4, atol=1e-5)
    model.set_cascade(None)
    assert counters['stats']['unique_graphs'] >= 2 * 2  # the selection and a resolution, for groups and one image


def test_channels_last_gives_the_same_logits(warm_drnet, varied_images, device):
    model = warm_drnet().to(device)
    x = varied_images(12, SIZE).to(device)
    ref = routed(model, x)
    model = model.to(memory_format=torch.channels_last)
    conv = next(m for m in model.backbone.modules() if isinstance(m, nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    out = routed(model, x.contiguous(memory_format=torch.channels_last))
    assert len(ref.resolution_index.unique()) > 1
    assert torch.equal(out.resolution_index, ref.resolution_index)
    torch.testing.assert_close(out.logits, ref.logits, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize('predictor', ['mobile', 'resnet', 'backbone'])
def test_reparameterize_model_folds_the_predictor_norms(warm_drnet, varied_images, predictor):
    """timm's reparameterize_model folds each predictor's batch norms: the same scores, routes and logits as the
    model it copied (the original keeps its norms)."""
    model = warm_drnet(predictor=predictor)
    folded = reparameterize_model(model)
    norms = lambda m: [n for n in m.modules() if isinstance(n, nn.modules.batchnorm._BatchNorm)]  # noqa: E731
    assert norms(model.predictor) and not norms(folded.predictor)
    x = varied_images(12, SIZE)
    with torch.no_grad():
        torch.testing.assert_close(folded.predict_logits(x), model.predict_logits(x), rtol=1e-4, atol=1e-4)
    want, got = routed(model, x), routed(folded, x)
    assert len(want.resolution_index.unique()) > 1  # the routes vary: a fold that mixed them up would show
    assert torch.equal(got.resolution_index, want.resolution_index)
    torch.testing.assert_close(got.logits, want.logits)


def test_bf16_autocast_train_step_and_eval(warm_drnet, varied_images, device):
    model = warm_drnet().to(device).train()
    x = varied_images(8, SIZE).to(device)
    target = torch.arange(8, device=device) % model.num_classes
    table = model.cost_table((3, SIZE, SIZE))
    loss_fn = DRNetLoss(alpha=min(table.backbone), eta=1.0)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    before = [p.detach().clone() for p in model.parameters()]
    with torch.autocast(device.type, dtype=torch.bfloat16):
        out = model.forward_routed(x)
        loss = loss_fn(out.logits, target, out.hard, table.backbone)
    assert out.logits.dtype == torch.bfloat16 and torch.isfinite(loss.total)
    loss.total.backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(p.grad.abs().sum() for p in model.predictor.parameters()) > 0
    optimizer.step()
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert any(not torch.equal(p, b) for p, b in zip(model.parameters(), before))

    model.eval()
    with torch.no_grad():
        for j in range(model.num_resolutions):
            ref = model(x, resolution_index=j).float()
            with torch.autocast(device.type, dtype=torch.bfloat16):
                low = model(x, resolution_index=j).float()
            assert (low - ref).abs().max() <= 0.05 * max(1., ref.abs().max().item())
        with torch.autocast(device.type, dtype=torch.bfloat16):
            out = model.forward_routed(x)
            per_resolution = [model(x, resolution_index=j) for j in range(model.num_resolutions)]
    expected = torch.stack([per_resolution[j][i] for i, j in enumerate(out.resolution_index.tolist())])
    torch.testing.assert_close(out.logits, expected, rtol=0.02, atol=0.02)


@pytest.mark.slow  # 16 graphs traced: about 12 s
def test_compiled_graphs_fix_every_size_but_the_batch(warm_drnet, varied_images):
    """Each resolution and input size gets its own graph at fixed spatial sizes; only the batch of a group is
    symbolic, and a single image's graph fixes every size. With dynamo's automatic dynamic shapes, a second input
    size would make the sizes symbolic, and inductor then stalls in sympy on size-dependent padding."""
    torch._dynamo.reset()
    graphs = []

    def backend(gm, example_inputs):
        graphs.append(example_inputs)
        return gm

    model = warm_drnet()
    model.compile_for_inference(backend=backend)
    with torch.no_grad():
        for size in (SIZE, SIZE + 32):
            x = varied_images(8, size)
            for batch in (3, 5, 1):
                model.predict_logits(x[:batch])
                for j in range(model.num_resolutions):
                    model(x[:batch], resolution_index=j)
    assert len(graphs) == 2 * 2 * (model.num_resolutions + 1)  # per input size: groups, single images
    symbolic = []
    for inputs in graphs:
        images = [t for t in inputs if isinstance(t, torch.Tensor) and t.ndim == 4 and t.shape[1] == 3]
        assert images and all(isinstance(d, int) for t in images for d in t.shape[1:])
        symbolic.append(sum(isinstance(e, torch.SymInt) for e in inputs))
        batch = [t.shape[0] for t in images if t.shape[-1] in (SIZE, SIZE + 32)]  # the images, not a 3-channel conv
        assert batch == [1] if symbolic[-1] == 0 else symbolic[-1] == 1  # one image, or the group's batch size
    assert symbolic.count(0) == symbolic.count(1) == 2 * (model.num_resolutions + 1)
