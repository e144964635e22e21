""" Routing evaluation

What ``validate.py`` and ``train.py`` report about a DRNet on a labelled data set. One pass over the
data runs the routed model (each image at the resolution its predictor picks) and, optionally, the
backbone at every candidate resolution alone (static). From the per-image correctness table follow:

* DRNet: top-1 / top-5, average cost with the predictor, share of images and accuracy per chosen resolution;
* static: each candidate resolution for every image;
* random: the DRNet's own assignment of resolutions shuffled across images, so the shares, and so the
  backbone cost, are exactly the DRNet's (the paper's Table 5 baseline, mean and std over seeds);
* oracle: each image at the smallest resolution that classifies it correctly (the ceiling of routing).

Random routing and the oracle need no further model runs: any number of seeds is a table lookup.
"""
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence

import torch

from .costs import CostTable, unit_label

__all__ = ['Example', 'Predictions', 'collect_predictions', 'summarize', 'random_routing', 'oracle_routing',
           'format_table']


@dataclass
class Example:
    """An image as routed by the predictor, kept for the per-resolution example grid (paper Figure 4)."""
    image: torch.Tensor  # (C, H, W), normalised as the model saw it
    resolution_prob: float  # predictor probability of the chosen resolution
    target: int
    pred: int
    class_prob: float  # classifier probability of the predicted class


@dataclass
class Predictions:
    """Per-image results on a data set, in data set order."""
    target: torch.Tensor  # (N,)
    routed_index: torch.Tensor  # (N,) chosen candidate, 0 = largest
    routed_top1: torch.Tensor  # (N,) bool
    routed_topk: torch.Tensor  # (N,) bool, top-k with k = min(5, num_classes)
    routed_cost: torch.Tensor  # (N,) cost of each image as routed (predictor, or a cascade's levels, included)
    static_top1: Optional[torch.Tensor] = None  # (m, N) bool: correct with the backbone at candidate j
    static_topk: Optional[torch.Tensor] = None
    topk: int = 5
    examples: Dict[int, List[Example]] = field(default_factory=dict)  # per chosen candidate, most confident first


def _correct(logits: torch.Tensor, target: torch.Tensor, k: int) -> torch.Tensor:
    """(B,) bool: target within the top-k logits."""
    return (logits.topk(k, dim=-1).indices == target.unsqueeze(1)).any(dim=1)


def _keep_examples(examples: Dict[int, List[Example]], x: torch.Tensor, out: Any, target: torch.Tensor,
                   keep: int) -> None:
    probs = out.logits.float().softmax(-1)
    class_prob, pred = probs.max(-1)
    res_prob = out.probs.gather(1, out.resolution_index.unsqueeze(1)).squeeze(1)
    for i in range(x.shape[0]):
        j = int(out.resolution_index[i])
        kept = examples.setdefault(j, [])
        if len(kept) < keep or float(res_prob[i]) > kept[-1].resolution_prob:
            kept.append(Example(x[i].float().cpu(), float(res_prob[i]), int(target[i]), int(pred[i]),
                                float(class_prob[i])))
            kept.sort(key=lambda e: -e.resolution_prob)
            del kept[keep:]


