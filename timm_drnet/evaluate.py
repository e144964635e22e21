""" Routing evaluation

What ``validate.py``, ``train.py`` (per epoch and at the end) and the benchmarks report about a DRNet on a
labelled data set, from one evaluation loop: ``collect_predictions`` runs the routed model (each image at the
resolution its predictor, or cascade, picks) and, optionally, the backbone at every candidate resolution alone
(static), and keeps per-image records. From them follow:

* DRNet: top-1 / top-5, average cost with the predictor, share of images and accuracy per chosen resolution;
* static: each candidate resolution for every image;
* random: the DRNet's own assignment of resolutions shuffled across images, so the shares, and so the
  backbone cost, are exactly the DRNet's (the paper's Table 5 baseline, mean and std over seeds). A cascade
  pays for every level an image ran, so its shares do not match its cost: it is compared with random routing
  at its own cost instead, the static curve (neighbouring resolutions mixed in the shares that cost as much);
* oracle: each image at the smallest resolution that classifies it correctly (the ceiling of routing);
* the per-epoch metrics of a training stage (``metric_sums`` / ``stage_metrics``), summed over processes.

Random routing and the oracle need no further model runs: any number of seeds is a table lookup.
"""
from collections import OrderedDict
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch

from .costs import CostTable, unit_label
from .routing import top_probability

__all__ = ['Example', 'Predictions', 'collect_predictions', 'summarize', 'random_routing', 'random_at_cost',
           'oracle_routing', 'format_table', 'metric_sums', 'stage_metrics', 'resolution_names', 'budget_record',
           'format_budget', 'routing_label']


def resolution_names(resolutions: Sequence[float]) -> List[str]:
    """'1x', '0.75x', ...: how metrics and tables name the candidates."""
    return [f'{r:g}x' for r in resolutions]


@dataclass
class Example:
    """An image as routed, kept for the per-resolution example grid (paper Figure 4)."""
    image: torch.Tensor  # (C, H, W), normalised as the model saw it
    score: float  # what the routing went by: the predictor's probability of the resolution, or the cascade's
    # stopping confidence (the top class probability at the level that answered)
    target: int
    pred: int
    class_prob: float  # classifier probability of the predicted class
    score_name: str = 'p'  # how ``score`` is labelled in the grid


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
    static_confidence: Optional[torch.Tensor] = None  # (m, N) top class probability at candidate j
    scores: Optional[torch.Tensor] = None  # (N, m) raw predictor scores (no resolution bias), with ``scores=True``
    topk: int = 5
    examples: Dict[int, List[Example]] = field(default_factory=dict)  # per chosen candidate, most confident first


def _correct(logits: torch.Tensor, target: torch.Tensor, k: int) -> torch.Tensor:
    """(B,) bool: target within the top-k logits."""
    return (logits.topk(k, dim=-1).indices == target.unsqueeze(1)).any(dim=1)


def _keep_examples(examples: Dict[int, List[Example]], x: torch.Tensor, out: Any, target: torch.Tensor,
                   keep: int, cascade: bool) -> None:
    """Keep per chosen resolution the ``keep`` images routed there most surely (predictor or cascade)."""
    probs = out.logits.float().softmax(-1)
    class_prob, pred = probs.max(-1)
    score = class_prob if cascade else out.probs.gather(1, out.resolution_index.unsqueeze(1)).squeeze(1)
    for i in range(x.shape[0]):
        j = int(out.resolution_index[i])
        kept = examples.setdefault(j, [])
        if len(kept) < keep or float(score[i]) > kept[-1].score:
            kept.append(Example(x[i].float().cpu(), float(score[i]), int(target[i]), int(pred[i]),
                                float(class_prob[i]), 'stop' if cascade else 'p'))
            kept.sort(key=lambda e: -e.score)
            del kept[keep:]


