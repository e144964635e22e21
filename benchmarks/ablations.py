""" The paper's ablations at small scale, one command, one table per data set.

* Table 1: resolution-private BNs (RA-BN) against BNs shared by every resolution, same recipe otherwise;
* Table 2: average GMACs and top-1 as alpha (the FLOPs target) and eta (its weight) vary;
* Table 5: each DRNet against random routing with the same resolution shares (3 seeds).

On the built-in synthetic set everything is trained here (train.py's default model and recipe). On
imagenette224 (``--imagenette``) the stage-1 model and the data preparation of ``benchmarks/imagenette.py`` are
reused from ``--reuse-from``; the shared-BN stage 1 and every DRNet are trained here with the benchmark's stage-2
recipe. Every DRNet trains with ``--predictor-grad`` (default all: the predictor's gradient compares every
resolution, which is what makes cost rise with alpha and fall with eta as the paper describes; ``routed`` gives
the cheaper gradient of the chosen resolution alone) and the FLOPs loss chosen here (the paper's cap unless
``--flops-two-sided``).

    python benchmarks/ablations.py --output output/ablations/synthetic
    python benchmarks/ablations.py --imagenette ../shared/data/imagenette224 --reuse-from output/imagenette \
        --output output/ablations/imagenette
"""
import argparse
import json
from pathlib import Path
from typing import Dict, List, Tuple

from common import Runner, load_json, prepare_imagenette
from timm_drnet import PREDICTOR_GRADS

parser = argparse.ArgumentParser(description='DRNet ablations: RA-BN, alpha / eta, random routing')
parser.add_argument('--output', default='output/ablations/synthetic')
parser.add_argument('--imagenette', default='', help='imagenette224 folder: run the ablations there')
parser.add_argument('--reuse-from', default='output/imagenette', help='benchmarks/imagenette.py output folder')
parser.add_argument('--alphas', type=float, nargs='+', default=None,
                    help='FLOPs targets (backbone GMACs); default: 0.008 0.0118 0.015 (synthetic), '
                         'the imagenette run\'s')
parser.add_argument('--etas', type=float, nargs='+', default=None,
                    help='FLOPs weights at the middle alpha (the alphas use the largest); default 0.1 0.5 1.0 '
                         '(synthetic), 0.1 0.3 1.0 (imagenette)')
parser.add_argument('--flops-two-sided', action='store_true',
                    help='train.py\'s two-sided FLOPs loss instead of the paper\'s cap')
parser.add_argument('--predictor-grad', default='all', choices=PREDICTOR_GRADS,
                    help='train.py --predictor-grad for every DRNet (default: all)')
parser.add_argument('--seed', type=int, default=42, help='train.py --seed for every model trained (default: 42)')

SYNTHETIC_KWARGS = ['backbone=test_resnet', 'output_stride=16', 'predictor=mobile', 'predictor_size=32']


