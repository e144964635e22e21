""" The timm contract beyond timm's own tests: unpooled features and intermediates for a mixed batch, features_only
on other families, pretrained tags, the untrained predictor, gradient checkpointing, groups of one image,
compiled checkpoints, settings of a run. Each against an independent computation. """
import copy
import warnings

import pytest
import torch
import torch.nn.functional as F
import timm

import timm_drnet
from timm_drnet import DRNET_BACKBONES, select_resolution_bn
from timm_drnet.checkpoint import load_checkpoint_weights
from timm_drnet.config import DEFAULT_MODEL, DEFAULT_MODEL_KWARGS, build_drnet, drnet_config, run_data_config
from timm_drnet.train import StageSettings, resume_settings

SIZE = 96
SIZES = [96, 72, 48]


def _warm(backbone: str = 'resnet18', **kwargs) -> timm_drnet.DRNet:
    """A DRNet whose three BN branches hold different statistics and affine weights, predictor marked trained."""
    torch.manual_seed(0)
    model = timm.create_model('drnet', backbone=backbone, predictor='mobile', num_classes=5, **kwargs).train()
    with torch.no_grad():
        for j in range(3):
            model(torch.randn(8, 3, SIZE, SIZE) * (j + 1) + j, resolution_index=j)
        for name, p in model.named_parameters():
            if '.branches.' in name:
                p.add_(0.1 * int(name.split('.branches.')[1].split('.')[0]) * torch.randn_like(p))
    model.mark_predictor_trained()
    return model.eval()


def _force(model, routes):
    logits = F.one_hot(torch.tensor(routes), model.num_resolutions).float() * 20.
    model._predictor_scores = lambda x, bias: logits


def _plain(model, j):
    return select_resolution_bn(copy.deepcopy(model.backbone), j).eval()


def _resize(x, size):
    return x if x.shape[-1] == size else F.interpolate(x, size=(size, size), mode='bilinear', antialias=True)


@pytest.mark.parametrize('backbone', ['resnet18', 'efficientnet_b0', 'mobilenetv3_small_100', 'regnetx_002',
                                      'convnext_atto'])
def test_features_only_gives_each_images_maps_on_the_full_grid(backbone):
    """create_drnet(..., features_only=True): each image's maps at its routed resolution, resampled onto the grid
    the full resolution's maps have; those of images at 1x are the plain backbone's exactly."""
    model = _warm(backbone)
    features = timm_drnet.create_drnet(backbone, predictor='mobile', num_classes=5, features_only=True)
    result = features.model.load_state_dict(model.state_dict(), strict=False)  # FeatureGetterNet over the same DRNet
    assert not result.missing_keys  # only the pruned head and last stages are left over
    features.model.mark_predictor_trained()
    features.eval()
    routes = [2, 0, 1, 0]
    _force(features.model, routes)
    x = torch.randn(4, 3, SIZE, SIZE)
    with torch.no_grad():
        maps = features(x)
        plain = [_plain(model, j).forward_intermediates(_resize(x, SIZES[j]), intermediates_only=True)
                 for j in range(3)]
    assert len(maps) == len(features.feature_info.channels()) >= 3
    for level, got in enumerate(maps):
        grid = plain[0][level].shape[-2:]
        assert got.shape[1] == features.feature_info.channels()[level]
        for i, j in enumerate(routes):
            own = plain[j][level][i:i + 1]
            want = F.interpolate(own, size=grid, mode='bilinear') if j else own
            torch.testing.assert_close(got[i:i + 1], want, rtol=1e-4, atol=1e-5)


def test_forward_without_head_returns_maps_on_the_full_grid():
    """reset_classifier(0, '') and create_model(num_classes=0, global_pool=''): forward gives the unpooled map at
    the cfg's pool_size; with the classifier, forward's logits stay the backbone's at each image's resolution."""
    model = _warm()
    x = torch.randn(3, 3, 224, 224)
    _force(model, [1, 2, 0])
    with torch.no_grad():
        logits = model(x)
        for i, j in enumerate([1, 2, 0]):
            ref = _plain(model, j)(_resize(x[i:i + 1], [224, 168, 112][j]))
            torch.testing.assert_close(logits[i:i + 1], ref, rtol=1e-4, atol=1e-5)
        model.reset_classifier(0, '')
        maps = model(x)
    assert maps.shape == (3, 512, 7, 7)
    headless = timm.create_model('drnet_resnet18', num_classes=0, global_pool='').eval()
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', UserWarning)  # its predictor is untrained
        with torch.no_grad():
            assert headless(x).shape == (3, 512, *headless.pretrained_cfg['pool_size'])


