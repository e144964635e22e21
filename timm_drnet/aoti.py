""" AOTInductor export of a DRNet, and a runner that routes images through the compiled packages

``torch.compile`` checks its guards (about 200 for Lite0's predictor) and goes through its Python wrapper on every
call, and a routed call makes two or more such calls, each one after another graph has cooled the caches: at batch 1
on a CPU that costs a routed call about 0.3-0.5 ms beside a static model's one call (docs/deployment.md).
AOTInductor compiles each graph ahead of time into a shared library that is called without guards; ``AotiDRNet``
routes between them as ``OnnxDRNet`` does between its graphs, with torch tensors and the routing steps ``DRNet`` uses
(``split_run``, ``cascade_route``). It needs only torch at run time (no timm, no model code), and a C++ compiler at
export time.

``export_aoti`` writes the graphs of ``graphs.py`` (predictor scores with the resolution bias; each resolution's
backbone with its private batch norms folded; full-size or ``prepared``) as one ``.pt2`` package each, with a
dynamic batch axis (``write_package``), plus ``drnet_aoti.json``. A package runs only under the torch version that
wrote it.
"""
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, Optional, Sequence, Tuple, Union

import torch
from torch import nn
import torch.nn.functional as F

from .graphs import ExportOutput, ExportRunner, export_config, export_graphs, export_input_size
from .routing import cascade_route, check_prepared, split_run

if TYPE_CHECKING:
    from .drnet import DRNet

__all__ = ['export_aoti', 'write_package', 'AotiDRNet', 'AotiDRNetOutput', 'AOTI_CONFIG_NAME']

AOTI_CONFIG_NAME = 'drnet_aoti.json'
_FORMAT = 'timm-drnet-aoti'
ImagesAt = Callable[[int, torch.Tensor], torch.Tensor]  # (candidate j, positions in the batch) -> those images at j


def write_package(net: nn.Module, example: torch.Tensor, path: Union[str, Path], max_batch_size: int = 1024,
                  inductor_configs: Optional[Dict[str, Any]] = None) -> Path:
    """ ``torch.export`` ``net`` on ``example`` with a dynamic batch axis (1 to ``max_batch_size``) and compile it with
    AOTInductor into the package ``path`` (load it with ``torch._inductor.aoti_load_package``). Returns ``path``."""
    if max_batch_size < 2:
        raise ValueError(f'max_batch_size must be >= 2 (the batch axis is dynamic), got {max_batch_size}')
    batch = torch.export.Dim('batch', min=1, max=max_batch_size)
    with torch.no_grad():
        program = torch.export.export(net, (example,), dynamic_shapes=({0: batch},))
    torch._inductor.aoti_compile_and_package(program, package_path=str(path), inductor_configs=inductor_configs)
    return Path(path)


def export_aoti(
        model: 'DRNet',
        directory: Union[str, Path],
        input_size: Optional[Sequence[int]] = None,
        prepared: bool = False,
        fold_bn: bool = True,
        max_batch_size: int = 1024,
        inductor_configs: Optional[Dict[str, Any]] = None,
) -> Dict[str, Any]:
    """ Compile ``predictor.pt2`` and ``backbone_{j}.pt2`` per resolution with AOTInductor into ``directory``, and
    write ``drnet_aoti.json``, which ``AotiDRNet`` reads.

    The graphs are ``export_onnx``'s: float32 CPU image batches of ``input_size`` (C, H, W; default the model's), or
    with ``prepared`` each at its own size; the predictor returns scores (B, m), resolution bias included, backbone j
    the logits (B, num_classes) at candidate j. The batch axis is dynamic, from 1 to ``max_batch_size``.
    ``inductor_configs`` go to ``torch._inductor.aoti_compile_and_package``. The model's ``cascade``, if set, is saved
    in the config. The model is left untouched. Returns the config written.
    """
    input_size = export_input_size(model, input_size)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for graph in export_graphs(model, input_size, prepared, fold_bn):
        write_package(graph.module, torch.randn(2, input_size[0], *graph.fed_size), directory / f'{graph.name}.pt2',
                      max_batch_size, inductor_configs)
    config = dict(format=_FORMAT, torch_version=torch.__version__, max_batch_size=max_batch_size, **export_config(
        model, input_size, prepared, predictor='predictor.pt2',
        backbones=[f'backbone_{j}.pt2' for j in range(model.num_resolutions)]))
    (directory / AOTI_CONFIG_NAME).write_text(json.dumps(config, indent=2))
    return config


AotiDRNetOutput = ExportOutput  # logits, resolution_index, scores


