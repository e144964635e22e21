""" Two processes on CPU (gloo): the library's train_stage under torchrun, and train.py as users launch it. """
import subprocess
import sys
import textwrap

import pytest
import torch

from script_runner import REPO, script_env

pytestmark = pytest.mark.slow

# Under torchrun: stage 1 twice from the same seed, once without distributing BN statistics after the epoch and
# once averaging them (--dist-bn reduce), then stage 2 from the second; each rank saves its state after each run.
_PROBE = textwrap.dedent('''
    import sys
    from pathlib import Path
    import torch
    import torch.distributed as dist
    from timm.utils import random_seed
    import timm_drnet
    from timm_drnet import train as T
    from timm_drnet.config import DEFAULT_MODEL, DEFAULT_MODEL_KWARGS, build_drnet, drnet_config
    from timm_drnet.data import create_dataset, create_loader

    out = Path(sys.argv[1])
    dist.init_process_group('gloo')
    ctx = T.Distributed(dist.get_rank(), dist.get_world_size(), True)
    cpu = torch.device('cpu')
    data = dict(input_size=(3, 64, 64), mean=(0.5,) * 3, std=(0.5,) * 3, batch_size=16, num_workers=0,
                distributed=True, device=cpu, use_prefetcher=False)
    train = create_loader(create_dataset('', None, 'train', is_training=True, num_samples=128), is_training=True,
                          scale=(0.7, 1.0), **data)
    val = create_loader(create_dataset('', None, 'validation', num_samples=64), is_training=False, **data)

    def run(model, stage, dist_bn, tag):
        random_seed(42, ctx.rank)
        settings = T.StageSettings(stage=stage, epochs=1, optimizer=dict(opt='sgd', lr=0.05, weight_decay=1e-4,
                                   momentum=0.9), scheduler=dict(sched='cosine', warmup_epochs=0, step_on_epochs=False),
                                   dist_bn=dist_bn, broadcast_buffers=False, log_interval=100)
        kwargs = dict(DEFAULT_MODEL_KWARGS)
        record = T.CheckpointRecord(arch=DEFAULT_MODEL, model_args=kwargs, data_config=dict(input_size=(3, 64, 64)),
                                    drnet_config=drnet_config(model, DEFAULT_MODEL, kwargs, (3, 64, 64)))
        stage_dir = out / tag / stage
        stage_dir.mkdir(parents=True, exist_ok=True)
        T.train_stage(model, settings, train, val, cpu, stage_dir, record, timm_drnet.create_precision(False,
                      'float16', cpu), T.StopSignal(), ctx, to_device=True)
        torch.save(model.state_dict(), out / f'{tag}_{stage}_rank{ctx.rank}.pt')

    def fresh():
        torch.manual_seed(0)
        return build_drnet(DEFAULT_MODEL, dict(DEFAULT_MODEL_KWARGS, num_classes=8))

    run(fresh(), 'multires', '', 'plain')
    model = fresh()
    run(model, 'multires', 'reduce', 'reduced')
    run(model, 'drnet', 'reduce', 'reduced')
    dist.destroy_process_group()
''')


def _load(path):
    return torch.load(path, weights_only=True)


def test_train_stage_on_two_ranks_distributes_private_bn(tmp_path):
    probe = tmp_path / 'probe.py'
    probe.write_text(_PROBE)
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2', str(probe),
           str(tmp_path)]
    proc = subprocess.run(cmd, cwd=REPO, env=script_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]

    for stage in ('multires', 'drnet'):
        rank0, rank1 = _load(tmp_path / f'reduced_{stage}_rank0.pt'), _load(tmp_path / f'reduced_{stage}_rank1.pt')
        for name, value in rank0.items():
            assert torch.equal(value, rank1[name]), f'{stage}: ranks differ in {name}'

    # without distribution every private branch of every backbone BN learned statistics on its rank's own images
    # (no buffer broadcast); with --dist-bn reduce the same run ends with the two ranks' statistics averaged
    plain0, plain1 = _load(tmp_path / 'plain_multires_rank0.pt'), _load(tmp_path / 'plain_multires_rank1.pt')
    reduced = _load(tmp_path / 'reduced_multires_rank0.pt')
    branch_means = [k for k in plain0 if k.startswith('backbone.') and '.branches.' in k and k.endswith('running_mean')]
    assert {k.split('.branches.')[1].split('.')[0] for k in branch_means} == {'0', '1', '2'}
    for name in branch_means:
        assert plain0[name].abs().sum() > 0, f'{name} never moved from its initial value'
        assert not torch.equal(plain0[name], plain1[name]), f'{name}: ranks saw the same images'
    for name in plain0:
        if name.startswith('backbone.') and ('running_mean' in name or 'running_var' in name):
            assert torch.allclose(reduced[name], (plain0[name] + plain1[name]) / 2, atol=1e-6), name
        elif plain0[name].is_floating_point():
            assert torch.equal(reduced[name], plain0[name]), f'{name}: only BN statistics may differ'


def test_torchrun_train_py_two_ranks(tmp_path):
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2', str(REPO / 'train.py'),
           '--synthetic-samples', '128', '64', '-b', '16', '--multires-epochs', '1', '--epochs', '1',
           '--workers', '0', '--no-ddp-bb', '--output', str(tmp_path), '--experiment', 'ddp']
    proc = subprocess.run(cmd, cwd=REPO, env=script_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert 'DRNet (predictor included)' in proc.stdout  # rank 0 printed the final table
    assert proc.stdout.count('DRNet (predictor included)') == 1
    for stage in ('multires', 'drnet'):
        assert (tmp_path / 'ddp' / stage / 'model.safetensors').is_file()


def test_sync_bn_on_cpus_is_a_clear_error(tmp_path):
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2', str(REPO / 'train.py'),
           '--synthetic-samples', '64', '32', '-b', '16', '--stage', 'multires', '--epochs', '1', '--workers', '0',
           '--sync-bn', '--output', str(tmp_path), '--experiment', 'sync']
    proc = subprocess.run(cmd, cwd=REPO, env=script_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if line.startswith('ERROR') and 'sync-bn' in line]
    assert len(errors) == 2 and all('--sync-bn needs CUDA devices' in e for e in errors), proc.stderr[-3000:]
