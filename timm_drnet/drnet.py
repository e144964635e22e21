""" Dynamic Resolution Network

DRNet (Zhu et al., NeurIPS 2021): a tiny predictor looks at each image and picks one of m candidate
resolutions; one timm backbone, whose every batch norm has m resolution-private branches, classifies
the image at that resolution. The batch is split by chosen resolution so each image is computed at its
resolution only, and the logits go back in the original order, multiplied by the straight-through
hard selection weight (exactly 1 in the forward pass) so the predictor learns through the classifier.

That gradient only sees the chosen resolution's logits, and it rewards less confident branches (see
``predictor_grad``); ``predictor_grad='all'`` also adds the other resolutions' logits, detached and weighted
by their zero hard weights, so the predictor's gradient compares every resolution (paper eq. 4-5).
"""
from typing import Any, Callable, Dict, Iterable, List, NamedTuple, Optional, Sequence, Tuple, Union

import torch
from torch import nn
import torch.fx.experimental._config
import torch.nn.functional as F
from timm.models import create_model, is_model, split_model_name_tag

from .budget import BudgetCalibration, calibrate_budget
from .cascade import Cascade, CascadeCalibration, calibrate_cascade, check_cascade, top_probability
from .costs import CostTable, count_macs, eval_mode
from .layers import convert_resolution_bn, create_predictor, resolution_norms, PREDICTORS

__all__ = ['DRNet', 'DRNetOutput', 'check_resolutions', 'gumbel_straight_through', 'MIN_INPUT_SIZE', 'PREDICTOR_GRADS']

# Smallest side, in pixels, a candidate resolution may have; below it most timm backbones collapse
# their feature maps to nothing before the last stage.
MIN_INPUT_SIZE = 16

# How the predictor's straight-through gradient is formed in training, see DRNet's ``predictor_grad``.
PREDICTOR_GRADS = ('routed', 'all')


class DRNetOutput(NamedTuple):
    """Logits plus the routing record of one forward."""
    logits: torch.Tensor  # (B, num_classes), in the input order
    resolution_index: torch.Tensor  # (B,) chosen candidate per image (0 = largest)
    probs: torch.Tensor  # (B, m) predictor softmax (resolution bias included); one-hot under a cascade
    hard: torch.Tensor  # (B, m) one-hot selection with straight-through gradient
    cost: torch.Tensor  # (B,) cost of each image in ``cost_unit`` (GMACs by default): predictor included, or
    # under a cascade the sum of the levels the image ran


def check_resolutions(resolutions: Sequence[float]) -> Tuple[float, ...]:
    """Validate candidate scale factors: non-empty, each in (0, 1], strictly decreasing (largest first)."""
    try:
        res = tuple(float(r) for r in resolutions)
    except (TypeError, ValueError) as e:
        raise ValueError(f'resolutions must be a sequence of numbers, got {resolutions!r}') from e
    if not res:
        raise ValueError('resolutions must name at least one candidate scale, e.g. (1.0, 0.75, 0.5)')
    bad = [r for r in res if not 0. < r <= 1.]
    if bad:
        raise ValueError(f'resolutions must lie in (0, 1] (fractions of the input size), got {bad} in {res}')
    if len(set(res)) != len(res):
        raise ValueError(f'resolutions must not repeat a candidate, got {res}')
    if list(res) != sorted(res, reverse=True):
        raise ValueError(f'resolutions must be sorted from largest to smallest, got {res}; '
                         f'use {tuple(sorted(res, reverse=True))}')
    return res


def gumbel_straight_through(logits: torch.Tensor, tau: float = 1.0, noise: bool = True) -> torch.Tensor:
    """ Hard one-hot selection with the Gumbel-softmax straight-through gradient.

    Same estimator as ``F.gumbel_softmax(hard=True)``, but written as ``one_hot + (soft - soft.detach())``
    so the forward value is exactly 0 / 1: routed logits then equal the backbone's bit for bit.
    """
    if noise:
        gumbels = -torch.empty_like(logits).exponential_().log()
        logits = logits + gumbels
    soft = (logits / tau).softmax(dim=-1)
    index = soft.argmax(dim=-1)
    hard = F.one_hot(index, logits.shape[-1]).to(soft.dtype)
    return hard + (soft - soft.detach())


