""" MACs accounting and the FLOPs regulariser, checked against independent computations."""
import pytest
import torch
import timm

from timm_drnet import CostTable, DRNetLoss, FlopsLoss, count_macs


def test_resnet50_gmacs_match_paper_figures():
    model = timm.create_model('drnet_resnet50')
    table = model.cost_table((3, 224, 224))
    assert [round(c, 2) for c in table.backbone] == [4.09, 2.50, 1.08]
    assert round(table.predictor, 2) == 0.29  # the paper's "about 300 MFLOPs" predictor
    assert model.cost_table((3, 224, 224)) is table  # cached per input size
    assert model.cost_table((3, 256, 256)).backbone[0] > table.backbone[0]


def _hand_macs(model: torch.nn.Module, input_size) -> int:
    """Multiply-accumulates of every convolution and linear layer from their shapes (outputs x kernel x in / groups)."""
    total = []

    def conv(m, args, out):
        total.append(out[0].numel() * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1])

    def linear(m, args, out):
        total.append(out[0].numel() * m.in_features)
    hooks = [m.register_forward_hook(conv if isinstance(m, torch.nn.Conv2d) else linear)
             for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    with torch.no_grad():
        model(torch.zeros(1, *input_size))
    for h in hooks:
        h.remove()
    return sum(total)


def test_count_macs_matches_a_count_by_layer_shapes():
    model = timm.create_model('resnet18').eval()
    assert count_macs(model, (3, 112, 112)) == _hand_macs(model, (3, 112, 112))
    tiny = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.Conv2d(8, 8, 3, stride=2, groups=4),
                               torch.nn.Flatten(), torch.nn.Linear(8 * 7 * 7, 10)).eval()
    assert count_macs(tiny, (3, 16, 16)) == 8 * 3 * 9 * 16 * 16 + 8 * 2 * 9 * 7 * 7 + 8 * 7 * 7 * 10
    model.train()
    mean = model.bn1.running_mean.clone()
    count_macs(model, (3, 112, 112))
    assert model.training and torch.equal(model.bn1.running_mean, mean)  # no stat update, mode restored


def test_cost_table_per_image_includes_predictor():
    table = CostTable((3, 224, 224), (4.0, 2.5, 1.0), 0.3)
    torch.testing.assert_close(table.per_image(torch.tensor([0, 2, 1])), torch.tensor([4.3, 1.3, 2.8]))
    assert CostTable.from_dict(table.to_dict()) == table


def test_flops_loss_against_hand_computation():
    costs = [4.0, 2.5, 1.0]
    hard = torch.tensor([[1., 0., 0.], [0., 0., 1.], [0., 1., 0.], [1., 0., 0.]])
    # E[F] = (4 + 1 + 2.5 + 4) / 4 = 2.875; (2.875 - 2.0) / (4 - 1) = 0.291666...
    loss = FlopsLoss(alpha=2.0, eta=0.5)(hard, costs)
    assert loss.item() == pytest.approx(0.5 * 0.875 / 3.0)
    assert FlopsLoss(alpha=3.0, eta=0.5)(hard, costs).item() == 0.  # under budget: no penalty


def test_flops_loss_gradient_reaches_soft_selection():
    logits = torch.zeros(2, 3, requires_grad=True)
    soft = logits.softmax(-1)
    hard = torch.nn.functional.one_hot(torch.tensor([0, 0]), 3).float() + soft - soft.detach()
    FlopsLoss(alpha=1.0, eta=1.0)(hard, [4.0, 2.5, 1.0]).backward()
    # d/dlogits pushes probability away from the expensive candidate
    assert logits.grad[:, 0].gt(0).all() and logits.grad[:, 2].lt(0).all()


def test_drnet_loss_sums_parts():
    logits = torch.randn(4, 5)
    target = torch.tensor([0, 1, 2, 3])
    hard = torch.eye(3)[[0, 0, 1, 2]]
    parts = DRNetLoss(alpha=1.5, eta=2.0)(logits, target, hard, [4.0, 2.5, 1.0])
    ce = torch.nn.functional.cross_entropy(logits, target)
    assert parts.ce.item() == pytest.approx(ce.item())
    assert parts.flops.item() == pytest.approx(2.0 * (2.875 - 1.5) / 3.0)
    assert parts.total.item() == pytest.approx(ce.item() + parts.flops.item())


def test_flops_loss_errors():
    with pytest.raises(ValueError, match='does not match'):
        FlopsLoss(1.0)(torch.ones(2, 2), [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match='eta'):
        FlopsLoss(1.0, eta=-1)
