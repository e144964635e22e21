""" Training cost: DRNet stage-2 steps against static steps at the base resolution, alternated in one run.

Each round times one optimiser step of every configuration on the same batch of real photos:
  static      the plain backbone (one BN per layer) at the base resolution, CE loss
  multires    stage 1: the backbone at every candidate resolution, m CE losses summed
  drnet       stage 2: predictor + routed backbone, CE + FLOPs loss
  drnet_all   the same with predictor_grad='all' (each image also runs, without gradient, at its other resolutions)
Images per second are medians over rounds.

    python benchmarks/train_throughput.py --data-dir ../shared/data/imagenette224/train
"""
import argparse
import copy
import json
import statistics
import time
from pathlib import Path
from typing import Callable, Dict

import torch
import torch.nn.functional as F
import timm
from timm.data import create_transform, resolve_data_config
from PIL import Image

import timm_drnet  # registers drnet_* models
from timm_drnet import DRNetLoss, select_resolution_bn

parser = argparse.ArgumentParser(description='DRNet training throughput vs static training')
parser.add_argument('--data-dir', default='../shared/data/imagenette224/train')
parser.add_argument('--model', default='drnet_tf_efficientnet_lite0')
parser.add_argument('--batch-size', type=int, default=32)
parser.add_argument('--rounds', type=int, default=5)
parser.add_argument('--output', default='output/train_throughput')


def load_batch(data_dir: Path, model, n: int) -> torch.Tensor:
    transform = create_transform(**resolve_data_config(model=model), is_training=True)
    paths = sorted(p for p in data_dir.rglob('*') if p.suffix.lower() in ('.jpeg', '.jpg', '.png'))
    if not paths:
        raise SystemExit(f'No images found under {data_dir}')
    step = max(1, len(paths) // n)
    return torch.stack([transform(Image.open(p).convert('RGB')) for p in paths[::step][:n]])


def make_step(model: torch.nn.Module, loss_fn: Callable[[], torch.Tensor]) -> Callable[[], None]:
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss_fn().backward()
        optimizer.step()
    return step


def main() -> None:
    args = parser.parse_args()
    torch.manual_seed(0)
    drnet = timm.create_model(args.model).train()
    x = load_batch(Path(args.data_dir), drnet, args.batch_size)
    target = torch.randint(0, drnet.num_classes, (len(x),))
    static = select_resolution_bn(copy.deepcopy(drnet.backbone), 0).train()
    table = drnet.cost_table(tuple(x.shape[1:]))
    alpha = 0.6 * table.backbone[0]
    criterion = DRNetLoss(alpha=alpha, eta=1.0)

    routes = []
    drnet_all = copy.deepcopy(drnet)
    drnet_all.predictor_grad = 'all'

    def drnet_loss(model: timm_drnet.DRNet) -> torch.Tensor:
        out = model.forward_routed(x)
        routes.append(out.resolution_index)
        return criterion(out.logits, target, out.hard, table.backbone).total

    multires = copy.deepcopy(drnet)
    multires.predictor.requires_grad_(False)
    steps: Dict[str, Callable[[], None]] = {
        'static': make_step(static, lambda: F.cross_entropy(static(x), target)),
        'multires': make_step(multires, lambda: sum(F.cross_entropy(multires(x, resolution_index=j), target)
                                                     for j in range(multires.num_resolutions))),
        'drnet': make_step(drnet, lambda: drnet_loss(drnet)),
        'drnet_all': make_step(drnet_all, lambda: drnet_loss(drnet_all)),
    }
    times = {k: [] for k in steps}
    for step in steps.values():  # warm-up
        step()
    for _ in range(args.rounds):
        for k, step in steps.items():
            start = time.perf_counter()
            step()
            times[k].append(time.perf_counter() - start)
    ips = {k: len(x) / statistics.median(v) for k, v in times.items()}
    print(f'{args.model}, batch {len(x)}, {torch.get_num_threads()} threads, median of {args.rounds} rounds')
    for k, v in ips.items():
        print(f'  {k:10s} {v:7.2f} img/s  ({v / ips["static"]:.2f}x static)')
    share = torch.bincount(torch.cat(routes), minlength=drnet.num_resolutions).float()
    share = (share / share.sum()).tolist()
    print('  routed shares of drnet and drnet_all (Gumbel samples of the untrained predictor): ' +
          ', '.join(f'{r}x {100 * s:.0f}%' for r, s in zip(drnet.resolutions, share)))
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    (out / 'results.json').write_text(json.dumps(
        dict(model=args.model, batch_size=len(x), images_per_s=ips, drnet_share=share), indent=2))


if __name__ == '__main__':
    main()