class AotiDRNet(ExportRunner):
    """ Routes image batches (CPU float32 tensors) through the packages ``export_aoti`` wrote.

    Routes by the predictor package, or by the confidence cascade the export carries (``cascade``; change it with
    ``set_cascade``); a model exported with an untrained predictor sends every image to the full resolution. A
    ``prepared`` export takes each graph's input at its own size, made by the data pipeline: ``forward_prepared``
    (or ``route`` the small images, ``predictor_input_size``, then ``classify`` each image made at the size of its
    route, ``backbone_input_sizes``); ``forward_routed`` needs a full-size export.
    """

    def __init__(self, directory: Union[str, Path]):
        super().__init__(directory, AOTI_CONFIG_NAME, _FORMAT, 'timm_drnet.export_aoti')
        self.max_batch_size = int(self.config['max_batch_size'])
        self.predictor = self._load(self.directory / self.config['predictor'])
        self.backbones = [self._load(self.directory / name) for name in self.config['backbones']]

    def _load(self, path: Path) -> Callable[[torch.Tensor], torch.Tensor]:
        if not path.is_file():
            raise FileNotFoundError(f'{path} is missing: export the model again with timm_drnet.export_aoti')
        try:
            return torch._inductor.aoti_load_package(str(path))
        except RuntimeError as e:
            raise RuntimeError(f'Cannot load the AOTInductor package {path}: it was compiled by torch '
                               f'{self.config["torch_version"]}, this is torch {torch.__version__} (a package runs '
                               f'under the torch that wrote it; export again)') from e

    def _check(self, images: torch.Tensor, shape: Tuple[int, ...], what: str) -> torch.Tensor:
        check_prepared(images, (None, *shape), f"The exported DRNet's {what}")
        if images.dtype != torch.float32 or images.device.type != 'cpu':
            raise TypeError(f"The exported DRNet's {what} must be float32 on the CPU (as exported), got "
                            f'{images.dtype} on {images.device}')
        if images.shape[0] > self.max_batch_size:
            raise ValueError(f"The exported DRNet's {what}: batch of {images.shape[0]} over the "
                             f'max_batch_size {self.max_batch_size} it was exported for')
        return images.contiguous()

    def route(self, images: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """ The predictor package's route (B,) and scores (B, m), resolution bias included, for images shaped
        ``predictor_input_size``; an untrained predictor sends every image to candidate 0, as ``DRNet`` does."""
        return self._route(self._check(images, self.predictor_input_size, 'predictor input'))

    def _route(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        if not self.predictor_trained:
            index = torch.zeros(x.shape[0], dtype=torch.long)
            return index, F.one_hot(index, self.num_resolutions).float()
        scores = self.predictor(x)
        return scores.argmax(1), scores

    def classify(self, images: torch.Tensor, index: int) -> torch.Tensor:
        """Logits (B, num_classes) of backbone package ``index`` on images shaped ``backbone_input_sizes[index]``."""
        self._check_index(index)
        return self.backbones[index](self._check(images, self.backbone_input_sizes[index], f'backbone {index} input'))

    def forward_routed(self, images: torch.Tensor) -> AotiDRNetOutput:
        """Logits plus the chosen resolution and predictor scores of each image."""
        self._check_full_size()
        x = self._check(images, self.input_size, 'routed forward input')
        return self._routed(x, lambda j, chosen: x if len(chosen) == len(x) else x.index_select(0, chosen))

    def forward_prepared(self, small: torch.Tensor, images_at: ImagesAt) -> AotiDRNetOutput:
        """ Routed forward on images the data pipeline makes: ``small`` at ``predictor_input_size`` for the
        predictor (under a cascade, only its batch size counts), then ``images_at(j, chosen)``, the images at
        positions ``chosen`` (a tensor, ascending) made at ``backbone_input_sizes[j]``, for each resolution j the
        routing runs."""
        small = self._check(small, self.predictor_input_size, 'predictor input')
        return self._routed(small, lambda j, chosen: self._check(
            images_at(j, chosen), self.backbone_input_sizes[j], f'backbone {j} input'))

    def _routed(self, small: torch.Tensor, images_at: ImagesAt) -> AotiDRNetOutput:
        """Predictor routing (``small``: the predictor's input, checked) or the cascade, each resolution's images
        through its package, the outputs back in input order."""
        positions = torch.arange(small.shape[0])

        def run(chosen: torch.Tensor, j: int) -> torch.Tensor:
            return self.backbones[j](images_at(j, chosen))
        if not len(positions):
            return AotiDRNetOutput(torch.zeros(0, self.num_classes), torch.zeros(0, dtype=torch.long),
                                   torch.zeros(0, self.num_resolutions))
        if self.cascade is not None:
            logits, index, _ = cascade_route(positions, self.cascade, run, (0.,) * self.num_resolutions)
            return AotiDRNetOutput(logits, index, F.one_hot(index, self.num_resolutions).float())
        index, scores = self._route(small)
        counts = torch.bincount(index, minlength=self.num_resolutions).tolist()
        return AotiDRNetOutput(split_run(positions, index, counts, run), index, scores)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """Logits (B, num_classes), each image at its predicted resolution."""
        return self.forward_routed(images).logits