@torch.no_grad()
def collect_predictions(
        model: torch.nn.Module,
        loader: Any,
        static: bool = True,
        device: Optional[torch.device] = None,
        amp_autocast: Callable = suppress,
        keep_examples: int = 0,
        log_fn: Optional[Callable[[int, int], None]] = None,
) -> Predictions:
    """ Run ``model`` (eval mode) over ``loader`` once: routed, and at every candidate alone if ``static``.

    ``keep_examples`` > 0 keeps that many images per chosen resolution, those the predictor is most sure of.
    ``log_fn(batch_idx, num_batches)`` is called after each batch (progress display).
    """
    model.eval()
    k = min(5, model.num_classes)
    targets, index, cost, top1, topk, s_top1, s_topk = [], [], [], [], [], [], []
    examples: Dict[int, List[Example]] = {}
    for batch_idx, (x, target) in enumerate(loader):
        if device is not None:
            x, target = x.to(device), target.to(device)
        with amp_autocast():
            out = model.forward_routed(x)
            static_logits = [model(x, resolution_index=j) for j in range(model.num_resolutions)] if static else []
        targets.append(target.cpu())
        index.append(out.resolution_index.cpu())
        cost.append(out.cost.double().cpu())
        top1.append(_correct(out.logits, target, 1).cpu())
        topk.append(_correct(out.logits, target, k).cpu())
        if static:
            s_top1.append(torch.stack([_correct(lg, target, 1) for lg in static_logits]).cpu())
            s_topk.append(torch.stack([_correct(lg, target, k) for lg in static_logits]).cpu())
        if keep_examples:
            _keep_examples(examples, x, out, target, keep_examples)
        if log_fn is not None:
            log_fn(batch_idx, len(loader))
    return Predictions(
        target=torch.cat(targets),
        routed_index=torch.cat(index),
        routed_top1=torch.cat(top1),
        routed_topk=torch.cat(topk),
        routed_cost=torch.cat(cost),
        static_top1=torch.cat(s_top1, dim=1) if static else None,
        static_topk=torch.cat(s_topk, dim=1) if static else None,
        topk=k,
        examples=examples,
    )


def _pct(correct: torch.Tensor) -> float:
    return 100. * correct.float().mean().item() if correct.numel() else float('nan')


def random_routing(
        static_correct: torch.Tensor,
        assignment: torch.Tensor,
        seeds: Sequence[int],
) -> List[float]:
    """ Top-1 (%) of random routers with exactly the resolution counts of ``assignment``, one per seed.

    Each seed shuffles ``assignment`` across the images and reads each image's correctness at its
    shuffled resolution from ``static_correct`` (m, N).
    """
    n = assignment.numel()
    accs = []
    for seed in seeds:
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
        accs.append(_pct(static_correct[assignment[perm], torch.arange(n)]))
    return accs


def oracle_routing(static_correct: torch.Tensor) -> torch.Tensor:
    """ (N,) the smallest candidate that classifies each image correctly.

    Candidates are ordered largest first, so that is the highest correct index; an image no candidate
    gets right goes to the smallest (it is wrong at any cost).
    """
    m = static_correct.shape[0]
    weights = torch.arange(1, m + 1).unsqueeze(1)  # higher index = smaller resolution wins
    best = (static_correct.long() * weights).argmax(dim=0)
    return torch.where(static_correct.any(dim=0), best, torch.full_like(best, m - 1))


