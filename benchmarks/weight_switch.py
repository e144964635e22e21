""" What switching between models costs on a CPU, with the computation held fixed.

A DRNet deployed in ONNX Runtime runs a graph per resolution, each with its own weights (the private batch norms
folded into the convolutions): routed images switch graphs from call to call. A loop over one static model never
does. This script times one image through the same graph, Lite0 at 112 px with its real ImageNet weights, in two
ways, interleaved in rounds: the same session on every call, and two sessions of that graph (the same file, so the
same work, but each with its own memory: the weights, 18.6 MB, and the buffers) called in turn. The gap is what
the second session's memory costs in the caches (an ad-hoc check found the same gap with one thread per session,
and with a thread pool shared by both: not the threads). Eager PyTorch is timed the same way: the model, and the
model with a deep copy.

    python benchmarks/weight_switch.py
"""
import argparse
import copy
import statistics
import tempfile
from pathlib import Path

import numpy as np
import torch

from timm_drnet.pretrained import efficientnet_lite0_pretrained
from latency import timed

parser = argparse.ArgumentParser(description='one model on every call against two copies called in turn')
parser.add_argument('--size', type=int, default=112, help='input side in px')
parser.add_argument('--calls', type=int, default=40, help='calls per round')
parser.add_argument('--rounds', type=int, default=11, help='rounds (median)')


def main() -> None:
    args = parser.parse_args()
    import onnxruntime
    torch.manual_seed(0)
    model = efficientnet_lite0_pretrained()
    x = torch.randn(1, 3, args.size, args.size)
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / 'lite0.onnx')
        torch.onnx.export(model, (x,), path, dynamo=False, opset_version=17, input_names=['images'],
                          output_names=['logits'])
        options = onnxruntime.SessionOptions()
        options.add_session_config_entry('session.force_spinning_stop', '1')  # as OnnxDRNet's sessions
        sessions = [onnxruntime.InferenceSession(path, options, providers=['CPUExecutionProvider']) for _ in range(2)]
    feed = {'images': x.numpy()}
    copy_of_model = copy.deepcopy(model)
    fns = {
        'onnx, one session': [lambda: sessions[0].run(None, feed)],
        'onnx, two sessions in turn': [lambda: sessions[0].run(None, feed), lambda: sessions[1].run(None, feed)],
        'eager, one model': [lambda: model(x)],
        'eager, model and copy in turn': [lambda: model(x), lambda: copy_of_model(x)],
    }
    runs = {k: (lambda seq=seq: [seq[i % len(seq)]() for i in range(args.calls)]) for k, seq in fns.items()}
    times = {k: [1e3 * t / args.calls for t in v] for k, v in timed(runs, args.rounds).items()}  # ms per call
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f'tf_efficientnet_lite0 at {args.size} px, one image, {torch.get_num_threads()} threads; ms per call, '
          f'median of {args.rounds} rounds of {args.calls} calls (p10-p90)')
    for k, v in times.items():
        print(f'{k:32s} {med[k]:7.3f}  ({np.percentile(v, 10):.3f}-{np.percentile(v, 90):.3f})')
    for path in ('onnx', 'eager'):
        one, two = [med[k] for k in fns if k.startswith(path)]
        print(f'{path}: switching copies costs {two - one:+.3f} ms per call ({two / one:.3f}x)')


if __name__ == '__main__':
    main()
