""" The graphs every DRNet export writes, and the config that describes them

A static graph cannot send each image to its own resolution, so an export (ONNX, ``export_onnx``; AOTInductor,
``export_aoti``) writes the predictor and the backbone at each candidate resolution as separate graphs, and its
runner routes between them as ``DRNet`` does in eval mode. Each graph is a CPU float32 copy: the predictor adds the
resolution bias (a budget set with ``set_budget`` is exported too); backbone j holds resolution j's private batch
norms, folded into the convolutions, and TF "SAME" padding fixed for its size. A full-size graph takes the full-size
batch and resizes inside (``TapResize``); a ``prepared`` one takes its input already at its own size.
"""
import copy
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, NamedTuple, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from .layers import TapResize, fix_same_padding, fold_batch_norms, select_resolution_bn
from .routing import Cascade, check_cascade

if TYPE_CHECKING:
    from .drnet import DRNet

__all__ = ['ExportGraph', 'ExportOutput', 'ExportRunner', 'ResizedGraph', 'export_config', 'export_graphs',
           'export_input_size', 'prepare_for_export', 'read_export_config']


class ResizedGraph(nn.Module):
    """Resize from the input size, run ``net``, add ``bias`` (the predictor's resolution bias) if given."""

    def __init__(self, resize: nn.Module, net: nn.Module, bias: Optional[torch.Tensor] = None):
        super().__init__()
        self.resize = resize
        self.net = net
        self.register_buffer('bias', bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.net(self.resize(x))
        return x if self.bias is None else x + self.bias


class ExportGraph(NamedTuple):
    """One graph to write: its module and the (H, W) of the images it is fed."""
    name: str  # 'predictor', 'backbone_{j}'
    module: nn.Module
    fed_size: Tuple[int, int]


class ExportOutput(NamedTuple):
    """Logits plus the routing record of one call of an export's runner (numpy arrays for ``OnnxDRNet``, tensors for
    ``AotiDRNet``)."""
    logits: Any  # (B, num_classes), in the input order
    resolution_index: Any  # (B,) chosen candidate per image (0 = largest)
    scores: Any  # (B, m) predictor scores, resolution bias included; one-hot under a cascade


def prepare_for_export(net: nn.Module, example: torch.Tensor, fold_bn: bool = True) -> nn.Module:
    """ ``net`` as a graph of ``example``'s size is written, in place: CPU float32, eval mode, TF "SAME" padding fixed
    for that size (``fix_same_padding``) and, if ``fold_bn``, batch norms folded into their convolutions."""
    net = net.float().cpu().eval()
    fix_same_padding(net, example)
    return fold_batch_norms(net, example) if fold_bn else net


def export_input_size(model: 'DRNet', input_size: Optional[Sequence[int]]) -> Tuple[int, int, int]:
    """``input_size`` (C, H, W; default the model's) as ints, checked against what the model takes."""
    input_size = tuple(int(s) for s in (input_size or model.default_input_size()))
    if len(input_size) != 3:
        raise ValueError(f'input_size must be (C, H, W), got {input_size}')
    model.check_input(torch.randn(2, *input_size))
    return input_size


def export_graphs(model: 'DRNet', input_size: Tuple[int, int, int], prepared: bool = False,
                  fold_bn: bool = True) -> List[ExportGraph]:
    """ The predictor's graph (scores, resolution bias included) and backbone j's (logits at candidate j), for image
    batches of ``input_size``, or with ``prepared`` each at its own size. The model is left untouched."""
    in_chans, in_size = input_size[0], tuple(input_size[1:])
    predictor_size = (model.predictor_size,) * 2
    nets = [('predictor', copy.deepcopy(model.predictor), predictor_size,
             model.resolution_bias.detach().float().cpu().clone())]
    nets += [(f'backbone_{j}', select_resolution_bn(copy.deepcopy(model.backbone), j), size, None)
             for j, size in enumerate(model.candidate_sizes(*in_size))]
    graphs = []
    for name, net, size, bias in nets:
        fed = size if prepared else in_size
        net = prepare_for_export(net, torch.randn(2, in_chans, *size), fold_bn)
        graphs.append(ExportGraph(name, ResizedGraph(TapResize(fed, size, in_chans), net, bias).eval(), fed))
    return graphs


def export_config(model: 'DRNet', input_size: Tuple[int, int, int], prepared: bool, **files: Any) -> Dict[str, Any]:
    """ What a runner needs besides the graphs: sizes, resolutions, classes, the saved cascade, whether the predictor
    is trained, the cost table and the input normalisation; ``files`` name the graphs (format-specific)."""
    sizes = model.candidate_sizes(*input_size[1:])
    try:
        cost_table = model.cost_table(input_size).to_dict()
    except KeyError:  # a measured (ms) table exists for other input sizes only
        cost_table = None
    pretrained_cfg = getattr(model, 'pretrained_cfg', None) or {}
    return dict(
        input_size=list(input_size),
        resolutions=list(model.resolutions),
        candidate_sizes=[list(s) for s in sizes],
        num_classes=model.num_classes,
        **files,
        prepared=prepared,  # True: each graph's input at its own size (predictor_input_size, candidate_sizes)
        predictor_input_size=[input_size[0], model.predictor_size, model.predictor_size],
        cost_table=cost_table,
        cascade=model.cascade._asdict() if model.cascade is not None else None,
        predictor_trained=bool(model.predictor_trained),  # False: every image at candidate 0, as the model routes
        mean=list(pretrained_cfg['mean']) if 'mean' in pretrained_cfg else None,  # input normalisation
        std=list(pretrained_cfg['std']) if 'std' in pretrained_cfg else None,
    )


def read_export_config(directory: Path, name: str, format_name: str, writer: str) -> Dict[str, Any]:
    """ The config file ``name`` in ``directory``, checked to be ``format_name``'s; ``writer`` names the function
    that writes it, for the error."""
    config_file = directory / name
    if not config_file.is_file():
        raise FileNotFoundError(f'No {name} in {directory}: write one with {writer}')
    config = json.loads(config_file.read_text())
    if config.get('format') != format_name:
        raise ValueError(f'{config_file} is not a {format_name} export config')
    return config


class ExportRunner:
    """ What every export's runner reads from its config: the input sizes of its graphs, the classes, and the routing
    (the saved cascade, whether the predictor is trained). Subclasses load the graphs named by ``config``."""

    def __init__(self, directory: Union[str, Path], config_name: str, format_name: str, writer: str):
        self.directory = Path(directory)
        self.config = read_export_config(self.directory, config_name, format_name, writer)
        self.input_size = tuple(self.config['input_size'])
        self.num_classes = int(self.config['num_classes'])
        self.prepared = bool(self.config.get('prepared', False))  # older ONNX exports are full-size
        channels = self.input_size[0]
        self.predictor_input_size = tuple(self.config['predictor_input_size']) if self.prepared else self.input_size
        self.backbone_input_sizes = [(channels, *s) if self.prepared else self.input_size
                                     for s in self.config['candidate_sizes']]
        self.predictor_trained = bool(self.config.get('predictor_trained', True))
        saved = self.config.get('cascade')
        self.cascade: Optional[Cascade] = None
        self.set_cascade(*((saved['threshold'], saved['levels']) if saved else (None,)))

    @property
    def num_resolutions(self) -> int:
        return len(self.config['backbones'])

    def set_cascade(self, threshold: Optional[float], levels: Optional[Sequence[int]] = None) -> None:
        """Route by confidence cascade (as ``DRNet.set_cascade``); ``None`` routes by the predictor graph."""
        self.cascade = None if threshold is None else check_cascade(threshold, levels, self.num_resolutions)

    def _check_index(self, index: int) -> None:
        if not 0 <= int(index) < self.num_resolutions:
            raise ValueError(f'index must be a candidate in [0, {self.num_resolutions}), got {index}')

    def _check_full_size(self) -> None:
        if self.prepared:
            raise ValueError('This export takes each graph\'s input at its own size (prepared=True): call '
                             'forward_prepared(), or route() then classify()')
