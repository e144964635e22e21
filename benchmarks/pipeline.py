""" End to end at batch 1 in ONNX Runtime, from decoded photos: the data pipeline's resize beside the graphs.

``latency.py`` times every model on images already at its size. A deployment makes those images too: this script
times the whole call per image, from the decoded photo (timm's eval transform on PIL images, decoded once
beforehand) to the logits, in alternating rounds (median, p10 / p90), for

* ``static_224``: the 224 px transform, then the static 224 px graph (BNs folded, as ``latency.py``'s; its session's
  threads stop spinning when a run returns, as ``OnnxDRNet``'s: left spinning, they take the cores from the
  transform that runs next);
* ``static_mix``: each photo's transform at its route's size, then the static graph of that size (the ideal);
* ``predictor``: the 224 px transform, then ``OnnxDRNet`` on the full-size export (for one image its single-image
  graph, which resizes inside);
* ``prepared``: the predictor's small transform, the route, then the transform at the route's size and that
  backbone graph (``OnnxDRNet.forward_prepared`` on ``export_onnx(prepared=True)``, the transforms from
  ``candidate_transforms``: each size made in one resize of the photo, bilinear below 224 px as DRNet resizes).

The images are imagenette224's photos, stored at 224 x 224: timm's 224 px transform upsamples them to 256 px and
crops, the smaller sizes downsample them.

The budget is set with ``set_budget`` on ``--calib-dir`` at ``--target-fraction`` of the 224 GMACs. Top-1, GMACs
and routes of ``predictor`` and ``prepared`` are measured on every photo of ``--eval-dir``: PIL's one resize to a
candidate size differs from the model's resize of the 224 px crop. Labels: the ImageNet index of each folder's
synset (``classes.tsv`` of imagenette224). Writes ``pipeline.csv`` and ``results.json`` to ``--output``.

    python benchmarks/pipeline.py --checkpoint output/imagenette/runs/predictor/predictor/last.pth.tar \\
        --eval-dir output/imagenette/data/eval --calib-dir output/imagenette/data/calibration
"""
import argparse
import copy
import csv
import json
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
import torch
from PIL import Image

import timm_drnet
from timm_drnet import DRNet, select_resolution_bn
from timm_drnet.config import load_drnet, run_data_config
from timm_drnet.data import candidate_transforms
from latency import image_paths, onnx_static, timed

parser = argparse.ArgumentParser(description='DRNet end to end from decoded photos, ONNX Runtime, batch 1')
parser.add_argument('--checkpoint', required=True, help='a trained DRNet with a trained predictor')
parser.add_argument('--data-dir', default='../shared/data/imagenette224/val', help='photos timed (ImageFolder)')
parser.add_argument('--eval-dir', default='output/imagenette/data/eval', help='photos top-1 is measured on')
parser.add_argument('--calib-dir', default='output/imagenette/data/calibration', help='photos the budget is set on')
parser.add_argument('--classes', default='../shared/data/imagenette224/classes.tsv',
                    help='synset -> ImageNet index (the labels of a 1000-class head)')
parser.add_argument('--num-images', type=int, default=64, help='photos timed')
parser.add_argument('--rounds', type=int, default=21, help='timed rounds (median)')
parser.add_argument('--target-fraction', type=float, default=0.46, help='budget: fraction of the 224 GMACs')
parser.add_argument('--output', default='output/pipeline')

CONFIGS = ('static_224', 'static_mix', 'predictor', 'prepared')


def photos(directory: Path, n: int = 0) -> List[Tuple[Image.Image, str]]:
    """Decoded RGB photos and their folder (synset) names: every photo, or ``n`` spread over the sorted list."""
    return [(Image.open(p).convert('RGB'), p.parent.name) for p in image_paths(directory, n)]