def test_pretrained_tags_say_what_the_weights_are():
    tags = timm.list_pretrained('drnet_*')
    assert len(tags) == len(DRNET_BACKBONES)
    for name, args in DRNET_BACKBONES.items():
        backbone_tag = args['backbone'].split('.')[1]
        assert f'{name}.backbone_{backbone_tag}' in tags
        cfg = timm.models.get_pretrained_cfg(f'{name}.backbone_{backbone_tag}')
        assert cfg.pool_size == (7, 7) and cfg.hf_hub_id == f'timm/{args["backbone"]}'
        assert 'predictor untrained' in cfg.description


def test_an_untrained_predictor_routes_every_image_at_full_resolution(recwarn):
    model = timm.create_model('drnet', backbone='resnet18', predictor='mobile', num_classes=5).eval()
    assert not model.predictor_trained
    x = torch.randn(6, 3, SIZE, SIZE)
    with torch.no_grad():
        out = model.forward_routed(x)
        model(x)
        ref = model(x, resolution_index=0)
    assert sum('never trained' in str(w.message) for w in recwarn.list) == 1, 'one warning, not one per call'
    assert out.resolution_index.tolist() == [0] * 6
    torch.testing.assert_close(out.logits, ref, rtol=0, atol=0)
    assert out.cost.tolist() == pytest.approx([model.cost_table((3, SIZE, SIZE)).backbone[0]] * 6)  # no predictor
    model.set_cascade(0.0)  # a cascade routes without the predictor: threshold 0 stops every image at 0.5x
    with torch.no_grad():
        assert model.forward_routed(x).resolution_index.tolist() == [2] * 6
    model.set_cascade(None)
    with pytest.raises(ValueError, match='never trained'):
        timm_drnet.set_budget(model, 1.0, x)
    model.train()
    model(x).sum().backward()  # a routed training step trains the predictor
    assert model.predictor_trained
    # checkpoints from before the flag existed routed by their predictor, and still do
    old = {k: v for k, v in _warm().state_dict().items() if k != 'predictor_trained'}
    fresh = timm.create_model('drnet', backbone='resnet18', predictor='mobile', num_classes=5)
    fresh.load_state_dict(old)
    assert fresh.predictor_trained


@pytest.mark.parametrize('stage', ['multires', 'routed'])
def test_gradient_checkpointing_gives_the_same_step(stage):
    """With checkpointing every resolution group is recomputed in backward with its own branch: gradients and
    batch-norm statistics equal those of the step without it (the branches differ, so a wrong branch shows)."""
    base = _warm().train()
    x, y = torch.randn(6, 3, SIZE, SIZE), torch.tensor([0, 1, 2, 3, 4, 0])
    results = []
    for checkpointing in (False, True):
        model = copy.deepcopy(base)
        model.set_grad_checkpointing(checkpointing)
        torch.manual_seed(3)
        if stage == 'multires':
            loss = sum(F.cross_entropy(model(x, resolution_index=j), y) for j in range(3))
        else:
            _force(model, [0, 1, 2, 2, 1, 0])
            out = model.forward_routed(x)
            assert sorted(set(out.resolution_index.tolist())) == [0, 1, 2]
            loss = F.cross_entropy(out.logits, y)
        loss.backward()
        results.append(({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None},
                         {n: b.clone() for n, b in model.named_buffers()}))
    (grads, buffers), (grads_ckpt, buffers_ckpt) = results
    assert grads.keys() == grads_ckpt.keys()
    for name, g in grads.items():
        assert (grads_ckpt[name] - g).abs().max() <= 1e-5 * max(1., g.abs().max().item()), name
    for name, b in buffers.items():
        assert torch.equal(buffers_ckpt[name], b), name


def test_a_training_batch_of_one_image_through_a_32px_predictor():
    """The default model's mobile predictor at 32 px ends on a 1x1 map: one training image still trains."""
    model = build_drnet(DEFAULT_MODEL, dict(DEFAULT_MODEL_KWARGS, num_classes=4)).train()
    head = model.predictor.conv_head.bn
    before = head.running_mean.clone()
    out = model.forward_routed(torch.randn(1, 3, 64, 64))
    out.logits.sum().backward()
    assert torch.equal(head.running_mean, before), 'one value per channel: running statistics untouched'
    assert head.weight.grad is not None and all(p.grad is not None for p in model.predictor.parameters())


def test_checkpoints_of_compiled_or_ddp_models_load(tmp_path):
    model = _warm()
    for prefix in ('_orig_mod.', 'module.', 'module._orig_mod.'):
        state = {prefix + k: v for k, v in model.state_dict().items()}
        fresh = timm.create_model('drnet', backbone='resnet18', predictor='mobile', num_classes=5)
        load_checkpoint_weights(fresh, {'state_dict': state}, tmp_path / 'ckpt.pth')
        for k, v in model.state_dict().items():
            assert torch.equal(fresh.state_dict()[k], v), (prefix, k)