def summarize(
        preds: Predictions,
        table: CostTable,
        resolutions: Sequence[float],
        sizes: Sequence[Sequence[int]],
        random_seeds: int = 3,
        oracle: bool = True,
        routing: str = 'predictor',
) -> Dict[str, Any]:
    """ The report as a JSON-ready dict; ``static``, ``random`` (``random_seeds`` > 0) and ``oracle`` need
    static predictions.

    Accuracies in %, costs per image in ``table.unit``; the DRNet's is its routed cost (with the predictor, or
    under a cascade, ``routing='cascade'``, every level an image ran), the others run no predictor.
    """
    m, n = len(resolutions), preds.target.numel()
    backbone = torch.tensor(table.backbone, dtype=torch.float64)
    counts = torch.bincount(preds.routed_index, minlength=m)
    shares = counts.double() / max(n, 1)

    def cost_of(index: torch.Tensor) -> float:
        return backbone[index].mean().item() if index.numel() else float('nan')

    result: Dict[str, Any] = dict(
        num_images=n,
        input_size=list(table.input_size),
        resolutions=list(resolutions),
        sizes=[list(s) for s in sizes],
        cost_unit=table.unit,
        backbone_cost=list(table.backbone),
        predictor_cost=table.predictor,
        topk=preds.topk,
        drnet=dict(
            routing=routing,
            top1=_pct(preds.routed_top1),
            topk=_pct(preds.routed_topk),
            cost=preds.routed_cost.mean().item() if n else float('nan'),
            counts=counts.tolist(),
            shares=shares.tolist(),
            top1_per_resolution=[_pct(preds.routed_top1[preds.routed_index == j]) if counts[j] else None
                                 for j in range(m)],
        ),
    )
    if preds.static_top1 is None:
        return result
    result['static'] = [
        dict(resolution=r, size=list(s), top1=_pct(preds.static_top1[j]), topk=_pct(preds.static_topk[j]),
             cost=float(backbone[j]))
        for j, (r, s) in enumerate(zip(resolutions, sizes))
    ]
    if random_seeds > 0:
        seeds = list(range(random_seeds))
        top1 = torch.tensor(random_routing(preds.static_top1, preds.routed_index, seeds))
        topk = torch.tensor(random_routing(preds.static_topk, preds.routed_index, seeds))
        result['random'] = dict(
            seeds=seeds,
            top1=top1.tolist(),
            top1_mean=top1.mean().item(),
            top1_std=top1.std(unbiased=False).item(),  # population std over seeds, as the paper's Table 5
            topk_mean=topk.mean().item(),
            cost=cost_of(preds.routed_index),
            shares=shares.tolist(),
        )
    if oracle:
        best = oracle_routing(preds.static_top1)
        result['oracle'] = dict(
            top1=_pct(preds.static_top1.any(dim=0)),
            topk=_pct(preds.static_topk[best, torch.arange(n)]),
            cost=cost_of(best),
            shares=(torch.bincount(best, minlength=m).double() / max(n, 1)).tolist(),
        )
    return result


def format_table(summary: Dict[str, Any]) -> str:
    """The summary as a plain-text table: one row per method, accuracy, cost and resolution shares."""
    unit = unit_label(summary['cost_unit'])
    k = summary['topk']
    res_cols = [f'{r:g}x' for r in summary['resolutions']]
    head = f'{"method":<34} {"top-1":>12} {f"top-{k}":>7} {unit:>9}  ' + ' '.join(f'{c:>6}' for c in res_cols)
    lines = [head, '-' * len(head)]

    def row(name: str, top1: str, topk: float, cost: float, shares: Optional[Sequence[float]]) -> None:
        share_txt = ' '.join(f'{100 * s:>5.1f}%' for s in shares) if shares is not None else ''
        lines.append(f'{name:<34} {top1:>12} {topk:>7.2f} {cost:>9.4g}  {share_txt}')

    for s in summary.get('static', []):
        onehot = [1. if r == s['resolution'] else 0. for r in summary['resolutions']]
        row(f'static {s["resolution"]:g}x ({s["size"][0]} px)', f'{s["top1"]:.2f}', s['topk'], s['cost'], onehot)
    if 'random' in summary:
        rnd = summary['random']
        row(f'random, DRNet shares ({len(rnd["seeds"])} seeds)', f'{rnd["top1_mean"]:.2f}±{rnd["top1_std"]:.2f}',
            rnd['topk_mean'], rnd['cost'], rnd['shares'])
    d = summary['drnet']
    name = 'DRNet (cascade, levels summed)' if d.get('routing') == 'cascade' else 'DRNet (predictor included)'
    row(name, f'{d["top1"]:.2f}', d['topk'], d['cost'], d['shares'])
    if 'oracle' in summary:
        o = summary['oracle']
        row('oracle (smallest correct)', f'{o["top1"]:.2f}', o['topk'], o['cost'], o['shares'])
    per_res = ', '.join(f'{r:g}x {a:.2f}%' if a is not None else f'{r:g}x -'
                        for r, a in zip(summary['resolutions'], d['top1_per_resolution']))
    lines.append(f'DRNet top-1 per chosen resolution: {per_res}')
    lines.append(f'{summary["num_images"]} images, input {summary["input_size"][-1]} px; predictor '
                 f'{summary["predictor_cost"]:.4g} {unit} per image')
    return '\n'.join(lines)
