""" How well can a resolution predictor tell, from the image alone, which images need the large resolution?

A DRNet can only beat random routing by as much as its predictor ranks images by difficulty. This script
measures that ranking on imagenette224 as the ROC AUC for "the distilled stage-1 backbone of
``benchmarks/imagenette.py`` misclassifies the image at 112 px" (the images that must not go small), on its
evaluation images (val + val_extra), for:

* its trained predictors (their preference for 224 over 112): per-resolution losses (``--stage predictor``), the
  paper's stage 2 on the frozen backbone, and the paper's stage 2 with the backbone trained;
* the inverted-residual predictor trained directly on those labels (supervised with the answer the DRNet loss
  only hints at: the ceiling of this predictor on this much data);
* a linear probe on ImageNet-pretrained EfficientNet-Lite0 stages at the predictor's 64 px input
  (what pretrained features would buy, at the MACs shown), trained on the predictor images and on 1000 of
  them (what more data buys);
* the stage-1 backbone's own top class probability at 112 px, low = hard (what ``DRNet.set_cascade`` stops on;
  it costs the whole 112 px pass, which a cascade pays for every image).

AUC 0.5 is random routing, 1.0 an oracle. Each ranking is also turned into accuracy: the top q of the images
by score go to 224 px and the rest to 112 px, against random routing with the same shares (its exact
expectation), with q = 0.25, 0.5, 0.75; the true labels as the score give the two-resolution oracle's gain.

    python benchmarks/predictor_ceiling.py --bench output/imagenette
"""
import argparse
import json
from pathlib import Path
from typing import Dict, Tuple

import torch
import torch.nn.functional as F
import timm
from timm.data import create_dataset, create_transform, resolve_data_config

from timm_drnet import DRNet, count_macs
from timm_drnet.layers import MobilePredictor
from timm_drnet.pretrained import efficientnet_lite0_pretrained

from common import DEFAULT_IMAGENETTE, load_json

parser = argparse.ArgumentParser(description='Ceiling of resolution prediction on imagenette224')
parser.add_argument('--data-dir', default=str(DEFAULT_IMAGENETTE))
parser.add_argument('--bench', default='output/imagenette', help='benchmarks/imagenette.py output folder')
parser.add_argument('--epochs', type=int, default=15, help='epochs of the supervised predictor')


def load_drnet(run_dir: Path) -> DRNet:
    """A train.py run folder (config.json + model.safetensors), loaded the way users load them."""
    return timm.create_model(f'local-dir:{run_dir}', pretrained=True).eval()


