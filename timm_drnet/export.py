""" ONNX export of a DRNet, and a runner that routes images through the exported graphs

The predictor and the backbone at each candidate resolution are written as separate graphs (``graphs.py``), and
``OnnxDRNet`` does the routing in Python as ``DRNet`` does in eval mode: predictor scores -> argmax -> each
resolution's images through that resolution's graph -> logits back in input order.

Every graph takes the full-size image batch (dynamic batch axis) and resizes inside the graph with
``TapResize`` (PyTorch's antialiased bilinear kernel as matrix products and strided convolutions, which ONNX
``Resize`` cannot reproduce). A backbone graph holds that resolution's private batch norms folded into the
convolutions, and TF "SAME" padding fixed for its size, in the convolutions' own pads (``fix_same_padding``,
``write_graph``); the predictor graph adds the resolution bias, so a budget set with ``set_budget`` is exported
too. A confidence cascade set on the model (``set_cascade`` / ``set_cascade_budget``) is written to the config,
and the runner then routes by it: each level's graph on the images still going, stopping on the top softmax
probability. For one image, the whole routed forward is also written as one graph (``drnet_single_image.onnx``,
``single_image_graph``), which the runner calls for batches of one.

A ``prepared`` export leaves the resizing to the data pipeline: each graph takes its input already at its own
size (the predictor's small image, backbone j's candidate size), so a pipeline that makes each image at the size
its route needs, in the resize it does anyway, pays no resize in the graphs (``OnnxDRNet.forward_prepared``;
``timm_drnet.data.candidate_transforms`` builds the timm transforms).
"""
import io
import json
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import nn

from .graphs import ExportOutput, ExportRunner, export_config, export_graphs, export_input_size
from .onnx_passes import fuse_pads_into_convs
from .onnx_routing import single_image_graph

if TYPE_CHECKING:
    from .drnet import DRNet

__all__ = ['export_onnx', 'write_graph', 'OnnxDRNet', 'OnnxDRNetOutput', 'ONNX_CONFIG_NAME',
           'SINGLE_IMAGE_NAME']

ONNX_CONFIG_NAME = 'drnet_onnx.json'
SINGLE_IMAGE_NAME = 'drnet_single_image.onnx'
_FORMAT = 'timm-drnet-onnx'
ImagesAt = Callable[[int, np.ndarray], np.ndarray]  # (candidate j, positions in the batch) -> those images at j


def write_graph(net: nn.Module, example: torch.Tensor, path: Union[str, Path], output_name: str = 'logits',
                opset_version: int = 17) -> Any:
    """ Export ``net`` on ``example`` to the ONNX file ``path``: input ``images`` with a dynamic batch axis, output
    ``output_name``, constant pads moved into the convolutions they feed (``fuse_pads_into_convs``). Returns the
    onnx ``ModelProto`` written."""
    import onnx
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # the TorchScript exporter: it needs no onnxscript and handles every op these graphs hold
        warnings.filterwarnings('ignore', 'You are using the legacy TorchScript-based ONNX export')
        warnings.filterwarnings('ignore', 'The feature will be removed')
        warnings.filterwarnings('ignore', 'Constant folding - Only steps=1')  # the pads' flip: fused below
        torch.onnx.export(
            net, (example,), buffer, dynamo=False, opset_version=opset_version, input_names=['images'],
            output_names=[output_name], dynamic_axes={'images': {0: 'batch'}, output_name: {0: 'batch'}},
        )
    graph = onnx.load_model_from_string(buffer.getvalue())
    fuse_pads_into_convs(graph)
    onnx.save(graph, str(path))
    return graph


