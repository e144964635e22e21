""" Where the time of one routed call goes, at batch 1 on real photos: eager PyTorch or ONNX Runtime.

Times, in alternating rounds (median over rounds of the mean per image), the whole routed call beside its parts
run on their own.

* ``--path eager`` (the model after timm's ``reparameterize_model``, as deployed): ``model(x)``, the input check,
  the predictor's input resize and the predictor, the hard selection, the branch switch (``set_resolution``), the
  resize to the routed resolution and the backbone at that resolution. What the parts do not account for is glue:
  the dispatch in ``DRNet._routed``, and what running the predictor and the backbone in turn costs over running each
  alone (timed by hand: predictor, then backbone, image by image). The backbone at 224 px (its 1x branch) is timed
  beside them for scale.
* ``--path onnx``: ``OnnxDRNet`` on the ``export_onnx`` graphs (one image: its single-image graph, routing
  inside), the runner on the separate graphs (``single_image=False``), the predictor graph alone, the backbone
  graphs alone on the routed images (their in-graph resize included), the predictor and backbone sessions called
  in turn by hand (the separate-graph runner without its Python), and the static mix: each image through the
  static model of its resolution (BNs folded, its own session), already at that size, the ideal the runner is
  held to.

    python benchmarks/overhead.py --checkpoint output/imagenette/runs/predictor/predictor/last.pth.tar \
        --target-fraction 0.46 --num-images 64 [--path onnx]
"""
import argparse
import copy
import statistics
import tempfile
from pathlib import Path
from typing import Callable, Dict, List

import torch
from timm.utils import reparameterize_model

import timm_drnet
from timm_drnet import DRNet, select_resolution_bn
from timm_drnet.config import load_drnet
from timm_drnet.routing import resize
from latency import load_images, onnx_static, set_statistics, stand_in, timed

parser = argparse.ArgumentParser(description='Batch-1 eager overhead of a routed DRNet forward, part by part')
parser.add_argument('--data-dir', default='../shared/data/imagenette224/val', help='ImageFolder of real photos')
parser.add_argument('--model', default='drnet_tf_efficientnet_lite0', help='stand-in model without --checkpoint')
parser.add_argument('--checkpoint', default='', help='a trained DRNet with a trained predictor')
parser.add_argument('--num-images', type=int, default=32)
parser.add_argument('--rounds', type=int, default=7)
parser.add_argument('--path', default='eager', choices=('eager', 'onnx'))
parser.add_argument('--target-fraction', type=float, default=None,
                    help='set_budget at this fraction of the 224 GMACs, as latency.py (default: the model as loaded)')


def onnx_parts(model: DRNet, xs: List[torch.Tensor], routes: List[int], directory: Path,
               ) -> Dict[str, Callable[[], object]]:
    """The ONNX Runtime runner and its parts, on single images ``xs`` routed to ``routes``."""
    sizes = model.candidate_sizes(*xs[0].shape[2:])
    timm_drnet.export_onnx(model, directory / 'drnet', input_size=tuple(xs[0].shape[1:]))
    runner = timm_drnet.OnnxDRNet(directory / 'drnet')
    separate = timm_drnet.OnnxDRNet(directory / 'drnet', single_image=False)
    statics = [onnx_static(select_resolution_bn(copy.deepcopy(model.backbone), j), size, directory, j)[1]
               for j, size in enumerate(sizes)]  # sessions that stop spinning, as the runner's
    feeds = [{'images': x.numpy()} for x in xs]
    at_route = [resize(x, sizes[j]).numpy() for x, j in zip(xs, routes)]
    predictor, backbones = runner.predictor, runner.backbones
    return {
        'routed call, OnnxDRNet(x)': lambda: [runner(f['images']) for f in feeds],
        'routed call, separate graphs': lambda: [separate(f['images']) for f in feeds],
        'predictor graph alone': lambda: [predictor.run(None, f) for f in feeds],
        'backbone graphs alone (resize in)': lambda: [backbones[j].run(None, f) for f, j in zip(feeds, routes)],
        'both sessions in turn, by hand': lambda: [(predictor.run(None, f), backbones[j].run(None, f))
                                                   for f, j in zip(feeds, routes)],
        'static mix (images at their size)': lambda: [statics[j](x) for x, j in zip(at_route, routes)],
    }


def report_onnx(ms: Dict[str, float]) -> None:
    """What each cost of the runner over the static mix is, from the parts."""
    total, mix = ms['routed call, OnnxDRNet(x)'], ms['static mix (images at their size)']
    alone = ms['predictor graph alone'] + ms['backbone graphs alone (resize in)']
    costs = {
        'predictor graph': ms['predictor graph alone'],
        'resize inside the backbone graphs': ms['backbone graphs alone (resize in)'] - mix,
        'switching sessions (in turn - alone)': ms['both sessions in turn, by hand'] - alone,
        'Python (separate graphs - by hand)':
            ms['routed call, separate graphs'] - ms['both sessions in turn, by hand'],
        'single-image graph (runner - separate)': total - ms['routed call, separate graphs'],
    }
    print(f"\nrouted call {total:.3f} ms = static mix {mix:.3f} ms + {total - mix:.3f} ms "
          f"(efficiency against the mix {mix / total:.3f}):")
    for k, v in costs.items():
        print(f'  {k:40s} {v:7.3f} ms {v / mix:7.1%} of the mix')