def collect(model: DRNet, data_dir: str, split: str, class_map: str
            ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Predictor-size thumbnails of the eval crops, (N, m) correctness of the backbone at each resolution, and
    (N,) its top class probability at the smallest (what a confidence cascade stops on)."""
    ds = create_dataset('', root=data_dir, split=split, class_map=class_map)
    ds.transform = create_transform(**resolve_data_config(model=model))
    thumbs, correct, confidence = [], [], []
    with torch.inference_mode():
        for x, t in torch.utils.data.DataLoader(ds, batch_size=100, num_workers=2):
            thumbs.append(F.interpolate(x, size=(model.predictor_size,) * 2, mode='bilinear', antialias=True))
            logits = [model(x, resolution_index=j) for j in range(model.num_resolutions)]
            correct.append(torch.stack([lg.argmax(1) == t for lg in logits], 1))
            confidence.append(logits[-1].softmax(1).amax(1))
    return torch.cat(thumbs), torch.cat(correct), torch.cat(confidence)


def auc(score: torch.Tensor, label: torch.Tensor) -> float:
    """ROC AUC of ``score`` for the boolean ``label`` (ties count half)."""
    pos, neg = score[label].double(), score[~label].double()
    return ((pos[:, None] > neg[None]).double().mean() + 0.5 * (pos[:, None] == neg[None]).double().mean()).item()


SHARES_224 = (0.25, 0.5, 0.75)


def ranking(score: torch.Tensor, correct: torch.Tensor) -> Dict[str, float]:
    """AUC for "wrong at 112 px", and top-1 gain over random when the top q by ``score`` run at 224, the rest at 112."""
    out = dict(val_auc=auc(score, ~correct[:, -1]))
    acc = correct.float()
    for q in SHARES_224:
        large = torch.zeros(len(score), dtype=torch.bool)
        large[score.argsort(descending=True)[:round(q * len(score))]] = True
        routed = torch.where(large, acc[:, 0], acc[:, -1]).mean()
        random = large.float().mean() * acc[:, 0].mean() + (1 - large.float().mean()) * acc[:, -1].mean()
        out[f'gain_over_random_q{q:g}'] = 100 * (routed - random).item()
    return out


def supervised_predictor(x: torch.Tensor, y: torch.Tensor, xv: torch.Tensor, cv: torch.Tensor,
                         epochs: int) -> Dict[str, float]:
    """The mobile predictor trained from scratch on "wrong at 112 px"; scored on val after the last epoch."""
    torch.manual_seed(0)
    net = MobilePredictor(2)
    opt = torch.optim.AdamW(net.parameters(), lr=2e-3, weight_decay=0.05)
    weight = torch.tensor([1., (~y).sum().item() / max(1, y.sum().item())])
    for _ in range(epochs):
        net.train()
        for idx in torch.randperm(len(x)).split(64):
            batch = x[idx].flip(3) if torch.rand(()) < 0.5 else x[idx]
            loss = F.cross_entropy(net(batch), y[idx].long(), weight=weight)
            opt.zero_grad()
            loss.backward()
            opt.step()
    net.eval()

    @torch.no_grad()
    def score(t: torch.Tensor) -> torch.Tensor:
        return torch.cat([net(b).log_softmax(1)[:, 1] for b in t.split(500)])
    return dict(ranking(score(xv), cv), train_auc=auc(score(x), y))


def fit_probe(f: torch.Tensor, y: torch.Tensor, fv: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """A class-balanced linear probe for ``y`` on standardised features ``f``; its scores on ``f`` and ``fv``."""
    mu, sd = f.mean(0), f.std(0) + 1e-5
    f, fv = (f - mu) / sd, (fv - mu) / sd
    head = torch.nn.Linear(f.shape[1], 1)
    opt = torch.optim.AdamW(head.parameters(), lr=1e-2, weight_decay=0.1)
    pos_weight = torch.tensor((~y).sum().item() / max(1, y.sum().item()))
    for _ in range(300):
        loss = F.binary_cross_entropy_with_logits(head(f).squeeze(1), y.float(), pos_weight=pos_weight)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        return head(f).squeeze(1), head(fv).squeeze(1)


PROBE_SUBSET = 1000  # the probe on fewer images too, to see what data buys


def pretrained_probe(x: torch.Tensor, y: torch.Tensor, xv: torch.Tensor, cv: torch.Tensor,
                     backbone_gmacs: float) -> Dict[str, Dict[str, float]]:
    """ A linear probe for "wrong at 112 px" on pooled features of the first Lite0 stages at the predictor's input,
    trained on every train image and on ``PROBE_SUBSET`` of them (a fixed random draw)."""
    lite0 = efficientnet_lite0_pretrained()
    subset = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))[:PROBE_SUBSET]
    out = {}
    for stages in (3, 4, 5):
        trunk = torch.nn.Sequential(lite0.conv_stem, lite0.bn1, *lite0.blocks[:stages])
        with torch.no_grad():
            f, fv = (torch.cat([trunk(b).mean((2, 3)) for b in t.split(500)]) for t in (x, xv))
        macs = count_macs(trunk, tuple(x.shape[1:])) / 1e9
        for suffix, idx in (('', torch.arange(len(x))), (f'_{PROBE_SUBSET}_images', subset)):
            torch.manual_seed(0)
            train_scores, val_scores = fit_probe(f[idx], y[idx], fv)
            out[f'lite0_stages_1_{stages}{suffix}'] = dict(
                ranking(val_scores, cv), gmacs=macs, share_of_backbone=macs / backbone_gmacs,
                train_auc=auc(train_scores, y[idx]), train_images=len(idx))
    return out


def main() -> None:
    args = parser.parse_args()
    bench = Path(args.bench)
    cfg = load_json(bench / 'results.json')
    class_map, data = str(bench / 'imagenet_synsets.txt'), str(bench / 'data')
    stage1 = load_drnet(bench / 'runs' / f"stage1_{cfg['distill']}" / 'multires')
    x, c, _ = collect(stage1, data, 'predictor', class_map)
    xv, cv, confidence = collect(stage1, data, 'eval', class_map)
    y = ~c[:, -1]  # misclassified at the smallest resolution
    result = dict(positives_train=y.float().mean().item(), positives_val=(~cv[:, -1]).float().mean().item(),
                  oracle=ranking((~cv[:, -1]).float(), cv), drnet={})
    for name, stage in (('predictor', 'predictor'), ('paper_frozen', 'drnet'), ('paper_joint', 'drnet')):
        drnet = load_drnet(bench / 'runs' / name / stage)
        thumbs = xv if drnet.predictor_size == stage1.predictor_size else \
            F.interpolate(xv, size=(drnet.predictor_size,) * 2, mode='bilinear', antialias=True)
        with torch.no_grad():
            scores = torch.cat([drnet.predictor(b) for b in thumbs.split(500)])
        result['drnet'][name] = ranking(scores[:, 0] - scores[:, -1], cv)
    base = cfg['static_224']['gmacs']
    result['supervised_mobile_predictor'] = supervised_predictor(x, y, xv, cv, args.epochs)
    result['pretrained_probe'] = pretrained_probe(x, y, xv, cv, base)
    small = cfg['stage1_distilled'][-1]['gmacs']
    result['backbone_confidence_112'] = dict(ranking(-confidence, cv), gmacs=small, share_of_backbone=small / base)
    (bench / 'predictor_ceiling.json').write_text(json.dumps(result, indent=2))
    print(f"images misclassified at 112 px: {100 * result['positives_train']:.1f}% of the predictor images, "
          f"{100 * result['positives_val']:.1f}% of the evaluation images")
    gains = ' '.join(f'q={q:g}' for q in SHARES_224)
    print(f'evaluation images: ROC AUC for "wrong at 112 px" (0.5 = random) | top-1 gain over random routing, top q to '
          f'224 ({gains})')

    def line(name: str, r: Dict[str, float]) -> None:
        g = ' '.join(f"{r[f'gain_over_random_q{q:g}']:+5.2f}" for q in SHARES_224)
        print(f"  {name:<58} AUC {r['val_auc']:.3f} | {g}")

    line('oracle (the labels)', result['oracle'])
    for k, v in result['drnet'].items():
        line(f'trained predictor: {k}', v)
    s = result['supervised_mobile_predictor']
    line(f"mobile predictor trained on the labels (train AUC {s['train_auc']:.2f})", s)
    for k, v in result['pretrained_probe'].items():
        line(f"probe on {k}, {v['gmacs'] * 1e3:.1f} MMACs ({100 * v['share_of_backbone']:.1f}%, "
             f"{v['train_images']} images, train AUC {v['train_auc']:.2f})", v)
    v = result['backbone_confidence_112']
    line(f"stage-1 backbone's own confidence at 112 px ({100 * v['share_of_backbone']:.0f}%, the cascade's)", v)
    print(f'wrote {bench / "predictor_ceiling.json"}')


if __name__ == '__main__':
    main()