def _resize(x: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
    """Bilinear, antialiased resize (float32 maths: CPU antialias kernels lack half precision)."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x.float(), size=size, mode='bilinear', align_corners=False, antialias=True).to(x.dtype)


class DRNet(nn.Module):
    """ Dynamic-resolution wrapper around any timm classifier.

    Args:
        backbone: timm model name (optionally with pretrained tag) or a built timm classifier.
        resolutions: candidate scales of the input size, largest first, e.g. (1.0, 0.75, 0.5).
        predictor: 'resnet' (the paper's, 128 px), 'mobile' (inverted residual, 64 px) or 'backbone' (a copy
            of the backbone's first stages with their pretrained weights, 64 px).
        predictor_size: side of the predictor's input; defaults to the predictor's own (128 / 64).
        num_classes: classifier outputs.
        in_chans: image channels.
        tau: Gumbel-softmax temperature in training.
        eval_gumbel: also sample Gumbel noise in eval mode (the official MindSpore eval); default argmax.
        predictor_grad: the predictor's training gradient. 'routed' (default): each image runs at its chosen
            resolution only, and the gradient reaching the predictor is d loss / d hard_j for that resolution
            alone, sum_k (p_k - y_k) z_k: it favours branches whose logits are not yet confident, so with the
            FLOPs cap alone routing can drift to the smallest resolution. 'all': in training with gradients
            enabled each image also runs, without gradient and with the backbone in eval mode, at every other
            resolution, and those logits enter as hard_j x z_j (hard_j = 0, so the outputs and the backbone's
            gradients are unchanged); the predictor then prefers the resolution whose logits lower the loss, the
            paper's stated behaviour. Costs one extra forward per image and other resolution in training.
        private_bn: give every BN one private branch per resolution (the paper's RA-BN); False shares
            the backbone's BNs across resolutions (the paper's Table 1 ablation).
        backbone_pretrained: load the backbone's timm weights (copied into every BN branch).
        backbone_pretrained_cfg_overlay: timm ``pretrained_cfg_overlay`` for the backbone (e.g. a weights file).
        cost_tables: measured cost tables to install (``CostTable`` or its ``to_dict()``), e.g. the latency table
            a training run stored in config.json, which is not part of the state dict.
        **backbone_kwargs: further timm ``create_model`` arguments for the backbone (drop_rate, ...).
    """

    def __init__(
            self,
            backbone: Union[str, nn.Module] = 'resnet50',
            resolutions: Sequence[float] = (1.0, 0.75, 0.5),
            predictor: str = 'resnet',
            predictor_size: Optional[int] = None,
            num_classes: int = 1000,
            in_chans: int = 3,
            tau: float = 1.0,
            eval_gumbel: bool = False,
            predictor_grad: str = 'routed',
            private_bn: bool = True,
            backbone_pretrained: bool = False,
            backbone_pretrained_cfg_overlay: Optional[Dict] = None,
            cost_tables: Optional[Sequence[Union[CostTable, Dict]]] = None,
            **backbone_kwargs,
    ):
        super().__init__()
        self.resolutions = check_resolutions(resolutions)
        if predictor not in PREDICTORS:
            raise ValueError(f"Unknown predictor '{predictor}', choose one of {sorted(PREDICTORS)}.")
        if tau <= 0:
            raise ValueError(f'Gumbel temperature tau must be > 0, got {tau}')
        if predictor_grad not in PREDICTOR_GRADS:
            raise ValueError(f"Unknown predictor_grad '{predictor_grad}', choose one of {PREDICTOR_GRADS}.")
        self.backbone_name = backbone if isinstance(backbone, str) else \
            getattr(backbone, 'pretrained_cfg', {}).get('architecture', type(backbone).__name__)
        if isinstance(backbone, str):
            if not is_model(split_model_name_tag(backbone)[0]):
                raise ValueError(f"Unknown backbone '{backbone}': timm has no such model "
                                 f"(see timm.list_models('{backbone.split('.')[0][:6]}*')).")
            backbone = create_model(
                backbone,
                pretrained=backbone_pretrained,
                pretrained_cfg_overlay=backbone_pretrained_cfg_overlay,
                num_classes=num_classes,
                in_chans=in_chans,
                **backbone_kwargs,
            )
        self.predictor_name = predictor
        self.predictor = create_predictor(predictor, len(self.resolutions), in_chans=in_chans, backbone=backbone)
        self.predictor_size = int(predictor_size or self.predictor.default_input_size)
        self.private_bn = private_bn
        self.backbone = convert_resolution_bn(backbone, len(self.resolutions)) if private_bn else backbone
        self.num_classes = self.backbone.num_classes
        self.in_chans = in_chans
        self.num_features = self.backbone.num_features
        self.head_hidden_size = getattr(self.backbone, 'head_hidden_size', self.num_features)

        # per-resolution logit offsets, shifted by set_budget(); zero = the trained predictor as is
        self.register_buffer('resolution_bias', torch.zeros(len(self.resolutions)))
        self.tau = float(tau)
        self.eval_gumbel = eval_gumbel
        self.predictor_grad = predictor_grad
        self.cost_unit = 'gmacs'
        self.cascade: Optional[Cascade] = None  # confidence-cascade routing in eval, see set_cascade()
        self._norms = resolution_norms(self.backbone)
        self._cost_tables: Dict[Tuple[int, int, int], CostTable] = {}
        self._compiled: Dict[str, Callable] = {}  # filled by compile_for_inference()
        for table in cost_tables or ():
            self.set_cost_table(table if isinstance(table, CostTable) else CostTable.from_dict(table))

    @property
    def num_resolutions(self) -> int:
        return len(self.resolutions)

    def drnet_args(self) -> Dict[str, Any]:
        """ The DRNet settings needed to rebuild this model (saved in config.json as model_args).

        Installed measured cost tables (unit other than GMACs) come along as ``cost_tables``.
        """
        args = dict(
            backbone=self.backbone_name,
            resolutions=list(self.resolutions),
            predictor=self.predictor_name,
            predictor_size=self.predictor_size,
            tau=self.tau,
            eval_gumbel=self.eval_gumbel,
            predictor_grad=self.predictor_grad,
            private_bn=self.private_bn,
        )
        if self.cost_unit != 'gmacs':
            args['cost_tables'] = [table.to_dict() for table in self._cost_tables.values()]
        return args

    def candidate_sizes(self, height: int, width: int) -> List[Tuple[int, int]]:
        """(H, W) of every candidate for an input of ``height`` x ``width``."""
        return [(max(1, round(r * height)), max(1, round(r * width))) for r in self.resolutions]

    def check_input(self, x: torch.Tensor) -> None:
        """Raise a clear error for inputs the model cannot take (type, rank, channels, dtype, NaN / Inf, size)."""
        if not isinstance(x, torch.Tensor):
            raise TypeError(f'DRNet expects a torch.Tensor batch, got {type(x).__name__}')
        if x.ndim != 4:
            raise ValueError(f'DRNet expects a batch of images shaped (B, C, H, W), got shape {tuple(x.shape)}')
        if x.shape[1] != self.in_chans:
            raise ValueError(f'DRNet was built for {self.in_chans} input channels, got {x.shape[1]} '
                             f'(input shape {tuple(x.shape)})')
        if not x.is_floating_point():
            raise TypeError(f'DRNet expects a floating point image tensor, got {x.dtype}; convert to float and '
                            f'normalise with the mean / std in model.pretrained_cfg')
        # a finite sum implies every element is finite: one reduction (40x cheaper than isfinite over the
        # batch); only a non-finite sum (NaN / Inf, or overflow) pays for the per-image check
        if not torch.isfinite(x.sum()):
            bad = (~torch.isfinite(x).flatten(1).all(1)).nonzero().flatten().tolist()
            if bad:
                raise ValueError(f'Input batch holds NaN or Inf values in image(s) {bad[:10]}'
                                 f'{" ..." if len(bad) > 10 else ""}; a non-finite image would poison the shared '
                                 f'BatchNorm statistics, drop or repair it first')
        smallest = min(self.candidate_sizes(x.shape[2], x.shape[3])[-1])
        if smallest < MIN_INPUT_SIZE:
            raise ValueError(f'Input of {x.shape[2]}x{x.shape[3]} px is too small: the smallest candidate '
                             f'resolution ({self.resolutions[-1]}x) would be {smallest} px, below the '
                             f'{MIN_INPUT_SIZE} px minimum')

    def set_resolution(self, index: int) -> None:
        """Route every private norm of the backbone to branch ``index``."""
        if not 0 <= index < self.num_resolutions:
            raise IndexError(f'resolution_index {index} out of range for {self.num_resolutions} resolutions')
        for norm in self._norms:
            # a plain attribute: skip nn.Module.__setattr__'s registry checks (60 us per call on Lite0's 49 norms)
            object.__setattr__(norm, 'active', index)

    def predict_logits(self, x: torch.Tensor, bias: bool = True) -> torch.Tensor:
        """Predictor scores (B, m) for each candidate, plus the resolution bias (budget offsets) if ``bias``."""
        scores = self._run('_predictor_scores', x)
        return scores + self.resolution_bias.to(x.dtype) if bias else scores

    def select(self, logits: torch.Tensor) -> torch.Tensor:
        """Hard selection (B, m): Gumbel sample in training, argmax in eval unless ``eval_gumbel``."""
        return gumbel_straight_through(logits, self.tau, noise=self.training or self.eval_gumbel)

    def forward_resolution(self, x: torch.Tensor, index: int) -> torch.Tensor:
        """Logits of the whole batch at candidate ``index`` (the fixed-resolution path)."""
        self.set_resolution(index)
        return self._run('_backbone_at', x, index)

    def _predictor_scores(self, x: torch.Tensor) -> torch.Tensor:
        return self.predictor(_resize(x, (self.predictor_size, self.predictor_size)))

    def _backbone_at(self, x: torch.Tensor, index: int) -> torch.Tensor:
        return self.backbone(_resize(x, self.candidate_sizes(x.shape[2], x.shape[3])[index]))

    def _run(self, name: str, x: torch.Tensor, *args) -> torch.Tensor:
        """Call method ``name`` eagerly, or its compiled graph in eval mode after ``compile_for_inference``."""
        compiled = None if self.training or not x.shape[0] else self._compiled.get(name)
        if compiled is None:
            return getattr(self, name)(x, *args)
        torch._dynamo.mark_dynamic(x, 0)
        # size-oblivious batch symbol: a batch of 1 reuses the graph instead of specialising one for it
        with torch.fx.experimental._config.patch(backed_size_oblivious=True):
            return compiled(self, x, *args)

    def compile_for_inference(self, **compile_kwargs) -> None:
        """ ``torch.compile`` the predictor and the backbone at each resolution, used in eval mode.

        Routing (argmax, split by resolution, scatter) stays eager between the compiled regions. Each
        region sees static spatial sizes and a size-oblivious dynamic batch dimension, so one graph per
        resolution plus one for the predictor serve every group size after a warm-up call at each
        resolution. Exception: on CPU, PyTorch picks the convolution backend by batch size, which adds a
        graph per batch-size bucket (torch 2.14: 16+ images; with inductor also a single image), so warm
        up with the batch sizes you serve. A new input size, dtype or memory format compiles new graphs;
        training mode runs eagerly. ``compile_kwargs`` go to ``torch.compile`` (``backend``, ``mode``, ...).
        """
        self._compiled = {name: torch.compile(getattr(type(self), name), **compile_kwargs)
                          for name in ('_predictor_scores', '_backbone_at')}

    def _pre_logits_at(self, x: torch.Tensor, index: int) -> torch.Tensor:
        self.set_resolution(index)
        x = _resize(x, self.candidate_sizes(x.shape[2], x.shape[3])[index])
        return self.backbone.forward_head(self.backbone.forward_features(x), pre_logits=True)

    def _split_run(
            self,
            x: torch.Tensor,
            index: torch.Tensor,
            counts: List[int],
            fn: Callable[[torch.Tensor, int], torch.Tensor],
    ) -> torch.Tensor:
        """Run ``fn(images, j)`` once per chosen resolution j and return the outputs in input order."""
        used = [j for j, c in enumerate(counts) if c]
        if len(used) <= 1:
            return fn(x, used[0] if used else 0)  # one resolution (or an empty batch): no gather / scatter
        order = torch.argsort(index, stable=True)
        groups = x.index_select(0, order).split(counts)
        out = torch.cat([fn(groups[j], j) for j in used])
        return out.index_select(0, torch.argsort(order))

    def _touch_unused_branches(self, out: torch.Tensor, counts: List[int]) -> torch.Tensor:
        """Add 0 x the parameters of branches no image chose, so every parameter gets a (zero) gradient.

        Keeps DDP working without ``find_unused_parameters``.
        """
        unused = [j for j, c in enumerate(counts) if not c]
        params = [p for norm in self._norms for j in unused for p in norm.branches[j].parameters()]
        if not params:
            return out
        return out + 0. * sum(p.sum() for p in params)

    def _route(self, x: torch.Tensor, fn: Callable[[torch.Tensor, int], torch.Tensor]) -> Tuple[torch.Tensor, ...]:
        self.check_input(x)
        pred_logits = self.predict_logits(x)
        hard = self.select(pred_logits)
        index = hard.detach().argmax(dim=-1)
        counts = torch.bincount(index, minlength=self.num_resolutions).tolist()
        out = self._split_run(x, index, counts, fn)
        out = out * hard.gather(1, index.unsqueeze(1)).to(out.dtype)
        if self.training and torch.is_grad_enabled():
            if self.predictor_grad == 'all':
                out = out + self._unchosen_outputs(x, index, hard, fn)
            out = self._touch_unused_branches(out, counts)
        return out, index, pred_logits, hard

    def _unchosen_outputs(
            self,
            x: torch.Tensor,
            index: torch.Tensor,
            hard: torch.Tensor,
            fn: Callable[[torch.Tensor, int], torch.Tensor],
    ) -> torch.Tensor:
        """ sum_j hard_j x fn(image, j) over the resolutions j each image did not choose (``predictor_grad='all'``).

        Zero in value (those hard weights are 0) and detached from the backbone, whose BN statistics stay untouched
        (eval mode), so only the predictor's gradient changes: d loss / d hard_j now sees every resolution.
        """
        outputs = {}  # resolution j -> outputs of every image, zero where j was chosen
        with torch.no_grad(), eval_mode(self.backbone):
            for j in range(self.num_resolutions):
                others = (index != j).nonzero().squeeze(1)
                if others.numel():
                    z = fn(x.index_select(0, others), j)
                    outputs[j] = z.new_zeros((x.shape[0], *z.shape[1:])).index_copy_(0, others, z)
        return sum(hard[:, j].view(-1, *(1,) * (z.ndim - 1)).to(z.dtype) * z for j, z in outputs.items())

    def _cascade_route(self, x: torch.Tensor, fn: Callable[[torch.Tensor, int], torch.Tensor],
                       to_logits: Optional[nn.Module] = None) -> Tuple[torch.Tensor, ...]:
        """ Outputs of ``fn(images, j)``, the level that answered and the cost of each image under ``self.cascade``.

        Each level runs only the images still going; ``to_logits`` turns ``fn``'s output into class logits for
        the stopping test (None: ``fn`` returns logits).
        """
        self.check_input(x)
        levels, threshold = self.cascade
        table = self.cost_table(tuple(x.shape[1:]))
        batch = x.shape[0]
        index = torch.full((batch,), levels[-1], dtype=torch.long, device=x.device)
        cost = torch.zeros(batch, dtype=torch.float32, device=x.device)
        going = torch.arange(batch, device=x.device)
        out = None
        for k, j in enumerate(levels):
            res = fn(x, j)
            if out is None:
                out = res.new_empty((batch, *res.shape[1:]))
            cost[going] += table.backbone[j]
            if k == len(levels) - 1:  # the last level answers for every image still going
                out[going] = res
                index[going] = j
                break
            stop = top_probability(res if to_logits is None else to_logits(res)) >= threshold
            out[going[stop]] = res[stop]
            index[going[stop]] = j
            going, x = going[~stop], x[~stop]
            if not going.numel():
                break
        return out, index, cost

    def _cascading(self) -> bool:
        return self.cascade is not None and not self.training

    def forward_routed(self, x: torch.Tensor) -> DRNetOutput:
        """Logits plus the routing record: chosen resolution, probabilities, hard weights, per-image cost."""
        if self._cascading():
            logits, index, cost = self._cascade_route(x, self.forward_resolution)
            hard = F.one_hot(index, self.num_resolutions).to(logits.dtype)
            return DRNetOutput(logits, index, hard.float(), hard, cost)
        logits, index, pred_logits, hard = self._route(x, self.forward_resolution)
        table = self.cost_table(tuple(x.shape[1:]))
        return DRNetOutput(logits, index, pred_logits.float().softmax(-1), hard, table.per_image(index))

    def forward_features(self, x: torch.Tensor, resolution_index: Optional[int] = None) -> torch.Tensor:
        """ Pooled pre-logit features (B, head_hidden_size), each image at its routed resolution.

        Feature maps of different resolutions differ in size, so DRNet's features are the backbone's
        pooled pre-logits; ``forward_head`` then applies the classifier only.
        """
        if resolution_index is not None:
            self.check_input(x)
            return self._pre_logits_at(x, resolution_index)
        if self._cascading():
            return self._cascade_route(x, self._pre_logits_at, self.get_classifier())[0]
        return self._route(x, self._pre_logits_at)[0]

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return x if pre_logits else self.backbone.get_classifier()(x)

    def forward(self, x: torch.Tensor, resolution_index: Optional[int] = None) -> torch.Tensor:
        """Logits; routed per image (by the predictor, or by ``cascade`` when set), or the whole batch at candidate
        ``resolution_index`` when given."""
        if resolution_index is not None:
            self.check_input(x)
            return self.forward_resolution(x, resolution_index)
        if self._cascading():
            return self._cascade_route(x, self.forward_resolution)[0]
        return self._route(x, self.forward_resolution)[0]

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.backbone.get_classifier()

    def reset_classifier(self, num_classes: int, global_pool: Optional[str] = None) -> None:
        self.backbone.reset_classifier(num_classes, global_pool)
        self.num_classes = num_classes

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.backbone.set_grad_checkpointing(enable)

    def cost_table(self, input_size: Optional[Sequence[int]] = None) -> CostTable:
        """ Per-resolution backbone cost and predictor cost for inputs of ``input_size`` (C, H, W).

        GMACs counted with ``torch.utils.flop_counter`` and cached per input size, unless a table was
        installed with ``set_cost_table`` (e.g. measured latency). Defaults to the pretrained_cfg size.
        """
        input_size = tuple(input_size or self.default_input_size())
        table = self._cost_tables.get(input_size)
        if table is None:
            if self.cost_unit != 'gmacs':
                raise KeyError(f'No {self.cost_unit} cost table for input size {input_size}; '
                               f'measure one and install it with set_cost_table()')
            backbone = []
            for j, size in enumerate(self.candidate_sizes(*input_size[1:])):
                self.set_resolution(j)
                backbone.append(count_macs(self.backbone, (input_size[0], *size)) / 1e9)
            predictor = count_macs(self.predictor, (input_size[0], self.predictor_size, self.predictor_size)) / 1e9
            table = CostTable(input_size, tuple(backbone), predictor, 'gmacs')
            self._cost_tables[input_size] = table
        return table

    def set_cost_table(self, table: CostTable) -> None:
        """Use ``table`` (e.g. measured latency in ms) as the costs; replaces tables of another unit."""
        if len(table.backbone) != self.num_resolutions:
            raise ValueError(f'Cost table has {len(table.backbone)} entries, model has {self.num_resolutions} '
                             f'resolutions')
        if table.unit != self.cost_unit:
            self._cost_tables.clear()
            self.cost_unit = table.unit
        self._cost_tables[tuple(table.input_size)] = table

    def reset_costs(self) -> None:
        """Drop installed cost tables: costs are counted GMACs again."""
        self._cost_tables.clear()
        self.cost_unit = 'gmacs'

    def set_budget(
            self,
            target: float,
            images: Union[torch.Tensor, Iterable],
            batch_size: int = 64,
            tolerance: float = 0.03,
            labeled: bool = False,
    ) -> BudgetCalibration:
        """ Meet a mean cost per image at inference, without retraining.

        Calibrates ``resolution_bias`` on a few unlabeled ``images`` (a tensor (N, C, H, W), or an iterable
        of batches or (images, targets) pairs such as a DataLoader) so the mean cost per image on them,
        predictor included, in the model's cost unit (GMACs, or ms after ``set_cost_table``), is ``target``
        within ``tolerance``. The offsets are a Lagrangian cost penalty, so images keep the predictor's
        order of difficulty (see ``timm_drnet.budget``). The bias is a buffer, saved with the state dict;
        ``resolution_bias.zero_()`` restores the trained routing. Raises ValueError for a target outside
        the reachable range.

        ``labeled=True`` takes (images, targets) batches and also chooses per-resolution offsets that classify
        the most calibration images correctly within the budget (``solve_budget_top1``), which runs the
        backbone at every resolution on them; use it when the predictor leaves a resolution unused.
        """
        return calibrate_budget(self, target, images, batch_size=batch_size, tolerance=tolerance, labeled=labeled)

    def set_cascade(self, threshold: Optional[float], levels: Optional[Sequence[int]] = None) -> None:
        """ Route by confidence cascade in eval mode instead of by the predictor; ``None`` switches it off.

        Each image runs at ``levels`` (candidate indices, default every candidate, smallest first) in turn and
        stops at the first whose top softmax probability is >= ``threshold``; the last level answers for the
        rest. Its cost is the sum of the levels it ran; the predictor does not run. Training ignores the
        cascade. See ``timm_drnet.cascade``.
        """
        self.cascade = None if threshold is None else check_cascade(threshold, levels, self.num_resolutions)

    def set_cascade_budget(
            self,
            target: float,
            images: Union[torch.Tensor, Iterable],
            levels: Optional[Sequence[int]] = None,
            batch_size: int = 64,
            tolerance: float = 0.03,
    ) -> CascadeCalibration:
        """ Meet a mean cost per image at inference with a confidence cascade, without a trained predictor.

        Runs every level on a few unlabeled ``images`` (as for ``set_budget``) and installs, with
        ``set_cascade``, the threshold whose mean cost on them is ``target`` within ``tolerance``. Raises
        ValueError for a target outside [cost of the first level, cost of all levels].
        """
        return calibrate_cascade(self, target, images, levels=levels, batch_size=batch_size, tolerance=tolerance)

    def default_input_size(self) -> Tuple[int, int, int]:
        cfg = getattr(self, 'pretrained_cfg', None) or {}
        size = cfg.get('input_size', (3, 224, 224))
        return (self.in_chans, *size[1:])
