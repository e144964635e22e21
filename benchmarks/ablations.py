""" The paper's ablations at small scale, one command, one table per data set.

* Table 1: resolution-private BNs (RA-BN) against BNs shared by every resolution, same recipe otherwise;
* Table 2: average GMACs and top-1 as alpha (the FLOPs target) and eta (its weight) vary;
* Table 5: each DRNet against random routing with the same resolution shares (3 seeds).

On the built-in synthetic set everything is trained here (train.py's default model and recipe). On
imagenette224 (``--imagenette``) the stage-1 model, its DRNets at several alphas and the data preparation of
``benchmarks/imagenette.py`` are reused from ``--reuse-from``, and only the shared-BN model and the eta
variants are trained.

    python benchmarks/ablations.py --output output/ablations/synthetic
    python benchmarks/ablations.py --imagenette ../shared/data/imagenette224 --reuse-from output/imagenette \
        --output output/ablations/imagenette
"""
import argparse
import json
from pathlib import Path
from typing import Dict

from common import Runner, load_json, prepare_imagenette

parser = argparse.ArgumentParser(description='DRNet ablations: RA-BN, alpha / eta, random routing')
parser.add_argument('--output', default='output/ablations/synthetic')
parser.add_argument('--imagenette', default='', help='imagenette224 folder: run the ablations there')
parser.add_argument('--reuse-from', default='output/imagenette', help='benchmarks/imagenette.py output folder')
parser.add_argument('--alphas', type=float, nargs='+', default=None,
                    help='FLOPs targets (backbone GMACs); default: 0.008 0.0118 0.015 (synthetic), '
                         'the imagenette run\'s')
parser.add_argument('--etas', type=float, nargs='+', default=None,
                    help='FLOPs weights at the middle alpha; default 0.1 0.5 1.0 (synthetic), 0.1 0.3 1.0')
parser.add_argument('--no-flops-two-sided', action='store_true', help='the paper\'s capped FLOPs loss')

SYNTHETIC_KWARGS = ['backbone=test_resnet', 'output_stride=16', 'predictor=mobile', 'predictor_size=32']