def _grid(alphas: List[float], etas: List[float]) -> Tuple[List[Tuple[float, float]], Tuple[float, float]]:
    """(alpha, eta) pairs: every alpha at the largest eta (where the cap binds), then the middle alpha at the other
    etas; and the pair (middle alpha, largest eta) the shared-BN model trains with."""
    mid, top = alphas[len(alphas) // 2], max(etas)
    return [(a, top) for a in alphas] + [(mid, e) for e in sorted(etas) if e != top], (mid, top)


def _drnet(args, run: Runner, out: Path, bn: str, stage1: Path, alpha: float, eta: float, train: List[str],
           val: List[str]) -> Dict:
    """Train one DRNet from ``stage1`` with ``--predictor-grad`` and the chosen FLOPs loss, validate it; its row."""
    name = f'{bn}_a{alpha:g}_e{eta:g}'
    model = out / 'runs' / name / 'drnet' / 'last.pth.tar'
    loss = '--flops-two-sided' if args.flops_two_sided else '--no-flops-two-sided'
    run(f'train_{name}', 'train.py', [*train, '--stage', 'drnet', '--initial-checkpoint', str(stage1),
                                      '--flops-target', str(alpha), '--flops-weight', str(eta), loss,
                                      '--predictor-grad', args.predictor_grad, '--seed', str(args.seed),
                                      '--output', str(out / 'runs'), '--experiment', name], model)
    result = out / 'results' / f'{name}.json'
    run(f'val_{name}', 'validate.py', [*val, '--checkpoint', str(model), '--random', '--results-file', str(result)],
        result)
    return dict(bn=bn, alpha=alpha, eta=eta, **_row(load_json(result)))


def synthetic_runs(args, run: Runner, out: Path) -> Dict[str, Dict]:
    """Stage 1 with private / shared BN, then stage 2 over the alpha / eta grid, each validated."""
    grid, shared = _grid(args.alphas or [0.008, 0.0118, 0.015], args.etas or [0.1, 0.5, 1.0])
    rows = {}
    for bn, kwargs in (('private', []), ('shared', ['--model-kwargs', *SYNTHETIC_KWARGS, 'private_bn=False'])):
        stage1 = out / 'runs' / f'stage1_{bn}' / 'multires' / 'last.pth.tar'
        run(f'train_stage1_{bn}', 'train.py', ['--output', str(out / 'runs'), '--stage', 'multires', '--epochs',
                                                '5', *kwargs, '--seed', str(args.seed), '--experiment',
                                                f'stage1_{bn}'], stage1)
        for alpha, eta in grid if bn == 'private' else [shared]:
            rows[f'{bn}_a{alpha:g}_e{eta:g}'] = _drnet(args, run, out, bn, stage1, alpha, eta, [], [])
    return rows


def imagenette_runs(args, run: Runner, out: Path) -> Dict[str, Dict]:
    """Reuse benchmarks/imagenette.py's data and stage 1; train the shared-BN stage 1 and every DRNet."""
    src = Path(args.reuse_from)
    bench = load_json(src / 'results.json')
    b = bench['args']
    grid, shared = _grid(args.alphas or [d['alpha'] for d in bench['drnet']], args.etas or [0.1, 0.3, 1.0])
    prep = prepare_imagenette(Path(args.imagenette), src, b['train_per_class'], b['monitor_per_class'])
    run.env.update(HF_HUB_OFFLINE='1', HF_HUB_CACHE=prep['cache'])
    data = ['--class-map', prep['class_map']]
    val = ['--data-dir', args.imagenette, '--split', 'val', *data, '-b', '100']
    train = ['--data-dir', prep['subset'], *data, '-b', str(b['batch_size']), '--lr', str(b['lr']),
             '--warmup-epochs', '0']
    stage2 = [*train, '--freeze-backbone', '--epochs', str(b['predictor_epochs']), '--predictor-lr-scale',
              str(b['predictor_lr_scale'])]
    stage1 = src / 'runs' / 'stage1' / 'multires' / 'last.pth.tar'
    rows = {f'private_a{a:g}_e{e:g}': _drnet(args, run, out, 'private', stage1, a, e, stage2, val) for a, e in grid}
    shared1 = out / 'runs' / 'stage1_shared' / 'multires' / 'last.pth.tar'
    # the benchmark's stage-1 recipe (lr / 3 for the three summed losses), BNs shared
    run('train_stage1_shared', 'train.py', [*train, '--model', 'drnet_tf_efficientnet_lite0', '--pretrained',
                                            '--stage', 'multires', '--epochs', str(b['epochs']), '--lr',
                                            f"{b['lr'] / 3:.6g}", '--model-kwargs', 'private_bn=False', '--seed',
                                            str(args.seed),
                                            '--output', str(out / 'runs'), '--experiment', 'stage1_shared'], shared1)
    rows[f'shared_a{shared[0]:g}_e{shared[1]:g}'] = _drnet(args, run, out, 'shared', shared1, *shared, stage2, val)
    return rows


def _row(r: Dict) -> Dict:
    return dict(top1=r['drnet']['top1'], gmacs=r['drnet']['cost'], shares=r['drnet']['shares'],
                random=r['random']['top1_mean'], random_std=r['random']['top1_std'],
                static=[s['top1'] for s in r['static']])


def print_table(rows: Dict[str, Dict], title: str) -> None:
    print(f'\n{title}')
    print(f"{'BN':8s} {'alpha':>7s} {'eta':>5s} {'top-1':>7s} {'GMACs':>8s} {'shares 1x/.75x/.5x':>19s} "
          f"{'random (3 seeds)':>17s} {'gain':>6s}   static 1x/.75x/.5x")
    for r in rows.values():
        shares = '/'.join(f"{100 * s:.0f}" for s in r['shares'])
        static = '/'.join(f"{s:.1f}" for s in r['static'])
        print(f"{r['bn']:8s} {r['alpha']:7g} {r['eta']:5g} {r['top1']:7.2f} {r['gmacs']:8.4f} {shares:>19s} "
              f"{r['random']:10.2f}±{r['random_std']:.2f} {r['top1'] - r['random']:+6.2f}   {static}")


def main() -> None:
    args = parser.parse_args()
    out = Path(args.output).resolve()
    run = Runner(out, reuse=True)
    rows = imagenette_runs(args, run, out) if args.imagenette else synthetic_runs(args, run, out)
    results = out / 'results.json'
    seconds = load_json(results).get('seconds', {}) if results.exists() else {}  # keep reused steps' timings
    results.write_text(json.dumps(dict(rows=rows, seconds={**seconds, **run.seconds}), indent=2))
    data = 'imagenette224, tf_efficientnet_lite0' if args.imagenette else 'built-in synthetic set, train.py\'s model'
    loss = 'two-sided' if args.flops_two_sided else 'capped (the paper\'s)'
    print_table(rows, f'DRNet ablations on {data}; stage 2 with --predictor-grad {args.predictor_grad} and the {loss} '
                      f'FLOPs loss (GMACs include the predictor; random: same shares)')
    print(f'\nwrote {out / "results.json"}')


if __name__ == '__main__':
    main()
