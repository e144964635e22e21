""" Bad image files: valid images of every mode are used as 8-bit RGB, bad files are named, counted and
skipped without ever pairing an image with another file's label; ``--strict-data`` stops at the first. """
import io
import json
import logging

import numpy as np
import pytest
import torch
from PIL import Image

from timm_drnet.data import BadImageError, create_dataset, create_loader, read_image, skipped_files

from script_runner import error_lines, run_script

CLASSES = ('cat', 'dog')


def _jpeg(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, 'JPEG', quality=95)
    return buf.getvalue()


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, 'PNG')
    return buf.getvalue()


def _flat(mode: str, color, size=(8, 8)) -> Image.Image:
    return Image.new(mode, size, color)


def _palette_with_transparency() -> Image.Image:
    img = Image.new('P', (8, 8), 1)
    img.putpalette([0, 0, 0, 250, 120, 200] + [0] * 762)
    img.info['transparency'] = 0  # palette entry 0 transparent, unused by the pixels
    return img


def _truncated_jpeg() -> bytes:
    noise = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    data = _jpeg(Image.fromarray(noise))
    return data[:len(data) * 6 // 10]


# per class, in data set (file name) order: name -> (bytes, expected RGB colour or None for a bad file).
# Every valid image is flat, in a colour no other file has, so a loaded image tells which file it came from.
FILES = {
    'cat': {
        '01_rgb.png': (lambda: _png(_flat('RGB', (220, 30, 30))), (220, 30, 30)),
        '02_gray.png': (lambda: _png(_flat('L', 90)), (90, 90, 90)),
        '03_truncated.jpg': (_truncated_jpeg, None),
        '04_cmyk.jpg': (lambda: _jpeg(_flat('CMYK', (200, 0, 200, 0))), (55, 255, 55)),
        '05_rgba.png': (lambda: _png(_flat('RGBA', (30, 30, 220, 100))), (30, 30, 220)),
        '06_empty.jpg': (lambda: b'', None),  # last of its class: its replacement is a dog, labelled dog
    },
    'dog': {
        '01_16bit.png': (lambda: _png(Image.fromarray(np.full((8, 8), 50000, np.uint16))), (195, 195, 195)),
        '02_not_an_image.jpg': (lambda: b'these are notes, not a JPEG\n' * 20, None),
        '03_one_pixel.png': (lambda: _png(_flat('RGB', (240, 200, 0), (1, 1))), (240, 200, 0)),
        '04_huge.jpg': (lambda: _jpeg(_flat('RGB', (0, 160, 160), (6000, 4000))), (0, 160, 160)),
        '05_palette.png': (lambda: _png(_palette_with_transparency()), (250, 120, 200)),
        '06_rgb.png': (lambda: _png(_flat('RGB', (120, 0, 160))), (120, 0, 160)),
    },
}
BAD = sorted(f'{c}/{n}' for c in CLASSES for n, (_, color) in FILES[c].items() if color is None)
VALID = [(f'{c}/{n}', color, label) for label, c in enumerate(CLASSES) for n, (_, color) in FILES[c].items()
         if color is not None]


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
    """An ImageFolder with train/ and validation/ splits, each holding every file of ``FILES``."""
    root = tmp_path_factory.mktemp('bad_data')
    for cls, files in FILES.items():
        for name, (make, _) in files.items():
            data = make()
            for split in ('train', 'validation'):
                (root / split / cls).mkdir(parents=True, exist_ok=True)
                (root / split / cls / name).write_bytes(data)
    return root


def _identify(image: torch.Tensor) -> str:
    """The file a loaded (3, H, W) image in 0..255 came from: the valid file of the same flat colour."""
    color = image.flatten(1).mean(1)
    assert (image.flatten(1) - color[:, None]).abs().max() < 2, 'loaded images must stay flat'
    dist = {path: (color - torch.tensor(c, dtype=torch.float32)).abs().max().item() for path, c, _ in VALID}
    path = min(dist, key=dist.get)
    assert dist[path] < 6, f'colour {color.tolist()} matches no file'
    return path


def _loader(data_dir, split, is_training, workers=0, strict=False, batch_size=4):
    dataset = create_dataset('', root=str(data_dir), split=split, is_training=is_training, strict_data=strict)
    # mean 0, std 1/255: the prefetcher hands out the 0..255 pixel values; no augmentation but the resize
    loader = create_loader(dataset, input_size=(3, 16, 16), batch_size=batch_size, is_training=is_training,
                           no_aug=True, mean=(0., 0., 0.), std=(1 / 255,) * 3, num_workers=workers,
                           device=torch.device('cpu'), persistent_workers=False, crop_pct=1.0)
    return dataset, loader


def _pass(loader):
    images, targets, sizes = [], [], []
    for x, y in loader:
        images.extend(_identify(img) for img in x)
        targets.extend(y.tolist())
        sizes.append(x.shape[0])
    return images, targets, sizes


def test_every_valid_image_mode_is_read_as_8bit_rgb(data_dir):
    for path, color, _ in VALID:
        img = read_image(data_dir / 'train' / path)
        assert img.mode == 'RGB', path
        for (low, high), value in zip(img.getextrema(), color):  # flat, in the file's colour
            assert value - 5 <= low <= high <= value + 5, (path, img.getextrema())
        if path == 'dog/04_huge.jpg':
            assert img.size == (6000, 4000)
    # PIL's own conversion would have clipped the 16-bit value 50000 to white
    with Image.open(data_dir / 'train' / 'dog' / '01_16bit.png') as raw:
        assert raw.mode == 'I;16' and raw.convert('RGB').getpixel((0, 0)) == (255, 255, 255)
    for path in BAD:
        with pytest.raises(Exception):
            read_image(data_dir / 'train' / path)


@pytest.mark.parametrize('workers', [0, 1])
def test_evaluation_leaves_bad_files_out_and_keeps_every_label(data_dir, workers, caplog):
    _, loader = _loader(data_dir, 'validation', is_training=False, workers=workers)
    with caplog.at_level(logging.WARNING, logger='timm_drnet'):
        images, targets, _ = _pass(loader)
    assert images == [path for path, _, _ in VALID]  # every valid file once, in order
    assert targets == [label for _, _, label in VALID]
    assert sorted(b.path.split('validation/')[-1] for b in skipped_files(loader)) == BAD
    warnings = [r.getMessage() for r in caplog.records]
    for path in BAD:
        assert sum(path in w for w in warnings) == 1, f'{path}: one warning naming it'
    assert any(f'{len(BAD)} unreadable image file(s) skipped in this pass over 12 files' in w for w in warnings)


def test_training_replaces_a_bad_file_by_the_next_readable_one_with_its_own_label(data_dir, caplog):
    dataset, loader = _loader(data_dir, 'train', is_training=True)
    # the empty last cat file is replaced by the first dog file, labelled dog
    empty = next(i for i in range(len(dataset)) if dataset.filename(i) == 'cat/06_empty.jpg')
    img, target, bad = dataset[empty]
    assert _identify(torch.as_tensor(np.asarray(img)).float()) == 'dog/01_16bit.png'
    assert target == 1 and [b.path.split('train/')[-1] for b in bad] == ['cat/06_empty.jpg']
    with caplog.at_level(logging.WARNING, logger='timm_drnet'):
        for _ in range(2):  # two epochs: each bad file named once, the count logged after each pass
            images, targets, sizes = _pass(loader)
            assert sizes == [4, 4, 4], 'batches keep their size'
            label_of = {path: label for path, _, label in VALID}
            assert targets == [label_of[path] for path in images], 'an image with another file\'s label'
            assert len(skipped_files(loader)) == len(BAD)
    warnings = [r.getMessage() for r in caplog.records]
    for path in BAD:
        assert sum(path in w for w in warnings) == 1, f'{path}: one warning naming it'
    assert sum('3 unreadable image file(s) skipped in this pass' in w and 'next readable file' in w
               for w in warnings) == 2


def test_strict_data_stops_at_the_first_bad_file(data_dir):
    _, loader = _loader(data_dir, 'validation', is_training=False, strict=True)
    with pytest.raises(BadImageError, match='cat/03_truncated.jpg.*strict_data'):
        _pass(loader)


TRAIN = ['--input-size', '3', '32', '32', '-b', '4', '--workers', '0', '--log-interval', '1']


@pytest.mark.slow
def test_train_and_validate_skip_bad_files_and_stop_on_them_with_strict_data(data_dir, tmp_path):
    proc = run_script('train.py', ['--data-dir', data_dir, '--stage', 'multires', '--epochs', '2', *TRAIN,
                                   '--output', tmp_path, '--experiment', 'run'])
    assert proc.returncode == 0, proc.stderr[-3000:]
    for path in BAD:  # once in the training split, once in the validation split, over both epochs
        named = [line for line in proc.stderr.splitlines() if 'Skipping unreadable image file' in line and path in line]
        assert len(named) == 2, named
    assert proc.stderr.count('3 unreadable image file(s) skipped in this pass over 12 files (train)') == 2
    assert proc.stderr.count('3 unreadable image file(s) skipped in this pass over 12 files (validation)') == 2

    strict = run_script('train.py', ['--data-dir', data_dir, '--stage', 'multires', '--epochs', '1', '--strict-data',
                                     *TRAIN, '--output', tmp_path, '--experiment', 'strict'])
    assert strict.returncode == 2 and 'Traceback' not in strict.stderr
    errors = [line for line in error_lines(strict) if line.startswith('ERROR')]
    assert len(errors) == 1 and 'Unreadable image file' in errors[0] and '--strict-data' in errors[0], errors
    assert any(path in errors[0] for path in BAD), errors[0]

    ckpt = tmp_path / 'run' / 'multires' / 'last.pth.tar'
    results = tmp_path / 'results.json'
    proc = run_script('validate.py', ['--data-dir', data_dir, '--checkpoint', ckpt, '--workers', '0',
                                      '--results-file', results])
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(results.read_text())
    assert res['num_images'] == len(VALID)
    assert sorted(p.split('validation/')[-1] for p in res['skipped_files']) == BAD
    strict = run_script('validate.py', ['--data-dir', data_dir, '--checkpoint', ckpt, '--workers', '0',
                                        '--strict-data'])
    assert strict.returncode == 2 and 'Traceback' not in strict.stderr
    errors = [line for line in error_lines(strict) if line.startswith('ERROR')]
    assert len(errors) == 1 and 'cat/03_truncated.jpg' in errors[0], errors
