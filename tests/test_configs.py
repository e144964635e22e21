""" The paper's recipes in configs/: each loads as train.py settings and runs one step on a tiny model. """
import csv

import pytest
import yaml

from script_runner import REPO, run_script

CONFIGS = sorted((REPO / 'configs').glob('*.yaml'))
# the paper's hyper-parameters, shared by every recipe (section 4.1)
PAPER = dict(opt='momentum', momentum=0.9, weight_decay=1e-4, lr=0.1, batch_size=32, warmup_epochs=3, sched='step',
             decay_rate=0.1)
STAGES = {'multires': dict(epochs=70, decay_epochs=20),
          'drnet': dict(epochs=100, decay_epochs=30, flops_two_sided=False, predictor_grad='all')}
# swap the ImageNet model for the tiny default one, keep the recipe
TINY = ['--model', 'drnet', '--model-kwargs', 'backbone=test_resnet', 'output_stride=16', 'predictor=mobile',
        'predictor_size=32', '--no-pretrained', '-b', '16', '--synthetic-samples', '16', '16', '--epochs', '1',
        '--workers', '0']


def test_there_are_paper_configs_for_both_models_and_stages():
    assert {p.name for p in CONFIGS} == {f'drnet_{m}_{s}.yaml' for m in ('resnet50', 'mobilenetv2_100')
                                         for s in ('multires', 'drnet')}


@pytest.mark.slow
@pytest.mark.parametrize('path', CONFIGS, ids=[p.stem for p in CONFIGS])
def test_config_holds_the_paper_recipe_and_runs_one_step(path, tmp_path):
    cfg = yaml.safe_load(path.read_text())
    assert {k: cfg[k] for k in PAPER} == PAPER  # 8 processes x 32 = the paper's batch of 256
    assert {k: cfg[k] for k in STAGES[cfg['stage']]} == STAGES[cfg['stage']]
    assert cfg['resolutions'] == ([1.0, 0.875, 0.75] if 'mobilenetv2' in path.name else [1.0, 0.75, 0.5])

    proc = run_script('train.py', ['-c', path, *TINY, '--output', tmp_path, '--experiment', 'cfg'])
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(tmp_path / 'cfg' / cfg['stage'] / 'summary.csv') as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 1  # one epoch of one step
    shares = [k for k in rows[0] if k.startswith('eval_share_') or k.startswith('eval_top1_')]
    assert any(f'{cfg["resolutions"][1]:g}x' in k for k in shares), 'the recipe\'s resolutions were used'
    args = yaml.safe_load((tmp_path / 'cfg' / cfg['stage'] / 'args.yaml').read_text())
    for key in ('lr', 'weight_decay', 'momentum', 'sched', 'decay_epochs', 'warmup_epochs', 'opt'):
        assert args[key] == cfg[key], key
