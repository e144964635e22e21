""" Latency-aware costs: measured per-resolution tables, installed in place of MACs (structure, not speed)."""
import json

import pytest
import torch
import timm

import timm_drnet
from timm_drnet import CostTable, FlopsLoss, measure_cost_table


def test_measured_table_structure_and_order(device):
    model = timm.create_model('drnet', backbone='resnet18', predictor='mobile', resolutions=(1.0, 0.5),
                              num_classes=5).to(device).train()
    table = measure_cost_table(model, (3, 160, 160), repeats=5, warmup=2)
    assert model.training  # mode restored
    assert table.unit == 'ms' and table.input_size == (3, 160, 160) and len(table.backbone) == 2
    assert all(c > 0 for c in table.backbone) and table.predictor > 0
    # 4x the MACs at full resolution: far outside timing noise
    assert table.backbone[0] > table.backbone[1]
    assert CostTable.from_dict(json.loads(json.dumps(table.to_dict()))) == table  # checkpoint config round trip


def test_installed_table_drives_costs_and_loss(warm_drnet, varied_images, device):
    model = warm_drnet().to(device)
    table = measure_cost_table(model, (3, 96, 96), batch_size=2, repeats=2, warmup=1)
    model.set_cost_table(table)
    assert model.cost_unit == 'ms' and model.cost_table((3, 96, 96)) is table
    x = varied_images(8).to(device)
    with torch.no_grad():
        out = model.forward_routed(x)
    expected = torch.tensor(table.backbone)[out.resolution_index.cpu()] + table.predictor
    torch.testing.assert_close(out.cost.cpu(), expected)
    loss = FlopsLoss(alpha=min(table.backbone), eta=1.0)(out.hard, table.backbone)
    span = max(table.backbone) - min(table.backbone)
    assert loss.item() == pytest.approx((expected.mean().item() - table.predictor - min(table.backbone)) / span,
                                        rel=1e-5)
    with pytest.raises(KeyError, match='No ms cost table'):
        model.cost_table((3, 128, 128))  # MACs no longer stand in for a size that was not measured


def test_bad_arguments(warm_drnet):
    model = warm_drnet()
    with pytest.raises(ValueError, match='batch_size'):
        measure_cost_table(model, (3, 96, 96), batch_size=0)
    with pytest.raises(ValueError, match=r'\(C, H, W\)'):
        measure_cost_table(model, (96, 96))
    with pytest.raises(ValueError, match='too small'):
        measure_cost_table(model, (3, 20, 20))


def test_cost_tables_travel_with_config_json_and_reset_to_macs(tmp_path):
    """A measured table is not in the state dict: config.json's model_args carry it to a local-dir / hub load."""
    model = timm.create_model('drnet', backbone='test_resnet', predictor='mobile', num_classes=3)
    macs = model.cost_table((3, 96, 96))
    table = CostTable((3, 96, 96), (3.0, 2.0, 1.0), 0.5, 'ms')
    model.set_cost_table(table)
    timm_drnet.save_for_hf(model, tmp_path)
    assert json.loads((tmp_path / 'config.json').read_text())['model_args']['cost_tables'] == [
        json.loads(json.dumps(table.to_dict()))]
    loaded = timm.create_model(f'local-dir:{tmp_path}', pretrained=True)
    assert loaded.cost_unit == 'ms' and loaded.cost_table((3, 96, 96)) == table
    loaded.reset_costs()
    assert loaded.cost_unit == 'gmacs' and loaded.cost_table((3, 96, 96)) == macs
    assert 'cost_tables' not in loaded.drnet_args()