@torch.no_grad()
def collect_predictions(
        model: torch.nn.Module,
        loader: Any,
        static: bool = True,
        routed: bool = True,
        scores: bool = False,
        device: Optional[torch.device] = None,
        amp_autocast: Callable = suppress,
        keep_examples: int = 0,
        log_fn: Optional[Callable[[int, int], None]] = None,
) -> Predictions:
    """ Run ``model`` (eval mode) over ``loader`` once: routed, and at every candidate alone if ``static``.

    ``routed=False`` skips the routed forward (a stage-1 model: its routed fields are then empty); ``scores`` also
    keeps the predictor's raw scores, so that routing under any budget can be worked out from the records.
    ``keep_examples`` > 0 keeps that many images per chosen resolution, those routed there most surely.
    ``device`` moves each batch there (None: batches arrive on it, as from timm's prefetcher).
    ``log_fn(batch_idx, num_batches)`` is called after each batch (progress display).
    """
    model.eval()
    k = min(5, model.num_classes)
    cascade = getattr(model, 'cascade', None) is not None
    targets, index, cost, top1, topk, s_top1, s_topk, s_conf, raw = [], [], [], [], [], [], [], [], []
    examples: Dict[int, List[Example]] = {}
    for batch_idx, (x, target) in enumerate(loader):
        if device is not None:
            x, target = x.to(device), target.to(device)
        targets.append(target.cpu())
        with amp_autocast():
            if routed:
                out = model.forward_routed(x)
                index.append(out.resolution_index.cpu())
                cost.append(out.cost.double().cpu())
                top1.append(_correct(out.logits, target, 1).cpu())
                topk.append(_correct(out.logits, target, k).cpu())
                if keep_examples:
                    _keep_examples(examples, x, out, target, keep_examples, cascade)
            if static:
                static_logits = [model(x, resolution_index=j) for j in range(model.num_resolutions)]
                s_top1.append(torch.stack([_correct(lg, target, 1) for lg in static_logits]).cpu())
                s_topk.append(torch.stack([_correct(lg, target, k) for lg in static_logits]).cpu())
                s_conf.append(torch.stack([top_probability(lg) for lg in static_logits]).cpu())
            if scores:
                raw.append(model.predict_logits(x, bias=False).float().cpu())
        if log_fn is not None:
            log_fn(batch_idx, len(loader))

    def cat(parts: List[torch.Tensor], dtype: torch.dtype, dim: int = 0) -> torch.Tensor:
        return torch.cat(parts, dim) if parts else torch.zeros(0, dtype=dtype)
    return Predictions(
        target=cat(targets, torch.long),
        routed_index=cat(index, torch.long),
        routed_top1=cat(top1, torch.bool),
        routed_topk=cat(topk, torch.bool),
        routed_cost=cat(cost, torch.float64),
        static_top1=torch.cat(s_top1, dim=1) if static and s_top1 else None,
        static_topk=torch.cat(s_topk, dim=1) if static and s_topk else None,
        static_confidence=torch.cat(s_conf, dim=1) if static and s_conf else None,
        scores=torch.cat(raw) if raw else None,
        topk=k,
        examples=examples,
    )


def metric_sums(preds: Predictions, stage: str, num_resolutions: int) -> torch.Tensor:
    """ Sums over images a training stage's eval metrics are made of, to add up over processes: images, then
    stage ``multires``: (top-1, top-k) hits per resolution; stage ``drnet``: top-1, top-k hits, cost, counts."""
    n = float(preds.target.numel())
    if stage == 'multires':
        hits = torch.stack([preds.static_top1.sum(1), preds.static_topk.sum(1)], 1).flatten().double()
        return torch.cat([torch.tensor([n], dtype=torch.float64), hits])
    counts = torch.bincount(preds.routed_index, minlength=num_resolutions).double()
    return torch.cat([torch.tensor([n, preds.routed_top1.sum(), preds.routed_topk.sum(), preds.routed_cost.sum()],
                                   dtype=torch.float64), counts])


def stage_metrics(sums: torch.Tensor, stage: str, resolutions: Sequence[float], cost_unit: str) -> Dict[str, float]:
    """ The per-epoch eval metrics from ``metric_sums`` (of every process).

    ``multires``: top-1 / top-5 at each candidate alone, ``top1`` / ``top5`` their mean. ``drnet``: the routed
    model's top-1 / top-5, average cost with the predictor (keyed by the cost unit), share of images per resolution.
    """
    names = resolution_names(resolutions)
    avg = (sums[1:] / sums[0]).tolist()
    metrics = OrderedDict()
    if stage == 'multires':
        top1, topk = avg[0::2], avg[1::2]
        metrics.update(top1=100 * sum(top1) / len(names), top5=100 * sum(topk) / len(names))
        for name, a1, ak in zip(names, top1, topk):
            metrics.update({f'top1_{name}': 100 * a1, f'top5_{name}': 100 * ak})
    else:
        metrics.update(top1=100 * avg[0], top5=100 * avg[1], **{cost_unit: avg[2]})
        metrics.update((f'share_{name}', s) for name, s in zip(names, avg[3:]))
    return metrics


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