def test_evaluation_uses_the_training_data_config():
    """No checkpoint: the model's training size and crop, not timm's test size (288 px, crop 1.0); a train.py
    checkpoint: the data config it was trained with; a setting given by the caller wins."""
    model = timm.create_model('drnet_resnet18')
    dc = run_data_config({}, model)
    assert dc['input_size'] == (3, 224, 224) and dc['crop_pct'] == 0.95 and dc['interpolation'] == 'bicubic'
    trained = dict(input_size=[3, 224, 224], interpolation='bilinear', crop_pct=0.875, crop_mode='center',
                   mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])
    cfg = drnet_config(model, 'drnet_resnet18', {}, (3, 224, 224), trained)
    dc = run_data_config({}, model, cfg)
    assert dc['crop_pct'] == 0.875 and dc['interpolation'] == 'bilinear' and dc['input_size'] == (3, 224, 224)
    assert run_data_config({'crop_pct': 1.0}, model, cfg)['crop_pct'] == 1.0
    legacy = dict(cfg, data_config=None)  # checkpoints from before the data config was saved: their input size
    assert run_data_config({}, model, dict(legacy, input_size=[3, 160, 160]))['input_size'] == (3, 160, 160)


def test_resumed_settings_are_the_checkpoints():
    saved = dict(lr=0.1, flops_target=0.2, gumbel_tau=3.0, sched='cosine')
    current = dict(lr=0.1, flops_target=0.3, gumbel_tau=1.0, sched='cosine', epochs=5)
    kept = resume_settings(saved, current, given={'epochs'})
    assert kept['flops_target'] == 0.2 and kept['gumbel_tau'] == 3.0 and kept['epochs'] == 5
    with pytest.raises(ValueError) as e:
        resume_settings(saved, current, given={'flops_target', 'gumbel_tau', 'lr'})
    assert 'flops_target: 0.2 in the checkpoint, 0.3 now' in str(e.value) and 'gumbel_tau' in str(e.value)
    assert 'lr: ' not in str(e.value)  # given, but the checkpoint's value
    assert resume_settings(saved, current, given={'flops_target'}, override=True)['flops_target'] == 0.3
    # the number of epochs may grow, and is the checkpoint's when not given
    grown = resume_settings(dict(saved, epochs=3), dict(saved, epochs=10), given={'epochs'})
    assert grown['epochs'] == 10 and resume_settings(dict(saved, epochs=3), dict(saved, epochs=6), set())['epochs'] == 3


def test_sync_batch_norm_is_refused_for_routed_training_of_the_backbone():
    common = dict(epochs=1, optimizer=dict(opt='sgd', lr=0.1), scheduler=dict(sched='cosine'), sync_bn=True)
    StageSettings(stage='multires', **common)
    StageSettings(stage='drnet', freeze_backbone=True, **common)
    with pytest.raises(ValueError, match='ranks route their images differently'):
        StageSettings(stage='drnet', **common)


def test_scripts_offer_every_predictor_and_name_flags_by_their_setting():
    import argparse
    from timm.utils import add_bool_arg
    from timm_drnet import cli
    from timm_drnet.errors import setting_error
    parser = argparse.ArgumentParser()
    cli.add_model_args(parser, batch_size=8)
    add_bool_arg(parser, 'flops-two-sided', default=True)
    assert parser.parse_args(['--predictor', 'backbone']).predictor == 'backbone'
    error = setting_error(ValueError, 'set {num_classes} 10 and {flops_two_sided}, point {root} at {literal}')
    assert str(error) == 'set num_classes 10 and flops_two_sided, point root at literal'
    assert cli.error_message(error, parser) == 'set --num-classes 10 and --flops-two-sided, point --data-dir at literal'


@pytest.mark.slow
def test_swin_maps_of_a_mixed_batch_keep_their_layout():
    """Swin's final maps are (B, H, W, C), its intermediates (B, C, H, W): each is resampled on its own axes."""
    torch.manual_seed(0)
    features = timm_drnet.create_drnet('swin_tiny_patch4_window7_224', predictor='mobile', num_classes=5,
                                       features_only=True).eval()
    features.model.mark_predictor_trained()
    _force(features.model, [2, 0])
    x = torch.randn(2, 3, 128, 128)
    with torch.no_grad():
        maps = features(x)
    assert all(m.shape[0] == 2 and m.shape[1] == c for m, c in zip(maps, features.feature_info.channels()))
    model = timm_drnet.create_drnet('swin_tiny_patch4_window7_224', predictor='mobile', num_classes=0,
                                    global_pool='').eval()
    model.mark_predictor_trained()
    _force(model, [2, 0])
    with torch.no_grad():
        out = model(x)
        full = select_resolution_bn(copy.deepcopy(model.backbone), 0).eval()(x[1:])
    assert tuple(out.shape) == (2, *full.shape[1:]) and out.shape[-1] == 768  # (B, H, W, C)
    torch.testing.assert_close(out[1:], full, rtol=1e-4, atol=1e-5)
