""" torchrun --nproc_per_node=2 train.py on CPU (gloo): both stages, identical weights, distributed private BN. """
import subprocess
import sys
import textwrap

import torch

from script_runner import REPO, script_env

# train.py as torchrun runs it, with each rank's weights saved after each stage and the private BN
# statistics saved just before train.py distributes them, so the test can check what distribute_bn did
_RANK_PROBE = textwrap.dedent('''
    import sys
    import torch
    sys.path.insert(0, {repo!r})
    import train

    out = {out!r}
    train_stage, distribute_bn = train.train_stage, train.distribute_bn
    calls = []

    def probe_distribute_bn(model, world_size, reduce=False):
        rank = torch.distributed.get_rank()
        before = {{k: v.clone() for k, v in model.state_dict().items() if 'running_' in k}}
        torch.save(before, f'{{out}}/bn_before{{len(calls)}}_rank{{rank}}.pt')
        calls.append(reduce)
        distribute_bn(model, world_size, reduce)

    def probe_train_stage(stage, model, *args, **kwargs):
        result = train_stage(stage, model, *args, **kwargs)
        torch.save(model.state_dict(), f'{{out}}/{{stage}}_rank{{torch.distributed.get_rank()}}.pt')
        return result

    train.distribute_bn = probe_distribute_bn
    train.train_stage = probe_train_stage
    sys.argv = ['train.py', *sys.argv[1:]]
    train.main()
''')


def test_torchrun_two_ranks_on_cpu(tmp_path):
    probe = tmp_path / 'rank_probe.py'
    probe.write_text(_RANK_PROBE.format(repo=str(REPO), out=str(tmp_path)))
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node=2', str(probe),
           '--synthetic-samples', '128', '64', '-b', '16', '--multires-epochs', '1', '--epochs', '1',
           '--workers', '0', '--no-ddp-bb', '--output', str(tmp_path), '--experiment', 'ddp']
    proc = subprocess.run(cmd, cwd=REPO, env=script_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert 'DRNet (predictor included)' in proc.stdout  # rank 0 printed the final table

    for stage in ('multires', 'drnet'):
        rank0 = torch.load(tmp_path / f'{stage}_rank0.pt', weights_only=True)
        rank1 = torch.load(tmp_path / f'{stage}_rank1.pt', weights_only=True)
        for name, value in rank0.items():
            assert torch.equal(value, rank1[name]), f'{stage}: ranks differ in {name}'

    # stage 1 (the first epoch's distribution): every private branch of every backbone BN learned statistics
    # on its rank's own images (no buffer broadcast with --no-ddp-bb), then the two ranks' were averaged
    before0 = torch.load(tmp_path / 'bn_before0_rank0.pt', weights_only=True)
    before1 = torch.load(tmp_path / 'bn_before0_rank1.pt', weights_only=True)
    after = torch.load(tmp_path / 'multires_rank0.pt', weights_only=True)
    branch_means = [k for k in before0
                    if k.startswith('backbone.') and '.branches.' in k and k.endswith('running_mean')]
    assert {k.split('.branches.')[1].split('.')[0] for k in branch_means} == {'0', '1', '2'}
    for name in branch_means:
        assert before0[name].abs().sum() > 0, f'{name} never moved from its initial value'
        assert not torch.equal(before0[name], before1[name]), f'{name}: ranks saw the same images'
    for name in before0:
        if name.startswith('backbone.'):
            assert torch.allclose(after[name], (before0[name] + before1[name]) / 2, atol=1e-6), name