def synthetic_runs(args, run: Runner, out: Path) -> Dict[str, Dict]:
    """Stage 1 with private / shared BN, then stage 2 over the alpha / eta grid, each validated."""
    alphas, etas = args.alphas or [0.008, 0.0118, 0.015], args.etas or [0.1, 0.5, 1.0]
    common = ['--output', str(out / 'runs')]
    loss = ['--no-flops-two-sided'] if args.no_flops_two_sided else []
    rows = {}
    for bn, kwargs in (('private', []), ('shared', ['--model-kwargs', *SYNTHETIC_KWARGS, 'private_bn=False'])):
        ckpt = out / 'runs' / f'stage1_{bn}' / 'multires' / 'last.pth.tar'
        run(f'train_stage1_{bn}', 'train.py', [*common, '--stage', 'multires', '--epochs', '5', *kwargs,
                                                '--experiment', f'stage1_{bn}'], ckpt)
        grid = [(a, etas[0]) for a in alphas] + [(alphas[len(alphas) // 2], e) for e in etas[1:]]
        for alpha, eta in grid if bn == 'private' else [(alphas[len(alphas) // 2], etas[0])]:
            name = f'{bn}_a{alpha:g}_e{eta:g}'
            model = out / 'runs' / name / 'drnet' / 'last.pth.tar'
            run(f'train_{name}', 'train.py', [*common, '--stage', 'drnet', '--initial-checkpoint', str(ckpt),
                                              '--flops-target', str(alpha), '--flops-weight', str(eta), *loss,
                                              '--experiment', name], model)
            result = out / 'results' / f'{name}.json'
            run(f'val_{name}', 'validate.py', ['--checkpoint', str(model), '--random', '--results-file',
                                               str(result)], result)
            rows[name] = dict(bn=bn, alpha=alpha, eta=eta, **_row(load_json(result)))
    return rows


def imagenette_runs(args, run: Runner, out: Path) -> Dict[str, Dict]:
    """Reuse benchmarks/imagenette.py's stage 1 and alpha runs; train shared BN and the eta variants."""
    src = Path(args.reuse_from)
    bench = load_json(src / 'results.json')
    alphas = args.alphas or [d['alpha'] for d in bench['drnet']]
    etas = args.etas or [0.1, 0.3, 1.0]
    b = bench['args']
    bench_eta = b['flops_weight']
    prep = prepare_imagenette(Path(args.imagenette), src, b['train_per_class'], b['monitor_per_class'])
    run.env.update(HF_HUB_OFFLINE='1', HF_HUB_CACHE=prep['cache'])
    data = ['--class-map', prep['class_map']]
    val = ['--data-dir', args.imagenette, '--split', 'val', *data, '-b', '100']
    train = ['--data-dir', prep['subset'], *data, '-b', str(b['batch_size']), '--lr', str(b['lr']),
             '--warmup-epochs', '0', '--output', str(out / 'runs')]
    stage2 = ['--stage', 'drnet', '--freeze-backbone', '--epochs', str(b['predictor_epochs']),
              '--predictor-lr-scale', str(b['predictor_lr_scale'])]
    rows = {}

    def add(name: str, bn: str, alpha: float, eta: float, model: Path) -> None:
        result = out / 'results' / f'{name}.json'
        run(f'val_{name}', 'validate.py', [*val, '--checkpoint', str(model), '--random', '--results-file',
                                           str(result)], result)
        rows[name] = dict(bn=bn, alpha=alpha, eta=eta, **_row(load_json(result)))

    stage1 = src / 'runs' / 'stage1' / 'multires' / 'last.pth.tar'
    for alpha in alphas:  # the imagenette benchmark's DRNets
        add(f'private_a{alpha:g}_e{bench_eta:g}', 'private', alpha, bench_eta,
            src / 'runs' / f'drnet_a{alpha:g}' / 'drnet' / 'last.pth.tar')
    mid = alphas[len(alphas) // 2]
    for eta in [e for e in etas if e != bench_eta]:
        name = f'private_a{mid:g}_e{eta:g}'
        model = out / 'runs' / name / 'drnet' / 'last.pth.tar'
        run(f'train_{name}', 'train.py', [*train, *stage2, '--initial-checkpoint', str(stage1),
                                          '--flops-target', str(mid), '--flops-weight', str(eta),
                                          '--experiment', name], model)
        add(name, 'private', mid, eta, model)
    shared1 = out / 'runs' / 'stage1_shared' / 'multires' / 'last.pth.tar'
    # the benchmark's stage-1 recipe (lr / 3 for the three summed losses), BNs shared
    run('train_stage1_shared', 'train.py', [*train, '--model', 'drnet_tf_efficientnet_lite0', '--pretrained',
                                            '--stage', 'multires', '--epochs', str(b['epochs']), '--lr',
                                            f"{b['lr'] / 3:.6g}", '--model-kwargs', 'private_bn=False',
                                            '--experiment', 'stage1_shared'], shared1)
    name = f'shared_a{mid:g}_e{bench_eta:g}'
    model = out / 'runs' / name / 'drnet' / 'last.pth.tar'
    run(f'train_{name}', 'train.py', [*train, *stage2, '--initial-checkpoint', str(shared1), '--flops-target',
                                      str(mid), '--flops-weight', str(bench_eta), '--experiment', name], model)
    add(name, 'shared', mid, bench_eta, model)
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
    (out / 'results.json').write_text(json.dumps(dict(rows=rows, seconds=run.seconds), indent=2))
    data = 'imagenette224, tf_efficientnet_lite0' if args.imagenette else 'built-in synthetic set, train.py defaults'
    print_table(rows, f'DRNet ablations on {data} (GMACs include the predictor; random: same shares)')
    print(f'\nwrote {out / "results.json"}')


if __name__ == '__main__':
    main()
