""" Do resolution-private layer norms help a small ViT? Stage 1 on the built-in set with shared and private LN.

A ViT has no batch norms, so the paper's private BNs give it nothing to convert. ``private_ln=True`` gives every
layer norm one private copy per resolution (only the affine weights can differ: the statistics are per token).
This trains timm's ``test_vit`` (patch 8 at 64 px, so 8x8 / 6x6 / 4x4 patches at 64 / 48 / 32 px) from scratch,
stage 1 only, with the layer norms shared and private, for each seed, and evaluates every resolution alone on the
validation images. One table: top-1 per resolution, the mean, and the private-minus-shared difference per seed.
From scratch the ViT sits at chance for several epochs and leaves it at a random time, or not within the run; a
seed where either model is still at chance is not compared (it says nothing about the norms).

    python benchmarks/private_norms.py --output output/private_norms
"""
import argparse
import json
import statistics
from pathlib import Path

from common import Runner, load_json
from timm_drnet.data import SYNTHETIC_CLASSES

parser = argparse.ArgumentParser(description='shared against resolution-private layer norms on a small ViT')
parser.add_argument('--output', default='output/private_norms')
parser.add_argument('--seeds', type=int, nargs='+', default=[0, 1])
parser.add_argument('--epochs', type=int, default=20)
parser.add_argument('--samples', type=int, nargs=2, default=(6000, 2000), metavar=('TRAIN', 'VAL'))
parser.add_argument('--reuse', action='store_true')

KWARGS = ['backbone=test_vit', 'patch_size=8', 'img_size=64', 'predictor=mobile', 'predictor_size=32']


def main() -> None:
    args = parser.parse_args()
    out = Path(args.output).resolve()
    run = Runner(out, reuse=args.reuse)
    rows = []
    for seed in args.seeds:
        for private in (False, True):
            name = f'{"private" if private else "shared"}_ln_seed{seed}'
            ckpt = out / 'runs' / name / 'multires' / 'last.pth.tar'
            run(f'train_{name}', 'train.py', [
                '--stage', 'multires', '--epochs', str(args.epochs), '--synthetic-samples', *map(str, args.samples),
                '--model', 'drnet', '--model-kwargs', *KWARGS, f'private_ln={private}', '--opt', 'adamw', '--lr',
                '1e-3', '--weight-decay', '0.05', '--warmup-epochs', '2', '--seed', str(seed), '--output',
                str(out / 'runs'), '--experiment', name], ckpt)
            result = out / 'results' / f'{name}.json'
            run(f'val_{name}', 'validate.py', ['--checkpoint', str(ckpt), '--synthetic-samples', str(args.samples[1]),
                                               '--static', '--results-file', str(result)], result)
            static = [s['top1'] for s in load_json(result)['static']]
            rows.append(dict(seed=seed, private_ln=private, top1=static, mean=statistics.mean(static)))
    (out / 'results.json').write_text(json.dumps(dict(rows=rows, seconds=run.seconds, args=vars(args)), indent=2))
    print(f"\n{'layer norms':12s} {'seed':>4s}  top-1 at 64 / 48 / 32 px   mean")
    for r in rows:
        print(f"{'private' if r['private_ln'] else 'shared':12s} {r['seed']:4d}  "
              f"{' / '.join(f'{t:.2f}' for t in r['top1']):24s}  {r['mean']:.2f}")
    chance = 100 / len(SYNTHETIC_CLASSES)
    for seed in args.seeds:
        shared, private = [r for r in rows if r['seed'] == seed]
        stuck = [r for r in (shared, private) if r['mean'] < 2 * chance]
        if stuck:
            print(f'seed {seed}: not compared, at chance: ' + ', '.join(
                'private' if r['private_ln'] else 'shared' for r in stuck))
            continue
        diff = [p - s for p, s in zip(private['top1'], shared['top1'])]
        print(f'private minus shared, seed {seed}: ' + ' / '.join(f'{d:+.2f}' for d in diff) +
              f' (mean {private["mean"] - shared["mean"]:+.2f})')


if __name__ == '__main__':
    main()
