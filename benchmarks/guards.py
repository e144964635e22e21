""" What dynamo's guard checks cost a compiled DRNet at batch 1 on real photos, side by side with the static models.

Every call of a ``torch.compile`` region first checks its guards (the module tree, each parameter, the private
norms' active branch). A routed call makes two such calls per image (the predictor's region, then the backbone's at
the chosen resolution), a static model one. After warm-up, ``torch.compiler.set_stance(skip_guard_eval_unsafe=True)``
checks only the guards that tell a function's compiled graphs apart (for DRNet's regions: the input's sizes and the
norms' branch); PyTorch calls it unsafe: it holds only once nothing recompiles. This times, in alternating
rounds (median over rounds of the mean per image), with every guard checked and with only the differentiating ones:

* DRNet with predictor routing (after timm's ``reparameterize_model`` and ``compile_for_inference``), on 224 px
  images (``model(x)``) and through ``forward_prepared`` (each graph fed at its own size);
* the static mix: each image through the compiled static backbone of its route, already at that size;
* the predictor's region alone (``DRNet._route`` on the small images).

The ratio static mix / DRNet is the mix efficiency of ``latency.py``. Before timing, the logits with the skipped
guards are compared with those with every guard on each image.

    python benchmarks/guards.py --data-dir ../shared/data/imagenette224/val --stand-in-predictor stem \\
        --target-fraction 0.46
"""
import argparse
import copy
import statistics
from pathlib import Path
from typing import Callable, Dict

import numpy as np
import torch
from timm.utils import reparameterize_model

import timm_drnet
from timm_drnet import select_resolution_bn
from timm_drnet.routing import resize
from deployed import timed
from latency import differentiating_guards, load_images, set_statistics, stand_in

parser = argparse.ArgumentParser(description='Guard checks of a compiled DRNet at batch 1, against the static models')
parser.add_argument('--data-dir', default='../shared/data/imagenette224/val', help='ImageFolder of real photos')
parser.add_argument('--model', default='drnet_tf_efficientnet_lite0', choices=('drnet_tf_efficientnet_lite0',
                                                                                  'drnet_resnet50'))
parser.add_argument('--stand-in-predictor', default='stem', choices=sorted(timm_drnet.PREDICTORS))
parser.add_argument('--num-images', type=int, default=64)
parser.add_argument('--rounds', type=int, default=9)
parser.add_argument('--target-fraction', type=float, default=0.46, help='budget: fraction of the 224 GMACs')


def main() -> None:
    args = parser.parse_args()
    torch.manual_seed(0)
    model = stand_in(args.model, args.stand_in_predictor)
    images = load_images(Path(args.data_dir), model, args.num_images)
    set_statistics(model, images, random_backbone=args.model != 'drnet_tf_efficientnet_lite0')
    table = model.cost_table(tuple(images.shape[1:]))
    timm_drnet.set_budget(model, args.target_fraction * table.backbone[0] + table.predictor, images)
    sizes = model.candidate_sizes(*images.shape[2:])
    statics = [torch.compile(select_resolution_bn(copy.deepcopy(model.backbone), j).eval(), dynamic=False)
               for j in range(model.num_resolutions)]
    routed = reparameterize_model(model)
    routed.compile_for_inference()
    xs = [images[i:i + 1] for i in range(len(images))]
    with torch.inference_mode():
        routes = [int(model.forward_routed(x).resolution_index) for x in xs]
    small = [resize(x, (model.predictor_size,) * 2) for x in xs]
    at_size = [[resize(x, s) for s in sizes] for x in xs]

    def prepared(i: int) -> torch.Tensor:
        return routed.forward_prepared(small[i], lambda j, chosen: at_size[i][j]).logits
    calls: Dict[str, Callable[[], object]] = {
        'DRNet, 224 px input': lambda: [routed(x) for x in xs],
        'DRNet, prepared': lambda: [prepared(i) for i in range(len(xs))],
        'static mix': lambda: [statics[j](at_size[i][j]) for i, j in enumerate(routes)],
        'predictor region': lambda: [routed._route(s) for s in small],
    }

    def logits() -> list:
        return [torch.cat([routed(x) for x in xs]), torch.cat([prepared(i) for i in range(len(xs))])]
    with torch.inference_mode():
        for fn in calls.values():  # compile every graph the timed calls meet, with every guard checked
            fn()
        full, diff = logits(), differentiating_guards(logits)()
    gap = max((a - b).abs().max().item() for a, b in zip(full, diff))
    fns = {**{f'{k}, every guard': fn for k, fn in calls.items()},
           **{f'{k}, differentiating guards': differentiating_guards(fn) for k, fn in calls.items()}}
    times = timed(fns, args.rounds)
    ms = {k: [1e3 * t / len(xs) for t in v] for k, v in times.items()}
    share = '/'.join(f'{routes.count(j) / len(routes):.2f}' for j in range(model.num_resolutions))
    print(f'{args.model}, compiled, batch 1; routes {share} (224/168/112 px); median of {args.rounds} rounds; '
          f'largest logit difference, differentiating against every guard: {gap:.2e}')
    for k, v in ms.items():
        print(f'{k:45s} {statistics.median(v):7.3f} ms / image')
    for guards in ('every guard', 'differentiating guards'):
        for routing in ('DRNet, 224 px input', 'DRNet, prepared'):
            eff = [m / r for m, r in zip(ms[f'static mix, {guards}'], ms[f'{routing}, {guards}'])]
            p10, p90 = np.percentile(eff, [10, 90])
            print(f'static mix / {routing}, {guards}: {statistics.median(eff):.3f} (p10 {p10:.3f}, p90 {p90:.3f})')


if __name__ == '__main__':
    main()
