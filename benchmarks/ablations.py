""" Ablations, one command per data set.

On the built-in synthetic set, the paper's at small scale (everything trained here, train.py's default model):

* Table 1: resolution-private BNs (RA-BN) against BNs shared by every resolution, same recipe otherwise;
* Table 2: average GMACs and top-1 as alpha (the FLOPs target) and eta (its weight) vary;
* Table 5: each DRNet against random routing with the same resolution shares (3 seeds).

Every DRNet trains with ``--predictor-grad`` (default all: the predictor's gradient compares every resolution,
which is what makes cost rise with alpha and fall with eta as the paper describes; ``routed`` gives the cheaper
gradient of the chosen resolution alone) and the FLOPs loss chosen here (the paper's cap unless
``--flops-two-sided``).

On imagenette224 (``--imagenette``), what this project adds, on the data, recipe and models of
``benchmarks/imagenette.py`` (``--reuse-from``; missing models are trained into its runs folder): stage-1
distillation off, in-place, ensemble (RS-Nets) and from the static 224 model, each with its branches and its
cascade against random routing at matched GMACs; and the predictor's objective, the paper's (CE + FLOPs, frozen
backbone) against per-resolution losses at ``--temperatures``, each against random routing at matched GMACs.

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
parser.add_argument('--temperatures', type=float, nargs='+', default=[0.5, 1.0, 2.0],
                    help='imagenette: --stage predictor target temperatures to compare')

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
    """ What issue 15 adds, on the data, recipe and models of ``benchmarks/imagenette.py`` (``--reuse-from``):
    stage-1 distillation off and in each form (the teacher form learns from the static 224 model), and the
    predictor's objective (the paper's, and per-resolution losses at several target temperatures)."""
    from imagenette import Records, branch_points, cascade_sweep, predictor_sweep, _calib_images
    src = Path(args.reuse_from).resolve()
    bench = load_json(src / 'results.json')
    b = bench['args']
    prep = prepare_imagenette(Path(args.imagenette), src, b['train_per_class'], b['predictor_per_class'],
                              b['calib_per_class'], b['monitor_per_class'])
    run.env.update(HF_HUB_OFFLINE='1', HF_HUB_CACHE=prep['cache'])
    data = Path(prep['subset'])
    common = ['--data-dir', str(data), '--class-map', prep['class_map'], '--workers', str(b['workers']), '-b',
              str(b['batch_size']), '--warmup-epochs', '0', '--log-interval', '20']
    runs = src / 'runs'
    stage1 = ['--model', 'drnet_tf_efficientnet_lite0', '--pretrained', '--predictor', b['predictor'], '--stage',
              'multires', '--epochs', str(b['epochs']), '--lr', f"{b['lr'] / 3:.6g}"]
    teacher = runs / 'static_224' / 'multires' / 'last.pth.tar'
    forms = {'none': [], 'inplace': ['--distill', 'inplace'], 'ensemble': ['--distill', 'ensemble'],
             'teacher': ['--distill', 'teacher', '--distill-teacher', str(teacher)]}
    records = Records(src, True, data, prep['class_map'], b['workers'])
    base = bench['static_224']['gmacs']
    budgets = [f * base for f in (0.35, 0.45, 0.5, 0.55, 0.65)]
    rows = {}
    for form, extra in forms.items():
        name = 'stage1' if form == 'none' else f'stage1_{form}'
        ckpt = runs / name / 'multires' / 'last.pth.tar'
        run(f'train_{name}', 'train.py', [*common, *stage1, *extra, '--output', str(runs), '--experiment', name], ckpt)
        rec, calib = records(name, ckpt, 'eval'), records(name, ckpt, 'calibration')
        rows[f'distill_{form}'] = dict(kind='distill', form=form, branches=branch_points(rec),
                                       cascade=cascade_sweep(rec, calib, budgets))
    distilled = runs / f'stage1_{bench["distill"]}' / 'multires' / 'last.pth.tar'
    rec = records(f'stage1_{bench["distill"]}', distilled, 'eval')
    calib = records(f'stage1_{bench["distill"]}', distilled, 'calibration')
    images = _calib_images(data, prep, distilled)
    objectives = {'paper': ('paper_frozen', 'drnet')}
    for t in args.temperatures:
        name = 'predictor' if t == b['target_temperature'] else f'predictor_t{t:g}'
        objectives[f'losses_t{t:g}'] = (name, 'predictor')
        run(f'train_{name}', 'train.py', [
            *common, '--stage', 'predictor', '--initial-checkpoint', str(distilled), '--train-split', 'predictor',
            '--epochs', str(b['predictor_epochs']), '--opt', 'adamw', '--lr', str(b['predictor_lr']),
            '--weight-decay', '0.05', '--warmup-epochs', '1', '--target-temperature', str(t), '--output', str(runs),
            '--experiment', name], runs / name / 'predictor' / 'last.pth.tar')
    for objective, (name, stage) in objectives.items():
        ckpt = runs / name / stage / 'last.pth.tar'
        scores = records(name, ckpt, 'eval', scores=True, static=False)
        own = dict(rec, scores=scores['scores'], predictor_cost=scores['predictor_cost'])
        own_calib = dict(calib, scores=records(name, ckpt, 'calibration', scores=True, static=False)['scores'])
        rows[f'objective_{objective}'] = dict(kind='objective', objective=objective,
                                              sweep=predictor_sweep(ckpt, own, own_calib, images, budgets))
    return rows


def print_imagenette(rows: Dict[str, Dict], base: float) -> None:
    print('\nStage-1 distillation (imagenette val + val_extra, top-1 at 224 / 168 / 112 px; cascade top-1 and '
          'gain over random at matched GMACs at 0.35 / 0.45 / 0.5 / 0.55 / 0.65x of the static 224 GMACs)')
    for r in rows.values():
        if r['kind'] == 'distill':
            branches = ' / '.join(f"{p['top1']:.2f}" for p in r['branches'])
            cascade = ' '.join(f"{p['top1']:.2f}({p['top1'] - p['random_top1']:+.2f})" for p in r['cascade']
                               if p['random_top1'] is not None)
            print(f"  {r['form']:9s} {branches}   cascade {cascade}")
    print('\nPredictor objective (the distilled stage 1\'s frozen backbone; top-1 and gain over random at matched '
          'GMACs at each budget)')
    for r in rows.values():
        if r['kind'] == 'objective':
            sweep = ' '.join(f"{p['gmacs'] / base:.2f}x {p['top1']:.2f}({p['top1'] - p['random_top1']:+.2f})"
                             for p in r['sweep'] if p['random_top1'] is not None)
            print(f"  {r['objective']:10s} {sweep}")


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
    if args.imagenette:
        print_imagenette(rows, load_json(Path(args.reuse_from) / 'results.json')['static_224']['gmacs'])
    else:
        loss = 'two-sided' if args.flops_two_sided else 'capped (the paper\'s)'
        print_table(rows, f'DRNet ablations on the built-in synthetic set, train.py\'s model; stage 2 with '
                          f'--predictor-grad {args.predictor_grad} and the {loss} FLOPs loss (GMACs include the '
                          f'predictor; random: same shares)')
    print(f'\nwrote {out / "results.json"}')


if __name__ == '__main__':
    main()
