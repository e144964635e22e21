""" Static models deployed each way (ONNX Runtime sessions, AOTInductor packages), timing in alternating rounds and
the CSV they write, shared by ``latency.py`` and ``allocator.py``."""
import copy
import csv
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch

import timm_drnet


def timed(fns: Dict[str, Callable[[], object]], rounds: int,
          warm: Optional[Dict[str, Callable[[], object]]] = None) -> Dict[str, List[float]]:
    """ Seconds of each function in each round, the functions timed one after another in every round. ``warm[k]``,
    where given, runs untimed just before each timed call of ``fns[k]`` (a short call of the same model: its
    weights in the caches and its runtime's threads awake, as for a deployment that calls one model over and over),
    so no configuration pays for the one timed before it."""
    warm = warm or {}
    times: Dict[str, List[float]] = {k: [] for k in fns}
    with torch.inference_mode():
        for fn in fns.values():  # warm-up
            fn()
        for _ in range(rounds):
            for k, fn in fns.items():
                time.sleep(0.2)  # the threads the previous configuration left spinning (OpenMP, onnxruntime) go idle
                if k in warm:
                    warm[k]()
                start = time.perf_counter()
                fn()
                times[k].append(time.perf_counter() - start)
    return times


def onnx_static(backbone: torch.nn.Module, size, directory: Path, j: int) -> Tuple[Callable, Callable]:
    """ onnxruntime sessions of a static backbone (TF "SAME" padding fixed and batch norms folded, as in the DRNet
    export) at input ``size``: one with the default options, for a loop over this model alone, and one whose threads
    stop spinning when a run returns, as ``OnnxDRNet``'s, for a mix of models (threads left spinning by one model
    slow the next)."""
    import onnxruntime
    example = torch.randn(2, 3, *size)
    path = directory / f'static_{j}.onnx'
    # prepared and written as export_onnx prepares and writes the DRNet's graphs
    timm_drnet.write_graph(timm_drnet.prepare_for_export(copy.deepcopy(backbone), example), example, path)
    alone = onnxruntime.InferenceSession(str(path), providers=['CPUExecutionProvider'])
    options = onnxruntime.SessionOptions()
    options.add_session_config_entry('session.force_spinning_stop', '1')
    in_mix = onnxruntime.InferenceSession(str(path), options, providers=['CPUExecutionProvider'])
    return (lambda x: alone.run(None, {'images': x})[0]), (lambda x: in_mix.run(None, {'images': x})[0])


def aoti_static(backbone: torch.nn.Module, size, directory: Path, j: int) -> Callable:
    """ The AOTInductor package of a static backbone at input ``size``, prepared and compiled as ``export_aoti``
    prepares and compiles the DRNet's graphs (TF "SAME" padding fixed, batch norms folded, dynamic batch axis)."""
    example = torch.randn(2, 3, *size)
    path = timm_drnet.write_package(timm_drnet.prepare_for_export(copy.deepcopy(backbone), example), example,
                                    directory / f'static_{j}.pt2')
    return torch._inductor.aoti_load_package(str(path))


def write_csv(path: Path, fields: Sequence[str], rows: List[Dict]) -> None:
    """One row per measurement, columns ``fields``."""
    with open(path, 'w', newline='') as f:
        writer = csv.DictWriter(f, fields)
        writer.writeheader()
        writer.writerows(rows)