def export_onnx(
        model: 'DRNet',
        directory: Union[str, Path],
        input_size: Optional[Sequence[int]] = None,
        opset_version: int = 17,
        fold_bn: bool = True,
        single_image: bool = True,
        prepared: bool = False,
) -> Dict[str, Any]:
    """ Write ``predictor.onnx``, ``backbone_{j}.onnx`` per resolution, ``drnet_single_image.onnx`` (if
    ``single_image``) and ``drnet_onnx.json`` to ``directory``.

    Graphs take float32 image batches of ``input_size`` (C, H, W; default the model's) with a dynamic
    batch axis: the predictor graph returns scores (B, m), resolution bias included; backbone graph j the
    logits (B, num_classes) at candidate j. With ``prepared``, each graph takes its batch already resized to its
    own size instead (the predictor's ``(C, p, p)``, p = ``model.predictor_size``; backbone j's candidate size at
    ``input_size``), and no single-image graph is written (a route's image is made after the route).
    ``fold_bn`` folds each resolution's private batch norms into the convolutions. The model's ``cascade``, if set,
    is saved in the config. ``drnet_single_image.onnx`` routes one image in one graph (``single_image_graph``: the
    predictor or the saved cascade, the backbones as ``If`` branches); it holds a second copy of every weight. The
    model is left untouched (export works on CPU float32 copies). Returns the config written to
    ``drnet_onnx.json``, which ``OnnxDRNet`` reads.
    """
    input_size = export_input_size(model, input_size)
    graphs = export_graphs(model, input_size, prepared, fold_bn)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    written = {graph.name: write_graph(graph.module, torch.randn(2, input_size[0], *graph.fed_size),
                                       directory / f'{graph.name}.onnx',
                                       'scores' if graph.name == 'predictor' else 'logits', opset_version)
               for graph in graphs}
    backbones = [f'backbone_{j}' for j in range(model.num_resolutions)]
    single_image = single_image and not prepared
    if single_image:
        import onnx
        onnx.save(single_image_graph(written['predictor'], [written[name] for name in backbones], input_size,
                                     model.num_classes, model.cascade, bool(model.predictor_trained)),
                  str(directory / SINGLE_IMAGE_NAME))
    config = dict(format=_FORMAT, **export_config(
        model, input_size, prepared, predictor='predictor.onnx', backbones=[f'{name}.onnx' for name in backbones],
        single_image=SINGLE_IMAGE_NAME if single_image else None))
    (directory / ONNX_CONFIG_NAME).write_text(json.dumps(config, indent=2))
    return config


OnnxDRNetOutput = ExportOutput  # logits, resolution_index, scores


