""" Where the time of one eager routed forward goes, at batch 1 on real photos.

Times, in alternating rounds (median over rounds of the mean per image), the whole ``model(x)`` beside each of its
parts run on their own: the input check, the predictor's input resize and the predictor, the hard selection, the
branch switch (``set_resolution``), the resize to the routed resolution and the backbone at that resolution. What
the parts do not account for is Python glue (the dispatch in ``DRNet._routed``). The backbone at 224 px (its 1x
branch) is timed beside them for scale.

    python benchmarks/overhead.py --checkpoint output/imagenette/runs/predictor/predictor/last.pth.tar
"""
import argparse
import statistics
from pathlib import Path

import torch

import timm_drnet  # noqa: F401  (registers the drnet_* models)
from timm_drnet.config import load_drnet
from timm_drnet.routing import resize
from latency import load_images, set_statistics, stand_in, timed

parser = argparse.ArgumentParser(description='Batch-1 eager overhead of a routed DRNet forward, part by part')
parser.add_argument('--data-dir', default='../shared/data/imagenette224/val', help='ImageFolder of real photos')
parser.add_argument('--model', default='drnet_tf_efficientnet_lite0', help='stand-in model without --checkpoint')
parser.add_argument('--checkpoint', default='', help='a trained DRNet with a trained predictor')
parser.add_argument('--num-images', type=int, default=32)
parser.add_argument('--rounds', type=int, default=7)


def main() -> None:
    args = parser.parse_args()
    model = load_drnet(args.checkpoint) if args.checkpoint else stand_in(args.model)
    images = load_images(Path(args.data_dir), model, args.num_images)
    if not args.checkpoint:
        set_statistics(model, images)
    model.eval()
    xs = [images[i:i + 1] for i in range(len(images))]
    sizes = model.candidate_sizes(*images.shape[2:])
    p = (model.predictor_size, model.predictor_size)
    m = model.num_resolutions
    with torch.inference_mode():
        routes = [int(model.forward_routed(x).resolution_index) for x in xs]
        small = [resize(x, p) for x in xs]
        logits = [model.predict_logits(x) for x in xs]
        at_route = [resize(x, sizes[j]) for x, j in zip(xs, routes)]
    backbone = model.backbone

    def at_routes() -> None:
        for x, j in zip(at_route, routes):
            model.set_resolution(j)
            backbone(x)
    fns = {
        'routed forward, model(x)': lambda: [model(x) for x in xs],
        'backbone at 224 alone': lambda: [model.set_resolution(0) or backbone(x) for x in xs],
        'input check': lambda: [model.check_input(x) for x in xs],
        'predictor input resize': lambda: [resize(x, p) for x in xs],
        'predictor': lambda: [model.predictor(s) for s in small],
        'selection (argmax, one-hot)': lambda: [model.select(z).argmax(-1).bincount(minlength=m).tolist()
                                                for z in logits],
        'branch switch (set_resolution)': lambda: [model.set_resolution(j) for j in routes],
        'resize to the routed size': lambda: [resize(x, sizes[j]) for x, j in zip(xs, routes)],
        'backbone at the routed size + switch': at_routes,
    }
    ms = {k: 1e3 * statistics.median(v) / len(xs) for k, v in timed(fns, args.rounds).items()}
    total = ms['routed forward, model(x)']
    parts = sum(v for k, v in ms.items() if k not in ('routed forward, model(x)', 'backbone at 224 alone',
                                                      'branch switch (set_resolution)'))
    share = [routes.count(j) / len(routes) for j in range(m)]
    print(f'{type(model.predictor).__name__} predictor at {p[0]} px; routes {"/".join(f"{s:.2f}" for s in share)}; '
          f'torch {torch.__version__}, {torch.get_num_threads()} threads, median of {args.rounds} rounds')
    print(f"{'part':34s} {'ms / image':>10s} {'of model(x)':>12s}")
    for k, v in ms.items():
        print(f'{k:34s} {v:10.3f} {v / total:11.1%}')
    print(f"{'glue (model(x) - its parts)':34s} {total - parts:10.3f} {(total - parts) / total:11.1%}")


if __name__ == '__main__':
    main()
