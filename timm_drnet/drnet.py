""" Dynamic Resolution Network

DRNet (Zhu et al., NeurIPS 2021): a tiny predictor looks at each image and picks one of m candidate
resolutions; one timm backbone, whose every batch norm has m resolution-private branches, classifies
the image at that resolution. The batch is split by chosen resolution so each image is computed at its
resolution only, and the outputs go back in the original order, multiplied by the straight-through
hard selection weight (exactly 1 in the forward pass) so the predictor learns through the classifier.

That gradient only sees the chosen resolution's logits (``predictor_grad='routed'``, the default):
d loss / d hard_j = sum_k (p_k - y_k) z_k for the chosen j alone, which favours branches whose logits are not
yet confident, so with the FLOPs cap alone routing can drift to the smallest resolution. With
``predictor_grad='all'`` each training image also runs, without gradient and with the backbone in eval mode, at
every other resolution, and those logits enter as hard_j x z_j (hard_j = 0: outputs, BN statistics and backbone
gradients are unchanged), so the predictor's gradient compares every resolution (paper eq. 4-5), at one extra
forward per image and other resolution in training.

Every routed forward goes through one dispatch (``_routed``; ``resolution_index=j`` runs candidate j alone): a
confidence cascade when one is set (eval), the full resolution for every image while the predictor has never been
trained (eval), else the predictor. ``forward_prepared`` makes the same choice in eval on images the data pipeline
made at each candidate's size, with the same split and cascade steps. Spatial
outputs (unpooled features, intermediates) of images routed to a smaller resolution are resampled onto the
full-resolution grid, so a batch of mixed resolutions stacks; logits are always the backbone's own.
"""
import warnings
from functools import partial
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple, Union

import torch
from torch import nn
import torch.nn.functional as F

from .backbone import create_backbone, fit_size_multiple
from .compile import CompiledMethod, compile_methods
from .costs import CostTable, CostTables, count_cost_table, eval_mode
from .layers import (
    PREDICTORS, checkpoint_with_batch_stats, convert_resolution_bn, create_predictor, guard_single_value_norms,
    resolution_norms, unused_branch_anchor,
)
from .routing import (
    PREDICTOR_GRADS, FullGrid, ImagesAt, Run, candidate_sizes, cascade_route, check_cascade, check_images,
    check_prepared, check_resolutions,
    gumbel_straight_through, hard_weighted, other_resolution_outputs, resize, split_run, tree_map,
)

__all__ = ['DRNet', 'DRNetOutput', 'complete_state_dict']


class DRNetOutput(NamedTuple):
    """Logits plus the routing record of one forward."""
    logits: torch.Tensor  # (B, num_classes), in the input order
    resolution_index: torch.Tensor  # (B,) chosen candidate per image (0 = largest)
    probs: torch.Tensor  # (B, m) predictor softmax (resolution bias included); one-hot when the predictor did not run
    hard: torch.Tensor  # (B, m) one-hot selection with straight-through gradient
    cost: torch.Tensor  # (B,) cost of each image in ``cost_unit``: predictor included where it ran; under a
    # cascade the sum of the levels the image ran


_UNTRAINED = ('This DRNet\'s predictor was never trained: every image runs at full resolution (the backbone\'s own '
              'accuracy and cost). Train it (train.py stage 2), route by confidence with set_cascade / '
              'timm_drnet.set_cascade_budget, or call mark_predictor_trained() if its weights are trained.')


def complete_state_dict(state_dict: Dict[str, Any], prefix: str = '', trained: bool = True) -> Dict[str, Any]:
    """ Add, in place, what a DRNet checkpoint of an earlier version lacks: ``predictor_trained`` (``trained``: such
    checkpoints routed by their predictor, unless known to be stage 1's). Returns ``state_dict``."""
    state_dict.setdefault(prefix + 'predictor_trained', torch.tensor(trained))
    return state_dict


def _check_settings(predictor: str, tau: float, predictor_grad: str) -> None:
    if predictor not in PREDICTORS:
        raise ValueError(f"Unknown predictor '{predictor}', choose one of {sorted(PREDICTORS)}.")
    if tau <= 0:
        raise ValueError(f'Gumbel temperature tau must be > 0, got {tau}')
    if predictor_grad not in PREDICTOR_GRADS:
        raise ValueError(f"Unknown predictor_grad '{predictor_grad}', choose one of {PREDICTOR_GRADS}.")


