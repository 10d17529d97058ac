"""Batched inference whose bytes do not depend on the batch-mates: the same scan, with
different neighbours, at different positions, in batches of different fill, gives the
same a*b* and scene probabilities to the bit."""

import numpy as np
import torch
from PIL import Image

from archive_colorize.model.engine import BUCKET, Engine, _bucket_shape
from archive_colorize.imaging.images import decode_image, working_copy

from .conftest import sample

WORKING = 96


def copies() -> list[torch.Tensor]:
    """Working copies of real photographs in several shapes (landscape, portrait, square)."""
    out = []
    for name in ("astronaut.jpg", "chelsea.jpg", "coffee.jpg", "rocket.jpg", "coins.png"):
        d = decode_image(sample(name).read_bytes())
        out.append(working_copy(d.lightness, WORKING))
        out.append(working_copy(d.lightness.T.contiguous(), WORKING))  # the portrait version
    return out


def test_bucket_shapes():
    assert _bucket_shape((96, 64)) == (96, 64)
    assert _bucket_shape((96, 65)) == (96, 128) and _bucket_shape((65, 96)) == (128, 96)
    assert _bucket_shape((90, 17)) == (96, BUCKET)


def test_same_scan_same_bytes_whatever_the_batch(weights):
    engine = Engine(weights, device="cpu", working_size=WORKING, batch=4)
    xs = copies()
    target = xs[2]  # chelsea, landscape: a 64x96 working copy
    alone = engine.predict_batch([(target, None)])[0]
    layouts = [
        [target] + xs[3:6],  # first, among other shapes
        xs[3:6] + [target],  # last
        xs[:1] + [target] + xs[5:9],  # second, several buckets, overflowing into a second forward
        [xs[7], target, target, xs[0]],  # twice in one batch
        [xs[4], target],  # in a batch filled up with blank images
    ]
    for layout in layouts:
        preds = engine.predict_batch([(x, None) for x in layout])
        for x, p in zip(layout, preds):
            if x is target:
                assert p.ab.shape == alone.ab.shape == (2, 32, 48)  # 64x96 working copy, a*b* at half size
                assert torch.equal(p.ab, alone.ab) and torch.equal(p.probs, alone.probs)
    # every other scan agrees with itself alone, too
    preds = engine.predict_batch([(x, None) for x in xs])
    for x, p in zip(xs, preds):
        a = engine.predict_batch([(x, None)])[0]
        assert torch.equal(p.ab, a.ab), tuple(x.shape)
        assert p.ab.shape[-2:] == (-(-x.shape[-2] // 2), -(-x.shape[-1] // 2))


def test_batched_is_close_to_one_by_one_and_styles_work(weights):
    """The padding to a bucket changes edge pixels a little, not the picture."""
    batched = Engine(weights, device="cpu", working_size=WORKING, batch=4)
    single = Engine(weights, device="cpu", working_size=WORKING, batch=1)
    xs = copies()[:4]
    for x, p in zip(xs, batched.predict_batch([(x, None) for x in xs])):
        q = single.predict_working(x)
        h, w = p.ab.shape[-2:]
        # the short side is padded (the width of a square): compare the third farthest from it
        near = (slice(None), slice(0, w // 3)) if h >= w else (slice(0, h // 3), slice(None))
        # away from the padded edge (the short side's end) the two agree
        assert (p.ab - q.ab)[:, near[0], near[1]].abs().mean() < 0.5, tuple(x.shape)
        assert torch.allclose(p.probs, q.probs, atol=1e-4)
    plain, styled = batched.predict_batch([(xs[0], None), (xs[0], xs[2])])
    assert not torch.equal(plain.ab, styled.ab)
    assert torch.equal(
        styled.probs, batched.predict_batch([(xs[2], None)])[0].probs
    )  # the style image's scenes
    img = np.asarray(Image.open(sample("astronaut.jpg")))
    assert img.ndim == 2  # the samples are grayscale scans