def main() -> None:
    args = parser.parse_args()
    model = load_drnet(args.checkpoint) if args.checkpoint else stand_in(args.model)
    images = load_images(Path(args.data_dir), model, args.num_images)
    if not args.checkpoint:
        set_statistics(model, images, random_backbone=args.model != 'drnet_tf_efficientnet_lite0')
    model.eval()
    if args.target_fraction is not None:
        table = model.cost_table(tuple(images.shape[1:]))
        timm_drnet.set_budget(model, args.target_fraction * table.backbone[0] + table.predictor, images)
    xs = [images[i:i + 1] for i in range(len(images))]
    with torch.inference_mode():
        routes = [int(model.forward_routed(x).resolution_index) for x in xs]
    share = [routes.count(j) / len(routes) for j in range(model.num_resolutions)]
    if args.path == 'onnx':
        with tempfile.TemporaryDirectory() as tmp:
            fns = onnx_parts(model, xs, routes, Path(tmp))
        ms = {k: 1e3 * statistics.median(v) / len(xs) for k, v in timed(fns, args.rounds).items()}
        print(f'ONNX Runtime; routes {"/".join(f"{s:.2f}" for s in share)}; median of {args.rounds} rounds')
        for k, v in ms.items():
            print(f'{k:38s} {v:7.3f} ms / image')
        report_onnx(ms)
        return
    model = reparameterize_model(model)  # the predictor's BNs folded, as deployed
    sizes = model.candidate_sizes(*images.shape[2:])
    p = (model.predictor_size, model.predictor_size)
    with torch.inference_mode():
        small = [resize(x, p) for x in xs]
        logits = [model.predict_logits(x) for x in xs]
        at_route = [resize(x, sizes[j]) for x, j in zip(xs, routes)]
    backbone = model.backbone

    def at_routes() -> None:
        for x, j in zip(at_route, routes):
            model.set_resolution(j)
            backbone(x)

    def selection() -> None:  # what DRNet._selection runs after the predictor, and the counts to a list
        for z in logits:
            hard = model.select(z)
            z.float().softmax(-1), hard.argmax(-1), hard.sum(0).long().tolist()

    def in_turn() -> None:  # predictor then backbone, image by image, as model(x) runs them
        for s, x, j in zip(small, at_route, routes):
            model.predictor(s)
            model.set_resolution(j)
            backbone(x)
    fns = {
        'routed forward, model(x)': lambda: [model(x) for x in xs],
        'backbone at 224 alone': lambda: [model.set_resolution(0) or backbone(x) for x in xs],
        'input check': lambda: [model.check_input(x) for x in xs],
        'predictor input resize': lambda: [resize(x, p) for x in xs],
        'predictor': lambda: [model.predictor(s) for s in small],
        'selection (softmax, one-hot, counts)': selection,
        'branch switch (set_resolution)': lambda: [model.set_resolution(j) for j in routes],
        'resize to the routed size': lambda: [resize(x, sizes[j]) for x, j in zip(xs, routes)],
        'backbone at the routed size + switch': at_routes,
        'predictor + backbone in turn, by hand': in_turn,
    }
    ms = {k: 1e3 * statistics.median(v) / len(xs) for k, v in timed(fns, args.rounds).items()}
    total = ms['routed forward, model(x)']
    parts = sum(v for k, v in ms.items() if k not in ('routed forward, model(x)', 'backbone at 224 alone',
                                                      'branch switch (set_resolution)',
                                                      'predictor + backbone in turn, by hand'))
    interleaving = ms['predictor + backbone in turn, by hand'] - ms['predictor'] - \
        ms['backbone at the routed size + switch']
    print(f'{type(model.predictor).__name__} predictor at {p[0]} px (BNs folded); routes '
          f'{"/".join(f"{s:.2f}" for s in share)}; torch {torch.__version__}, {torch.get_num_threads()} threads, '
          f'median of {args.rounds} rounds')
    print(f"{'part':42s} {'ms / image':>10s} {'of model(x)':>12s}")
    for k, v in ms.items():
        print(f'{k:42s} {v:10.3f} {v / total:11.1%}')
    print(f"{'glue (model(x) - its parts)':42s} {total - parts:10.3f} {(total - parts) / total:11.1%}")
    print(f"{'  of which interleaving (in turn - alone)':42s} {interleaving:10.3f} {interleaving / total:11.1%}")


if __name__ == '__main__':
    main()