def main() -> None:
    args = parser.parse_args()
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    start = time.time()
    model: DRNet = load_drnet(args.checkpoint).eval()
    cfg = run_data_config({}, model)
    input_size = tuple(cfg['input_size'])
    sizes = model.candidate_sizes(*input_size[1:])
    p = model.predictor_size
    small_tf, *size_tfs = candidate_transforms(cfg, [(p, p), *sizes])
    table = model.cost_table(input_size)
    with torch.inference_mode():
        calib = torch.stack([size_tfs[0](im) for im, _ in photos(Path(args.calib_dir))])
    timm_drnet.set_budget(model, args.target_fraction * table.backbone[0] + table.predictor, calib)

    directory = Path(tempfile.mkdtemp(dir=out))
    timm_drnet.export_onnx(model, directory / 'full', input_size=input_size)
    timm_drnet.export_onnx(model, directory / 'prepared', input_size=input_size, prepared=True)
    full, prepared = timm_drnet.OnnxDRNet(directory / 'full'), timm_drnet.OnnxDRNet(directory / 'prepared')
    statics = [onnx_static(select_resolution_bn(copy.deepcopy(model.backbone), j), size, directory, j)
               for j, size in enumerate(sizes)]  # (alone, in a mix) sessions: the second stops spinning

    def make(image: Image.Image, j: int) -> np.ndarray:
        return size_tfs[j](image)[None].numpy()

    def run_prepared(image: Image.Image):
        return prepared.forward_prepared(small_tf(image)[None].numpy(), lambda j, chosen: make(image, j))

    timed_photos = [im for im, _ in photos(Path(args.data_dir), args.num_images)]
    with torch.inference_mode():
        routes = [int(run_prepared(im).resolution_index[0]) for im in timed_photos]
        full_routes = [int(full.forward_routed(make(im, 0)).resolution_index[0]) for im in timed_photos]
    fns = dict(
        static_224=lambda: [statics[0][1](make(im, 0)) for im in timed_photos],
        static_mix=lambda: [statics[j][1](make(im, j)) for im, j in zip(timed_photos, routes)],
        predictor=lambda: [full(make(im, 0)) for im in timed_photos],
        prepared=lambda: [run_prepared(im) for im in timed_photos],
    )
    with torch.inference_mode():
        times = timed(fns, args.rounds)
    ms = {k: np.array(v) * 1e3 / len(timed_photos) for k, v in times.items()}

    index = {line.split('\t')[1]: int(line.split('\t')[0])
             for line in Path(args.classes).read_text().splitlines()[1:] if line.strip()}
    evaluated = {'predictor': [], 'prepared': []}  # (correct, route) per photo
    with torch.inference_mode():
        for image, synset in photos(Path(args.eval_dir)):
            for name, result in (('predictor', full.forward_routed(make(image, 0))), ('prepared', run_prepared(image))):
                evaluated[name].append((int(result.logits.argmax(1)[0] == index[synset]),
                                        int(result.resolution_index[0])))
    costs = np.array(table.backbone)
    rows: List[Dict] = []
    for name in CONFIGS:
        row = dict(config=name, ms=round(float(np.median(ms[name])), 3),
                   p10_ms=round(float(np.percentile(ms[name], 10)), 3),
                   p90_ms=round(float(np.percentile(ms[name], 90)), 3),
                   speedup_vs_static_224=round(float(np.median(ms['static_224'] / ms[name])), 3),
                   mix_efficiency=round(float(np.median(ms['static_mix'] / ms[name])), 3)
                   if name in evaluated else '', top1='', gmacs='', shares='')
        if name in evaluated:
            correct, route = map(np.array, zip(*evaluated[name]))
            row.update(top1=round(100 * correct.mean(), 2), gmacs=round(costs[route].mean() + table.predictor, 4),
                       shares='/'.join(f'{s:.2f}' for s in np.bincount(route, minlength=len(sizes)) / len(route)))
        rows.append(row)
    agree = float(np.mean(np.array(evaluated['predictor'])[:, 1] == np.array(evaluated['prepared'])[:, 1]))
    with open(out / 'pipeline.csv', 'w', newline='') as f:
        writer = csv.DictWriter(f, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    (out / 'results.json').write_text(json.dumps(dict(
        rows=rows, args=vars(args), seconds=time.time() - start, eval_images=len(evaluated['prepared']),
        route_agreement=agree, timed_routes_agree=float(np.mean(np.array(routes) == np.array(full_routes))),
        gmacs_224=table.backbone[0]), indent=2))
    print(f"{'config':12s} {'ms':>7s} {'p10-p90':>13s} {'speedup':>8s} {'vs mix':>7s} {'top-1':>6s} {'GMACs':>7s} "
          f"shares")
    for r in rows:
        print(f"{r['config']:12s} {r['ms']:7.3f} {r['p10_ms']:6.3f}-{r['p90_ms']:<6.3f} "
              f"{r['speedup_vs_static_224']:7.3f}x {str(r['mix_efficiency']):>7s} {str(r['top1']):>6s} "
              f"{str(r['gmacs']):>7s} {r['shares']}")
    print(f'routes of predictor and prepared agree on {100 * agree:.1f}% of {len(evaluated["prepared"])} photos; '
          f'wrote {out / "pipeline.csv"} in {time.time() - start:.0f}s')


if __name__ == '__main__':
    main()