class OnnxDRNet(ExportRunner):
    """ Routes image batches through graphs written by ``export_onnx``, with onnxruntime.

    Args:
        directory: folder holding ``drnet_onnx.json`` and the graphs.
        providers: onnxruntime execution providers, default ``['CPUExecutionProvider']``.
        session_options: ``onnxruntime.SessionOptions`` for every graph; default: intra-op threads that spin-wait
            within a run but stop when it returns (``session.force_spinning_stop``). A routed call runs two or more
            graphs in turn: threads left spinning by one graph take the cores from the next, threads that never
            spin wake up late for every op; threads that stop spinning between runs do neither (Lite0's 112 then
            224 px graphs, one image, 2-core CPU: 8.95 / 6.83-9.47 / 5.29-7.35 ms; docs/results.md).
        single_image: call the export's single-image graph (``drnet_single_image.onnx``) for batches of one, while
            the routing is the one it holds (the predictor, or the saved cascade). ``False`` leaves it unloaded (a
            session holding every weight once more).

    Routes by the predictor graph, or by the confidence cascade the export carries (``cascade``; change it with
    ``set_cascade``); a model exported with an untrained predictor sends every image to the full resolution.

    A ``prepared`` export (``export_onnx(prepared=True)``) takes each graph's input at its own size, made by the data
    pipeline: ``forward_prepared`` (or ``route`` the small images, ``predictor_input_size``, then ``classify`` each
    image made at the size of its route, ``backbone_input_sizes``); ``forward_routed`` needs a full-size export.
    """

    def __init__(self, directory: Union[str, Path], providers: Optional[Sequence[str]] = None,
                 session_options: Optional[Any] = None, single_image: bool = True):
        try:
            import onnxruntime
        except ImportError as e:
            raise ImportError('OnnxDRNet needs onnxruntime: pip install "timm-drnet[onnx]"') from e
        super().__init__(directory, ONNX_CONFIG_NAME, _FORMAT, 'timm_drnet.export_onnx')
        directory = self.directory
        providers = list(providers or ['CPUExecutionProvider'])
        if session_options is None:
            session_options = onnxruntime.SessionOptions()
            session_options.add_session_config_entry('session.force_spinning_stop', '1')
        self.predictor = onnxruntime.InferenceSession(str(directory / self.config['predictor']), session_options,
                                                      providers=providers)
        self.backbones = [onnxruntime.InferenceSession(str(directory / name), session_options, providers=providers)
                          for name in self.config['backbones']]
        single = self.config.get('single_image') if single_image else None  # older exports have none
        self.single_image = onnxruntime.InferenceSession(str(directory / single), session_options,
                                                         providers=providers) if single else None
        self._single_routing = self.cascade  # the routing the single-image graph holds

    @staticmethod
    def _check(images: np.ndarray, shape: Tuple[int, ...], graph: str) -> np.ndarray:
        images = np.asarray(images)
        if images.ndim != 4 or tuple(images.shape[1:]) != tuple(shape):
            raise ValueError(f'The exported DRNet\'s {graph} takes image batches shaped '
                             f'(B, {", ".join(map(str, shape))}), got {images.shape}')
        if not np.issubdtype(images.dtype, np.floating):
            raise TypeError(f'Expected normalised floating point images, got {images.dtype}')
        return np.ascontiguousarray(images, dtype=np.float32)

    def route(self, images: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """ The predictor graph's route (B,) and scores (B, m), resolution bias included, for images shaped
        ``predictor_input_size``; an untrained predictor sends every image to candidate 0, as ``DRNet`` does."""
        return self._route(self._check(images, self.predictor_input_size, 'predictor'))

    def _route(self, x: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        if not self.predictor_trained:
            index = np.zeros(x.shape[0], np.int64)
            return index, np.eye(self.num_resolutions, dtype=np.float32)[index]
        scores = self.predictor.run(None, {'images': x})[0]
        return scores.argmax(1), scores

    def classify(self, images: np.ndarray, index: int) -> np.ndarray:
        """Logits (B, num_classes) of backbone graph ``index`` on images shaped ``backbone_input_sizes[index]``."""
        self._check_index(index)
        x = self._check(images, self.backbone_input_sizes[index], f'backbone {index}')
        return self.backbones[index].run(None, {'images': x})[0]

    def forward_routed(self, images: np.ndarray) -> OnnxDRNetOutput:
        """Logits plus the chosen resolution and predictor scores of each image."""
        self._check_full_size()
        x = self._check(images, self.input_size, 'routed forward')
        if x.shape[0] == 1 and self.single_image is not None and self.cascade == self._single_routing:
            return OnnxDRNetOutput(*self.single_image.run(None, {'images': x}))
        return self._routed(x, lambda j, chosen: x if len(chosen) == len(x) else x[chosen])

    def forward_prepared(self, small: np.ndarray, images_at: ImagesAt) -> OnnxDRNetOutput:
        """ Routed forward on images the data pipeline makes: ``small`` at ``predictor_input_size`` for the
        predictor (under a cascade, only its batch size counts), then ``images_at(j, chosen)``, the images at
        positions ``chosen`` made at ``backbone_input_sizes[j]``, for each resolution j the routing runs."""
        small = self._check(small, self.predictor_input_size, 'predictor')
        return self._routed(small, images_at)

    def _routed(self, small: np.ndarray, images_at: ImagesAt) -> OnnxDRNetOutput:
        """Predictor routing (``small``: the predictor's input, checked) or the cascade, each group through
        ``classify``."""
        if small.shape[0] == 0:
            return OnnxDRNetOutput(np.zeros((0, self.num_classes), np.float32), np.zeros(0, np.int64),
                                   np.zeros((0, self.num_resolutions), np.float32))
        if self.cascade is not None:
            return self._cascade(small.shape[0], images_at)
        index, scores = self._route(small)
        logits = np.empty((len(index), self.num_classes), dtype=np.float32)
        for j in np.unique(index):
            chosen = np.flatnonzero(index == j)
            logits[chosen] = self.classify(images_at(int(j), chosen), j)
        return OnnxDRNetOutput(logits, index, scores)

    def _cascade(self, n: int, images_at: ImagesAt) -> OnnxDRNetOutput:
        """Each level's graph on the images still going; an image stops once its top class probability reaches
        the threshold, the last level answers for the rest."""
        levels, threshold = self.cascade
        logits = np.empty((n, self.num_classes), dtype=np.float32)
        index = np.full(n, levels[-1], dtype=np.int64)
        going = np.arange(n)
        for k, j in enumerate(levels):
            out = self.classify(images_at(j, going), j)
            if k == len(levels) - 1:
                stop = np.ones(len(going), dtype=bool)
            else:
                shifted = out - out.max(1, keepdims=True)
                stop = 1. / np.exp(shifted).sum(1) >= threshold  # top softmax probability
            logits[going[stop]] = out[stop]
            index[going[stop]] = j
            going = going[~stop]
            if not len(going):
                break
        return OnnxDRNetOutput(logits, index, np.eye(self.num_resolutions, dtype=np.float32)[index])

    def __call__(self, images: np.ndarray) -> np.ndarray:
        """Logits (B, num_classes), each image at its predicted resolution."""
        return self.forward_routed(images).logits
