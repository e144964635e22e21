""" Page faults on the CPU: static timm models timed with glibc's malloc as it is and with
``timm_drnet.keep_freed_memory()``, side by side in one run.

With glibc's defaults each large tensor a forward allocates comes from a fresh ``mmap`` and goes back to the kernel
when freed, so each call faults in every page of its activations again. For each model, path (eager PyTorch,
``torch.compile``, AOTInductor, ONNX Runtime), input size (224 / 168 / 112) and batch size, every round times every
configuration under glibc's default values (``keep_freed_memory(False)``), then with freed memory kept, each
configuration warmed up just before its timed call. The figure is the median over ``--rounds`` rounds (p10 / p90 the
spread), per batch, with the page faults of the timed call (``getrusage``); the ratios are taken round by round:

* ``kept_speedup`` = default time / kept time (on the kept rows);
* ``time_vs_224`` = time / the 224 px time of the same model, path, batch and allocator, beside ``macs_vs_224``: a
  model scales with its MACs where the two agree.

Random weights and random images: the time of these models does not depend on either. The first round's default is
glibc's state at start-up; later rounds set its default values back, with its dynamic mmap threshold off (it only
moves blocks under 32 MiB).

    python benchmarks/allocator.py --output output/allocator
"""
import argparse
import copy
import resource
import tempfile
from pathlib import Path
from typing import Callable, Dict, List

import numpy as np
import torch
import timm

import timm_drnet
from timm_drnet import count_macs

from deployed import aoti_static, onnx_static, timed, write_csv

parser = argparse.ArgumentParser(description="Static models with glibc's malloc as it is and with freed memory kept")
parser.add_argument('--models', nargs='+', default=['tf_efficientnet_lite0', 'resnet50'])
parser.add_argument('--paths', nargs='+', default=['eager', 'compiled', 'aoti', 'onnx'],
                    choices=('eager', 'compiled', 'aoti', 'onnx'))
parser.add_argument('--sizes', nargs='+', type=int, default=[224, 168, 112])
parser.add_argument('--batch-sizes', nargs='+', type=int, default=[1, 32])
parser.add_argument('--num-images', type=int, default=64, help='images per timed call (batch 1: 16 of them)')
parser.add_argument('--rounds', type=int, default=5)
parser.add_argument('--output', default='output/allocator')

ALLOCATORS = ('default', 'kept')
FIELDS = ['model', 'path', 'batch', 'size', 'allocator', 'ms', 'p10_ms', 'p90_ms', 'faults_per_batch',
          'kept_speedup', 'time_vs_224', 'macs_vs_224']


def minor_faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def deployed(net: torch.nn.Module, path: str, size: int, directory: Path) -> Callable:
    """``net`` at input ``size`` deployed along ``path``, called on a tensor batch."""
    if path == 'eager':
        return net
    if path == 'compiled':
        return torch.compile(copy.deepcopy(net), dynamic=False)
    if path == 'aoti':
        return aoti_static(net, (size, size), directory, size)
    alone, _ = onnx_static(net, (size, size), directory, size)
    return lambda x: alone(x.numpy())


def bench_model(name: str, args, out: Path) -> List[Dict]:
    torch.manual_seed(0)
    net = timm.create_model(name).eval()
    macs = {s: count_macs(net, (3, s, s)) for s in args.sizes}
    directory = Path(tempfile.mkdtemp(dir=out))
    fns, faults = {}, {}
    for path in args.paths:
        for size in args.sizes:
            fn = deployed(net, path, size, directory)
            for bs in args.batch_sizes:
                n = 16 if bs == 1 else max(1, args.num_images // bs)
                batches = [torch.randn(bs, 3, size, size) for _ in range(n)]
                key = (path, bs, size)
                faults[key] = []

                def call(fn=fn, batches=batches, key=key) -> None:
                    before = minor_faults()
                    for b in batches:
                        fn(b)
                    faults[key].append((minor_faults() - before) / len(batches))
                fns[key] = (call, len(batches))
    print(f'{name}: {len(fns)} configurations ready, timing', flush=True)
    ms = {(key, a): [] for key in fns for a in ALLOCATORS}
    spent = {(key, a): [] for key in fns for a in ALLOCATORS}
    for _ in range(args.rounds):
        for allocator in ALLOCATORS:
            timm_drnet.keep_freed_memory(allocator == 'kept')
            times = timed({key: call for key, (call, _) in fns.items()}, 1)  # each warmed up, then timed once
            for key, (_, n) in fns.items():
                ms[(key, allocator)].append(1e3 * times[key][0] / n)
                spent[(key, allocator)].append(faults[key][-1])  # the timed call's (the one before: its warm-up)
    rows = []
    for (path, bs, size), a in ms:
        v = np.array(ms[((path, bs, size), a)])
        at_224 = np.array(ms[((path, bs, args.sizes[0]), a)])
        kept = np.array(ms[((path, bs, size), 'kept')])
        default = np.array(ms[((path, bs, size), 'default')])
        rows.append(dict(
            model=name, path=path, batch=bs, size=size, allocator=a, ms=round(float(np.median(v)), 3),
            p10_ms=round(float(np.percentile(v, 10)), 3), p90_ms=round(float(np.percentile(v, 90)), 3),
            faults_per_batch=int(np.median(spent[((path, bs, size), a)])),
            kept_speedup=round(float(np.median(default / kept)), 3) if a == 'kept' else '',
            time_vs_224=round(float(np.median(v / at_224)), 3), macs_vs_224=round(macs[size] / macs[args.sizes[0]], 3)))
    return rows


def main() -> None:
    args = parser.parse_args()
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    print(f'torch {torch.__version__}, {torch.get_num_threads()} threads; median of {args.rounds} rounds', flush=True)
    if 'compiled' in args.paths:
        torch._dynamo.config.recompile_limit = 64
    rows = []
    for name in args.models:
        rows += bench_model(name, args, out)
    write_csv(out / 'allocator.csv', FIELDS, rows)
    print(f"\n{'model':22s} {'path':9s} {'batch':>5s} {'size':>4s} {'allocator':9s} {'ms':>9s} {'p10-p90':>17s} "
          f"{'faults':>8s} {'kept x':>7s} {'t/224':>6s} {'MACs/224':>8s}")
    for r in rows:
        print(f"{r['model']:22s} {r['path']:9s} {r['batch']:5d} {r['size']:4d} {r['allocator']:9s} {r['ms']:9.2f} "
              f"{r['p10_ms']:8.2f}-{r['p90_ms']:<8.2f} {r['faults_per_batch']:8d} {str(r['kept_speedup']):>7s} "
              f"{r['time_vs_224']:6.3f} {r['macs_vs_224']:8.3f}")
    print(f'\nwrote {out / "allocator.csv"}')


if __name__ == '__main__':
    main()