def random_at_cost(static: Sequence[Tuple[float, float]], cost: float) -> Optional[Tuple[float, List[float]]]:
    """ Expected top-1 of random routing that costs ``cost`` per image, and its shares per candidate.

    ``static`` holds (cost, top-1) of each candidate alone, in candidate order. Images go at random to the two
    candidates whose costs bracket ``cost``, in the shares that cost ``cost`` on average: the static curve. None
    outside the candidates' cost range.
    """
    order = sorted(range(len(static)), key=lambda j: static[j][0])
    shares = [0.] * len(static)
    for a, b in zip(order, order[1:]):
        (c0, t0), (c1, t1) = static[a], static[b]
        if c0 <= cost <= c1:
            w = (cost - c0) / (c1 - c0) if c1 > c0 else 0.
            shares[a], shares[b] = 1 - w, w
            return t0 + w * (t1 - t0), shares
    if len(static) == 1 and abs(static[0][0] - cost) <= 1e-12 * max(1., cost):
        return static[0][1], [1.]
    return None


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
    if routing == 'cascade':
        curve = random_at_cost([(s['cost'], s['top1']) for s in result['static']], result['drnet']['cost'])
        if curve is not None:  # random routing at the cascade's own cost
            result['random'] = dict(kind='static_curve', top1_mean=curve[0], top1_std=0., cost=result['drnet']['cost'],
                                    shares=curve[1])
    elif random_seeds > 0:
        seeds = list(range(random_seeds))
        top1 = torch.tensor(random_routing(preds.static_top1, preds.routed_index, seeds))
        topk = torch.tensor(random_routing(preds.static_topk, preds.routed_index, seeds))
        result['random'] = dict(
            kind='shuffled_shares',
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


def routing_label(routing: str) -> str:
    """How the routed model is named in tables and figures, by its routing ('predictor', 'cascade', 'untrained')."""
    return {'cascade': 'DRNet (cascade, levels summed)',
            'untrained': 'DRNet (predictor untrained: all at 1x)'}.get(routing, 'DRNet (predictor included)')


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
    rnd = summary.get('random')
    if rnd is not None and rnd['kind'] == 'static_curve':
        row('random at the same cost (static curve)', f'{rnd["top1_mean"]:.2f}', float('nan'), rnd['cost'],
            rnd['shares'])
    elif rnd is not None:
        row(f'random, DRNet shares ({len(rnd["seeds"])} seeds)', f'{rnd["top1_mean"]:.2f}±{rnd["top1_std"]:.2f}',
            rnd['topk_mean'], rnd['cost'], rnd['shares'])
    d = summary['drnet']
    name = routing_label(d.get('routing', 'predictor'))
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


def budget_record(calibration: Any, source: str, target: float, achieved: float, routing: str) -> Dict[str, Any]:
    """ The JSON record of a budget set by ``set_budget`` / ``set_cascade_budget`` (``calibration`` is what it
    returned): the target, what it reached on the calibration images (from ``source``) and on the evaluated ones."""
    calib = dict(source=source, num_images=sum(calibration.counts), cost=calibration.cost,
                 counts=list(calibration.counts), reachable=list(calibration.reachable))
    if routing == 'cascade':
        calib.update(threshold=calibration.threshold, levels=list(calibration.levels))
    else:
        calib.update(lam=calibration.lam, labeled=calibration.top1 is not None, top1=calibration.top1,
                     bias=calibration.bias.tolist())
    return dict(target=target, unit=calibration.unit, achieved=achieved, routing=routing, calibration=calib)


def format_budget(budget: Dict[str, Any]) -> str:
    """One line on a ``budget_record``."""
    unit = unit_label(budget['unit'])
    calib = budget['calibration']
    if budget['routing'] == 'cascade':
        return (f'Budget: target {budget["target"]:.4g} {unit} per image; cascade over candidates '
                f'{calib["levels"]} calibrated on {calib["source"]}: {calib["cost"]:.4g} {unit} there (threshold '
                f'{calib["threshold"]:.4g}, reachable {calib["reachable"][0]:.4g} to {calib["reachable"][1]:.4g}); '
                f'reached {budget["achieved"]:.4g} {unit} on the evaluated images')
    return (f'Budget: target {budget["target"]:.4g} {unit} per image; calibrated on {calib["source"]}: '
            f'{calib["cost"]:.4g} {unit} there (lambda {calib["lam"]:.4g}, reachable {calib["reachable"][0]:.4g} to '
            f'{calib["reachable"][1]:.4g}); reached {budget["achieved"]:.4g} {unit} on the evaluated images')
