import pytest
""" Killing training with SIGKILL mid-epoch loses at most that epoch, SIGTERM loses nothing (a final checkpoint
of the state at that step), and checkpoints are never half-written. """
import csv
import json
import random
import signal
import subprocess
import sys
import textwrap
import time

import torch

from timm_drnet.checkpoint import load_checkpoint_weights, load_training_checkpoint
from timm_drnet.config import DEFAULT_MODEL, DEFAULT_MODEL_KWARGS, build_drnet

from script_runner import REPO, run_script, script_env

ARGS = ['--stage', 'multires', '--synthetic-samples', '320', '64', '-b', '32', '--epochs', '3', '--workers', '0',
        '--log-interval', '1', '--model-ema', '--model-ema-decay', '0.9']


def _signal_mid_epoch(args, output, marker: str, sig: int) -> str:
    """Start training, send ``sig`` once the log shows ``marker``; returns the log."""
    proc = subprocess.Popen([sys.executable, str(REPO / 'train.py'), *args, '--output', str(output),
                             '--experiment', 'run'], cwd=REPO,
                            env=script_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    lines = []
    try:
        for line in proc.stderr:
            lines.append(line)
            if marker in line:
                proc.send_signal(sig)
                break
        lines.extend(proc.stderr)
        proc.wait(timeout=120)
    finally:
        proc.kill()
    return ''.join(lines), proc.returncode


def _kill_mid_epoch(output, epoch: int, step: int) -> None:
    """Start training and SIGKILL it once the log shows ``step`` of (1-based) ``epoch``."""
    _, returncode = _signal_mid_epoch(ARGS, output, f'Train [multires] epoch {epoch}/3 [{step:>4d}/10', signal.SIGKILL)
    assert returncode == -signal.SIGKILL, 'training ended before it could be killed'


def _rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_matches_an_uninterrupted_run(tmp_path):
    full = run_script('train.py', [*ARGS, '--output', tmp_path / 'full', '--experiment', 'run'])
    assert full.returncode == 0, full.stderr[-3000:]

    _kill_mid_epoch(tmp_path / 'killed', epoch=2, step=5)
    last = tmp_path / 'killed' / 'run' / 'multires' / 'last.pth.tar'
    saved = torch.load(last, map_location='cpu', weights_only=True)  # complete and loadable
    assert saved['epoch'] == 0, 'only the unfinished second epoch may be lost'

    resumed = run_script('train.py', [*ARGS, '--resume', last])  # continues in the checkpoint's folder
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert 'Resumed stage multires after epoch 1 of 3' in resumed.stderr

    a = load_training_checkpoint(tmp_path / 'full' / 'run' / 'multires' / 'last.pth.tar')
    b = load_training_checkpoint(last)
    assert a['epoch'] == 2
    _assert_same_training_state(a, b)
    rows_a = _rows(tmp_path / 'full' / 'run' / 'multires' / 'summary.csv')
    rows_b = _rows(tmp_path / 'killed' / 'run' / 'multires' / 'summary.csv')
    assert [r['epoch'] for r in rows_b] == ['0', '1', '2']
    assert rows_a == rows_b


def _assert_same_training_state(a, b):
    assert a['epoch'] == b['epoch']
    for key in ('state_dict', 'state_dict_ema'):
        for name, value in a[key].items():
            assert torch.equal(value, b[key][name]), f'{key}: {name}'
    for pa, pb in zip(a['optimizer']['state'].values(), b['optimizer']['state'].values()):
        assert torch.equal(pa['momentum_buffer'], pb['momentum_buffer'])
    assert a['scheduler'] == b['scheduler']


# stage 2: the predictor samples Gumbel noise from the same RNG as the augmentation (--workers 0)
ARGS_DRNET = ['--stage', 'drnet', '--synthetic-samples', '160', '32', '-b', '32', '--epochs', '2', '--workers', '0',
              '--log-interval', '1', '--model-ema', '--model-ema-decay', '0.9']


@pytest.mark.slow
def test_sigterm_mid_epoch_saves_the_step_and_resume_matches_an_uninterrupted_run(tmp_path):
    full = run_script('train.py', [*ARGS_DRNET, '--output', tmp_path / 'full', '--experiment', 'run'])
    assert full.returncode == 0, full.stderr[-3000:]

    log, returncode = _signal_mid_epoch(ARGS_DRNET, tmp_path / 'stopped', 'Train [drnet] epoch 2/2 [   2/5',
                                        signal.SIGTERM)
    assert returncode == 128 + signal.SIGTERM, log[-3000:]
    assert 'Traceback' not in log
    last = tmp_path / 'stopped' / 'run' / 'drnet' / 'last.pth.tar'
    saved = load_training_checkpoint(last)
    step = saved['interrupted']['step']
    assert saved['epoch'] == 0 and saved['interrupted']['epoch'] == 1 and 2 <= step <= 5
    assert f'stopped by SIGTERM after step {step} of 5 in epoch 2 of stage drnet' in log
    assert f'Continue with: train.py --resume {last}' in log

    resumed = run_script('train.py', [*ARGS_DRNET, '--resume', last])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f'Resumed stage drnet after epoch 1 of 2, step {step} of 5 of epoch 2.' in resumed.stderr
    a = load_training_checkpoint(tmp_path / 'full' / 'run' / 'drnet' / 'last.pth.tar')
    b = load_training_checkpoint(last)
    assert 'interrupted' not in b
    _assert_same_training_state(a, b)
    assert _rows(tmp_path / 'full' / 'run' / 'drnet' / 'summary.csv') == \
        _rows(tmp_path / 'stopped' / 'run' / 'drnet' / 'summary.csv')
    assert json.loads((tmp_path / 'full' / 'run' / 'results.json').read_text()) == \
        json.loads((tmp_path / 'stopped' / 'run' / 'results.json').read_text())


_WRITER = textwrap.dedent('''
    import sys, torch
    from timm_drnet.checkpoint import atomic_torch_save
    path = sys.argv[1]
    i = 0
    while True:
        i += 1
        atomic_torch_save({'i': i, 'payload': torch.full((8_000_000,), float(i))}, path)
''')


@pytest.mark.slow
def test_killed_writer_never_leaves_a_partial_checkpoint(tmp_path):
    path = tmp_path / 'last.pth.tar'
    rng = random.Random(0)
    for _ in range(3):
        path.unlink(missing_ok=True)
        proc = subprocess.Popen([sys.executable, '-c', _WRITER, str(path)], cwd=REPO, env=script_env())
        deadline = time.time() + 120
        while not path.exists() and time.time() < deadline:  # past the imports (slow on a loaded machine)
            time.sleep(0.05)
        time.sleep(rng.uniform(0.2, 1.5))  # into the stream of 32 MB writes
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        state = torch.load(path, map_location='cpu', weights_only=True)
        assert torch.equal(state['payload'], torch.full((8_000_000,), float(state['i']))), 'partial checkpoint'


@pytest.mark.slow
def test_failed_checkpoint_write_stops_training_and_keeps_the_previous_one(tmp_path):
    """The epoch-2 save fails (its rename target is made a folder mid-run): clear error, epoch-1 file intact."""
    stage_dir = tmp_path / 'run' / 'multires'
    proc = subprocess.Popen([sys.executable, str(REPO / 'train.py'), *ARGS, '--output', str(tmp_path),
                             '--experiment', 'run'], cwd=REPO, env=script_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    lines = []
    for line in proc.stderr:
        lines.append(line)
        if 'Train [multires] epoch 2/3 [   2/10' in line:
            (stage_dir / 'tmp.pth.tar').mkdir()  # CheckpointSaver writes tmp.pth.tar, then renames it to last
    proc.wait(timeout=120)
    stderr = ''.join(lines)
    assert proc.returncode == 1, stderr[-3000:]
    assert 'Traceback' not in stderr and 'could not write the epoch 2 checkpoint' in stderr
    assert 'the previous checkpoint' in stderr and 'is intact' in stderr
    ckpt = load_training_checkpoint(stage_dir / 'last.pth.tar')  # the previous one, complete and usable
    assert ckpt['epoch'] == 0
    model = build_drnet(DEFAULT_MODEL, dict(DEFAULT_MODEL_KWARGS, num_classes=8))
    load_checkpoint_weights(model, ckpt, stage_dir / 'last.pth.tar')
    assert not list(stage_dir.glob('.*.tmp')), 'no temporary file left behind'


@pytest.mark.slow
def test_resume_with_other_settings_names_them(tmp_path):
    """A resumed run continues with the checkpoint's settings; one given with another value stops it, naming it."""
    args = ['--stage', 'drnet', '--synthetic-samples', '64', '32', '-b', '32', '--workers', '0', '--flops-target',
            '0.012', '--gumbel-tau', '2']
    first = run_script('train.py', [*args, '--epochs', '1', '--output', tmp_path, '--experiment', 'run'])
    assert first.returncode == 0, first.stderr[-3000:]
    last = tmp_path / 'run' / 'drnet' / 'last.pth.tar'
    changed = run_script('train.py', ['--resume', last, '--epochs', '2', '--flops-target', '0.015', '--gumbel-tau', '1',
                                      '--lr', '0.1'])
    assert changed.returncode == 2 and 'Traceback' not in changed.stderr
    [error] = [line for line in changed.stderr.splitlines() if line.startswith('ERROR')]
    assert '--flops-target: 0.012 in the checkpoint, 0.015 now' in error
    assert '--gumbel-tau: 2.0 in the checkpoint, 1.0 now' in error and '--lr:' not in error
    assert '--resume-override' in error
    kept = run_script('train.py', ['--resume', last, '--epochs', '2'])  # nothing given: the checkpoint's settings
    assert kept.returncode == 0, kept.stderr[-3000:]
    saved = load_training_checkpoint(last)
    assert saved['epoch'] == 1 and saved['args']['flops_target'] == 0.012 and saved['args']['gumbel_tau'] == 2.0
    assert 'alpha 0.012 GMACs' in kept.stderr
    override = run_script('train.py', ['--resume', last, '--epochs', '3', '--flops-target', '0.015',
                                       '--resume-override'])
    assert override.returncode == 0, override.stderr[-3000:]
    assert 'alpha 0.015 GMACs' in override.stderr
