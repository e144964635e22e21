""" A long stream of mixed-size batches through eval routing: no memory growth, identical results."""
import gc
import warnings

import torch
import timm


def _rss_mb() -> float:
    with open('/proc/self/statm') as f:
        return int(f.read().split()[1]) * 4096 / 2 ** 20


def _live_tensors() -> int:
    with warnings.catch_warnings():  # isinstance() on deprecated torch module attributes warns
        warnings.simplefilter('ignore', FutureWarning)
        return sum(1 for o in gc.get_objects() if isinstance(o, torch.Tensor))


def test_stream_of_mixed_batches_is_stable():
    torch.manual_seed(0)
    model = timm.create_model('drnet', backbone='resnet10t', predictor='mobile', num_classes=4).eval()
    model.mark_predictor_trained()
    with torch.no_grad():  # spread the random predictor's routing over all three resolutions
        model.predictor.fc.weight.mul_(100.)
        model.resolution_bias.copy_(-model.predict_logits(torch.randn(64, 3, 64, 64)).mean(0))
    sizes = torch.randint(1, 17, (60,), generator=torch.Generator().manual_seed(1)).tolist()

    def stream():
        results = []
        gen = torch.Generator().manual_seed(2)
        with torch.inference_mode():
            for b in sizes:
                out = model.forward_routed(torch.randn(b, 3, 64, 64, generator=gen))
                results.append((out.logits.clone(), out.resolution_index.clone()))
        return results

    first = stream()
    assert len({j for _, idx in first for j in idx.tolist()}) == 3, 'stream should exercise every resolution'
    gc.collect()
    tensors, rss = _live_tensors(), _rss_mb()
    for _ in range(2):
        assert all(torch.equal(a, b) and torch.equal(ia, ib) for (a, ia), (b, ib) in zip(first, stream()))
    gc.collect()
    assert _live_tensors() <= tensors, 'routing keeps tensors alive between calls'
    assert _rss_mb() - rss < 32, f'resident memory grew by {_rss_mb() - rss:.1f} MB over 120 batches'