class DRNet(nn.Module):
    """ Dynamic-resolution wrapper around any timm classifier.

    Args:
        backbone: timm model name (optionally with pretrained tag) or a built timm classifier.
        resolutions: candidate scales of the input size, largest first, e.g. (1.0, 0.75, 0.5).
        predictor: 'resnet' (the paper's, 128 px), 'mobile' (inverted residual, 64 px), 'backbone' (a copy
            of the backbone's first three feature stages with their pretrained weights, 64 px) or 'stem' (its
            first feature stage only, for batch-1 CPU serving, 64 px).
        predictor_size: side of the predictor's input; defaults to the predictor's own (128 / 64).
        num_classes: classifier outputs.
        in_chans: image channels.
        tau: Gumbel-softmax temperature in training.
        eval_gumbel: also sample Gumbel noise in eval mode (the official MindSpore eval); default argmax.
        predictor_grad: the predictor's training gradient: 'routed' (the chosen resolution's logits only) or 'all'
            (every resolution's, see the module docstring).
        private_bn: give every BN one private branch per resolution (the paper's RA-BN); False shares
            the backbone's BNs across resolutions (the paper's Table 1 ablation).
        private_ln: with ``private_bn``, also private layer / group norms (their affine weights; beyond the paper).
        backbone_pretrained: load the backbone's timm weights (copied into every BN branch).
        backbone_pretrained_cfg_overlay: timm ``pretrained_cfg_overlay`` for the backbone (e.g. a weights file).
        cost_tables: measured cost tables to install (``CostTable`` or its ``to_dict()``), e.g. the latency table
            a training run stored in config.json, which is not part of the state dict.
        **backbone_kwargs: further timm ``create_model`` arguments for the backbone (drop_rate, ...).
    """

    def __init__(
            self, backbone: Union[str, nn.Module] = 'resnet50', resolutions: Sequence[float] = (1.0, 0.75, 0.5),
            predictor: str = 'resnet', predictor_size: Optional[int] = None, num_classes: int = 1000,
            in_chans: int = 3, tau: float = 1.0, eval_gumbel: bool = False, predictor_grad: str = 'routed',
            private_bn: bool = True, private_ln: bool = False, backbone_pretrained: bool = False,
            backbone_pretrained_cfg_overlay: Optional[Dict] = None,
            cost_tables: Optional[Sequence[Union[CostTable, Dict]]] = None, **backbone_kwargs,
    ):
        super().__init__()
        self.resolutions = check_resolutions(resolutions)
        _check_settings(predictor, tau, predictor_grad)
        self.backbone_name = backbone if isinstance(backbone, str) else \
            getattr(backbone, 'pretrained_cfg', {}).get('architecture', type(backbone).__name__)
        if isinstance(backbone, str):
            backbone = create_backbone(backbone, backbone_pretrained, backbone_pretrained_cfg_overlay,
                                       num_classes=num_classes, in_chans=in_chans, **backbone_kwargs)
        # candidate sizes are snapped to a multiple the backbone takes (patch size, stride): checked here, once
        self.size_multiple = fit_size_multiple(backbone, self.backbone_name, self.resolutions)
        self.predictor_name = predictor
        predictor_net = create_predictor(predictor, len(self.resolutions), in_chans=in_chans, backbone=backbone)
        self.predictor = guard_single_value_norms(predictor_net)
        self.predictor_size = int(predictor_size or self.predictor.default_input_size)
        self.private_bn, self.private_ln = private_bn, private_ln
        self.backbone = guard_single_value_norms(
            convert_resolution_bn(backbone, len(self.resolutions), private_ln) if private_bn else backbone)
        self.num_classes, self.in_chans, self.num_features = self.backbone.num_classes, in_chans, backbone.num_features
        self.maps_last = getattr(backbone, 'output_fmt', 'NCHW') == 'NHWC'  # its final maps are (B, H, W, C) (Swin)
        self.head_hidden_size = getattr(self.backbone, 'head_hidden_size', self.num_features)
        if hasattr(self.backbone, 'feature_info'):
            self.feature_info = [dict(f, module=f'backbone.{f["module"]}') for f in self.backbone.feature_info]

        # per-resolution logit offsets, shifted by set_budget(); zero = the trained predictor as is
        self.register_buffer('resolution_bias', torch.zeros(len(self.resolutions)))
        # False until a routed training step updates the predictor: until then eval routes every image at 1x
        self.register_buffer('predictor_trained', torch.tensor(False))
        self.tau = float(tau)
        self.eval_gumbel = eval_gumbel
        self.predictor_grad = predictor_grad
        self.cascade = None  # confidence-cascade routing in eval, see set_cascade()
        self.grad_checkpointing = False
        self._norms = resolution_norms(self.backbone)
        self._costs = CostTables()
        self._compiled: Dict[str, CompiledMethod] = {}  # filled by compile_for_inference()
        self._grid = FullGrid()  # where spatial outputs of smaller candidates are resampled to
        self._warned_untrained = False
        for table in cost_tables or ():
            self.set_cost_table(table if isinstance(table, CostTable) else CostTable.from_dict(table))

    @property
    def num_resolutions(self) -> int:
        return len(self.resolutions)

    @property
    def cost_unit(self) -> str:
        """'gmacs' (counted), or the unit of the installed measured cost tables ('ms')."""
        return self._costs.unit

    def drnet_args(self) -> Dict[str, Any]:
        """The settings needed to rebuild this model (config.json ``model_args``), measured cost tables included."""
        args = dict(backbone=self.backbone_name, resolutions=list(self.resolutions), predictor=self.predictor_name,
                    predictor_size=self.predictor_size, tau=self.tau, eval_gumbel=self.eval_gumbel,
                    predictor_grad=self.predictor_grad, private_bn=self.private_bn, private_ln=self.private_ln)
        if self._costs.measured():
            args['cost_tables'] = [table.to_dict() for table in self._costs.measured()]
        return args

    def candidate_sizes(self, height: int, width: int) -> List[Tuple[int, int]]:
        """(H, W) of every candidate for an input of ``height`` x ``width``."""
        return candidate_sizes(self.resolutions, height, width, self.size_multiple)

    def check_input(self, x: torch.Tensor) -> None:
        """Raise a clear error for inputs the model cannot take (type, rank, channels, dtype, NaN / Inf, size)."""
        check_images(x, self.in_chans, self.candidate_sizes)

    def set_resolution(self, index: int) -> None:
        """Route every private norm of the backbone to branch ``index``."""
        if not 0 <= index < self.num_resolutions:
            raise IndexError(f'resolution_index {index} out of range for {self.num_resolutions} resolutions')
        for norm in self._norms:
            # a plain attribute: skip nn.Module.__setattr__'s registry checks (60 us per call on Lite0's 49 norms)
            object.__setattr__(norm, 'active', index)

    def _warn_untrained(self, stacklevel: int) -> None:
        if not self._warned_untrained:
            self._warned_untrained = True
            warnings.warn(_UNTRAINED, stacklevel=stacklevel + 1)

    def mark_predictor_trained(self, trained: bool = True) -> None:
        """Say whether the predictor's weights are trained (routed training sets it): eval routes by it only then."""
        self.predictor_trained.fill_(trained)

    def predict_logits(self, x: torch.Tensor, bias: bool = True) -> torch.Tensor:
        """Predictor scores (B, m) for each candidate, plus the resolution bias (budget offsets) if ``bias``."""
        return self._run('_predictor_scores', x, bias)

    def select(self, logits: torch.Tensor) -> torch.Tensor:
        """Hard selection (B, m): Gumbel sample in training, argmax in eval unless ``eval_gumbel``."""
        return gumbel_straight_through(logits, self.tau, noise=self.training or self.eval_gumbel)

    def forward_resolution(self, x: torch.Tensor, index: int) -> torch.Tensor:
        """Logits of the whole batch at candidate ``index`` (the fixed-resolution path)."""
        self.set_resolution(index)
        return self._run('_backbone_at', x, index)

    def _predictor_scores(self, x: torch.Tensor, bias: bool) -> torch.Tensor:
        scores = self.predictor(resize(x, (self.predictor_size, self.predictor_size)))
        return scores + self.resolution_bias.to(x.dtype) if bias else scores  # in the compiled region: one op fewer

    def _selection(self, x: torch.Tensor, noise: bool) -> Tuple[torch.Tensor, ...]:
        """Scores plus bias, their softmax, the hard selection, the chosen index and the images per resolution: one
        compiled region in eval, since every eager op between the regions costs a batch-1 call tens of us."""
        logits = self._predictor_scores(x, True)
        hard = gumbel_straight_through(logits, self.tau, noise)
        index = hard.detach().argmax(dim=-1)
        return logits, logits.float().softmax(-1), hard, index, hard.detach().sum(0).long()

    def _route(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, List[int]]:
        """(scores, probabilities, hard selection, index, images per resolution) of a batch."""
        noise = self.training or self.eval_gumbel  # a Gumbel sample stays eager: torch's random stream, not inductor's
        logits, probs, hard, index, counts = self._selection(x, True) if noise else self._run('_selection', x, False)
        return logits, probs, hard, index, counts.tolist()

    def _resized(self, x: torch.Tensor, index: int) -> torch.Tensor:
        return resize(x, self.candidate_sizes(x.shape[2], x.shape[3])[index])

    def _backbone_at(self, x: torch.Tensor, index: int) -> torch.Tensor:
        return self.backbone(self._resized(x, index))

    def _features_at(self, x: torch.Tensor, index: int) -> torch.Tensor:
        self.set_resolution(index)
        return self.backbone.forward_features(self._resized(x, index))

    def _intermediates_at(self, kwargs: Dict[str, Any], x: torch.Tensor, index: int) -> Tuple:
        self.set_resolution(index)
        return tuple(self.backbone.forward_intermediates(self._resized(x, index), intermediates_only=False, **kwargs))

    def _run(self, name: str, x: torch.Tensor, *args) -> torch.Tensor:
        """Call method ``name`` eagerly, or its compiled graph in eval mode after ``compile_for_inference``."""
        compiled = None if self.training or not x.shape[0] else self._compiled.get(name)
        return getattr(self, name)(x, *args) if compiled is None else compiled(self, x, *args)

    def compile_for_inference(self, **compile_kwargs) -> None:
        """ ``torch.compile`` the predictor and the backbone at each resolution (on full-size images, and on prepared
        ones for ``forward_prepared``), used in eval mode (see ``compile``);
        ``compile_kwargs`` go to ``torch.compile``. Warm up with each resolution and the batch sizes you serve."""
        self._compiled = compile_methods(type(self), ('_predictor_scores', '_selection', '_backbone_at',
                                                                 '_backbone_prepared'),
                                         **compile_kwargs)

    def _call(self, fn: Run, x: torch.Tensor, index: int) -> Any:
        """``fn(x, index)``; in training with gradient checkpointing, recomputed in backward (fn sets its branch)."""
        if self.grad_checkpointing and self.training and torch.is_grad_enabled():
            return checkpoint_with_batch_stats(partial(fn, index=index), x, self.backbone)
        return fn(x, index)

    def _routed(self, x: torch.Tensor, fn: Run, kind: Any = 'forward', to_logits: Optional[Callable] = None,
                channels_last: Any = False, with_cost: bool = False) -> Tuple[Any, ...]:
        """ The one routed forward: (outputs of ``fn(images, j)`` in input order, resolution index, probs, hard
        selection, per-image cost if ``with_cost`` else None). ``to_logits`` turns ``fn``'s output into class logits
        for a cascade; ``channels_last`` is the layout of its maps (see ``FullGrid.place``)."""
        self.check_input(x)
        cascading = self.cascade is not None and not self.training
        if cascading and self.num_classes == 0:
            raise ValueError('A cascade stops on class probabilities, and this model has no classifier (features_only, '
                             'or reset_classifier(0)): switch the cascade off (set_cascade(None)) to route it')
        table = self.cost_table(tuple(x.shape[1:])) if with_cost else None

        def probe() -> Any:  # the output at 1x, for the grid its maps lie on
            with torch.no_grad(), eval_mode(self.backbone):
                return fn(x[:1], 0)

        def place(out: Any, j: int) -> Any:
            return self._grid.place(out, j, (kind, *x.shape[2:]), probe, channels_last)

        def run(images: torch.Tensor, j: int) -> Any:
            return place(self._call(fn, images, j), j)
        if cascading:
            level_costs = table.backbone if table else (0.,) * self.num_resolutions
            out, index, cost = cascade_route(x, self.cascade, partial(self._call, fn), level_costs, to_logits, place)
            hard = F.one_hot(index, self.num_resolutions).float()
            return out, index, hard, hard, cost if table else None
        if not self.training and not self.predictor_trained:
            self._warn_untrained(3)
            index = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
            hard = F.one_hot(index, self.num_resolutions).float()
            return run(x, 0), index, hard, hard, torch.full_like(index, table.backbone[0], dtype=torch.float32) \
                if table else None
        pred_logits, probs, hard, index, counts = self._route(x)
        out = split_run(x, index, counts, run)
        if hard.requires_grad:  # the chosen hard weight, exactly 1, carries the predictor's gradient
            weight = hard.gather(1, index.unsqueeze(1))
            out = tree_map(lambda o: o * weight.view(-1, *(1,) * (o.ndim - 1)).to(o.dtype), out)
        if self.training and torch.is_grad_enabled():
            if not self.predictor_trained and any(p.requires_grad for p in self.predictor.parameters()):
                self.mark_predictor_trained()
            if self.predictor_grad == 'all':  # zero in value, detached: only the predictor's gradient changes
                with torch.no_grad(), eval_mode(self.backbone):
                    others = other_resolution_outputs(x, index, run, self.num_resolutions)
                unchosen = hard_weighted(hard, others)
                out = out if unchosen is None else tree_map(torch.add, out, unchosen)
            anchor = unused_branch_anchor(self._norms, counts)
            out = out if anchor is None else tree_map(lambda o: o + anchor.to(o.dtype), out)
        return out, index, probs, hard, table.per_image(index) if table else None

    def forward_routed(self, x: torch.Tensor) -> DRNetOutput:
        """Logits plus the routing record: chosen resolution, probabilities, hard weights, per-image cost."""
        return DRNetOutput(*self._routed(x, self.forward_resolution, with_cost=True))

    def forward_prepared(self, small: torch.Tensor, images_at: ImagesAt,
                         input_size: Optional[Sequence[int]] = None) -> DRNetOutput:
        """ Routed inference on images the data pipeline makes, so the model resizes nothing (as
        ``OnnxDRNet.forward_prepared``): ``small`` (B, C, p, p), p = ``predictor_size``, for the predictor (under a
        cascade only its batch size counts), then ``images_at(j, chosen)``: the images at positions ``chosen`` (a
        long tensor) made at candidate j's size of ``input_size`` (C, H, W; default the model's), for each
        resolution j the routing runs. Gives ``forward_routed``'s record of those full-size images when each input
        is their ``routing.resize``; eval mode only, compiled regions used after ``compile_for_inference``."""
        if self.training:
            raise RuntimeError('forward_prepared is an inference path: call model.eval() first (train with forward)')
        c, h, w = tuple(input_size or self.default_input_size())
        sizes, table = self.candidate_sizes(h, w), self.cost_table((c, h, w))
        check_prepared(small, (None, c, self.predictor_size, self.predictor_size), 'small (the predictor\'s input)')
        positions = torch.arange(small.shape[0], device=small.device)

        def run(chosen: torch.Tensor, j: int) -> torch.Tensor:
            images = images_at(j, chosen)
            check_prepared(images, (len(chosen), c, *sizes[j]), f'images_at({j}, chosen) (candidate {j}\'s images)')
            self.set_resolution(j)
            return self._run('_backbone_prepared', images)
        if self.cascade is not None:
            logits, index, cost = cascade_route(positions, self.cascade, run, table.backbone)
            hard = F.one_hot(index, self.num_resolutions).float()
            return DRNetOutput(logits, index, hard, hard, cost)
        if not self.predictor_trained:
            self._warn_untrained(2)
            index = torch.zeros_like(positions)
            hard = F.one_hot(index, self.num_resolutions).float()
            return DRNetOutput(run(positions, 0), index, hard, hard, table.per_image(index))
        _, probs, hard, index, counts = self._route(small)
        return DRNetOutput(split_run(positions, index, counts, run), index, probs, hard, table.per_image(index))

    def _backbone_prepared(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)

    def forward(self, x: torch.Tensor, resolution_index: Optional[int] = None) -> torch.Tensor:
        """Logits, each image at its routed resolution; or the whole batch at candidate ``resolution_index``."""
        if resolution_index is not None:
            self.check_input(x)
            return self._call(self.forward_resolution, x, resolution_index)
        return self._routed(x, self.forward_resolution, channels_last=self.maps_last)[0]

    def forward_features(self, x: torch.Tensor, resolution_index: Optional[int] = None) -> torch.Tensor:
        """ The backbone's unpooled features, each image at its routed resolution and put on the grid of the full
        resolution (or the whole batch at candidate ``resolution_index``, at its own size)."""
        if resolution_index is not None:
            self.check_input(x)
            return self._call(self._features_at, x, resolution_index)
        return self._routed(x, self._features_at, 'features', self.forward_head, self.maps_last)[0]

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return self.backbone.forward_head(x, pre_logits=pre_logits)

    def forward_intermediates(self, x: torch.Tensor, indices: Optional[Union[int, List[int]]] = None,
                              norm: bool = False, stop_early: bool = False, output_fmt: str = 'NCHW',
                              intermediates_only: bool = False,
                              ) -> Union[List[torch.Tensor], Tuple[torch.Tensor, List[torch.Tensor]]]:
        """ timm's ``forward_intermediates``: the backbone's feature maps, each image at its routed resolution and
        put on the grid of the full resolution, and (unless ``intermediates_only``) its final features."""
        kwargs = dict(indices=tuple(indices) if isinstance(indices, (list, tuple)) else indices, norm=norm,
                      stop_early=stop_early and intermediates_only, output_fmt=output_fmt)
        if kwargs['stop_early'] and self.cascade is not None and not self.training:
            raise ValueError('A cascade stops on the final features\' class probabilities: drop stop_early')
        fn = partial(self._intermediates_at, kwargs)
        layout = lambda out: (self.maps_last, tuple(output_fmt == 'NHWC' for _ in out[1]))  # noqa: E731
        final, intermediates = self._routed(x, fn, ('intermediates', *kwargs.values()),
                                            lambda out: self.forward_head(out[0]), layout)[0]
        return list(intermediates) if intermediates_only else (final, list(intermediates))

    def prune_intermediate_layers(self, indices: Union[int, List[int]] = 1, prune_norm: bool = False,
                                  prune_head: bool = True) -> List[int]:
        """Prune the backbone to the layers ``forward_intermediates(indices)`` needs (timm's features_only)."""
        self._grid.clear()
        self.num_classes = 0 if prune_head else self.num_classes
        return self.backbone.prune_intermediate_layers(indices, prune_norm=prune_norm, prune_head=prune_head)

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.backbone.get_classifier()

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        self.backbone.reset_classifier(*(num_classes,) if global_pool is None else (num_classes, global_pool))
        self.num_classes = num_classes
        self._grid.clear()

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each resolution's backbone pass during backward, with its own branch (saves activations)."""
        self.grad_checkpointing = enable

    def cost_table(self, input_size: Optional[Sequence[int]] = None) -> CostTable:
        """Costs of each candidate and of the predictor for inputs of ``input_size`` (C, H, W; default the cfg's):
        GMACs counted with ``torch.utils.flop_counter``, unless a table was installed with ``set_cost_table``."""
        return self._costs.get(tuple(input_size or self.default_input_size()), partial(count_cost_table, self))

    def set_cost_table(self, table: CostTable) -> None:
        """Use ``table`` (e.g. measured latency in ms) as the costs; replaces tables of another unit."""
        self._costs.install(table, self.num_resolutions)

    def reset_costs(self) -> None:
        """Drop installed cost tables: costs are counted GMACs again."""
        self._costs.reset()

    def set_cascade(self, threshold: Optional[float], levels: Optional[Sequence[int]] = None) -> None:
        """ Route by confidence cascade in eval mode instead of by the predictor; ``None`` switches it off.

        Each image runs at ``levels`` (candidate indices, default every candidate, smallest first) in turn and
        stops at the first whose top softmax probability is >= ``threshold``, the last level answering for the
        rest; it costs the levels it ran. ``timm_drnet.set_cascade_budget`` calibrates the threshold."""
        self.cascade = None if threshold is None else check_cascade(threshold, levels, self.num_resolutions)

    def default_input_size(self) -> Tuple[int, int, int]:
        cfg = getattr(self, 'pretrained_cfg', None) or {}
        return (self.in_chans, *cfg.get('input_size', (3, 224, 224))[1:])

    def _load_from_state_dict(self, state_dict: Dict[str, Any], prefix: str, *args, **kwargs) -> None:
        super()._load_from_state_dict(complete_state_dict(state_dict, prefix), prefix, *args, **kwargs)
