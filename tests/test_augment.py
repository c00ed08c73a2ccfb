import numpy as np

from conftest import SAMPLES
from core.augment import NONE, PAPER, STAIN_ROBUST, augment, colour_jitter, to_grayscale
from core.imageio import read_image, resize_square
from core.loader import ImageBatches, load_images


def _img():
    return resize_square(read_image(next((SAMPLES / "Original" / "Pre").iterdir())), 132)


def test_augment_keeps_shape_dtype_and_changes_pixels():
    img = _img()
    rng = np.random.default_rng(0)
    outs = [augment(img, PAPER, rng) for _ in range(8)]
    assert all(o.shape == img.shape and o.dtype == np.uint8 for o in outs)
    assert all(not np.array_equal(o, img) for o in outs)
    assert np.array_equal(augment(img, NONE, rng), img)


def test_augment_is_seeded():
    img = _img()
    a = augment(img, STAIN_ROBUST, np.random.default_rng(3))
    b = augment(img, STAIN_ROBUST, np.random.default_rng(3))
    assert np.array_equal(a, b)


def test_grayscale_and_jitter():
    batch = np.stack([_img(), _img()])
    g = to_grayscale(batch)
    assert g.shape == batch.shape and np.all(g[..., 0] == g[..., 1])
    j = colour_jitter(batch, seed=1)
    assert j.shape == batch.shape and not np.array_equal(j, batch)


def test_batches_are_scaled_one_hot_and_cover_all_images():
    paths = sorted((SAMPLES / "Original" / "Benign").iterdir())
    images, ok, errors = load_images(paths, 64)
    assert ok.all() and errors == [] and images.shape == (5, 64, 64, 3)
    seq = ImageBatches(images, np.arange(5) % 4, batch_size=2, augment_cfg=PAPER, shuffle=True, seed=0)
    assert len(seq) == 3
    xs, ys = zip(*(seq[i] for i in range(len(seq))))
    x, y = np.concatenate(xs), np.concatenate(ys)
    assert x.dtype == np.float32 and 0.0 <= x.min() and x.max() <= 1.0
    assert y.shape == (5, 4) and np.allclose(y.sum(1), 1)
    assert sorted(y.argmax(1).tolist()) == sorted((np.arange(5) % 4).tolist())


def test_load_images_lists_bad_files(tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_text("not an image")
    good = next((SAMPLES / "Original" / "Pro").iterdir())
    images, ok, errors = load_images([good, bad], 32)
    assert ok.tolist() == [True, False] and len(images) == 1
    assert errors[0][0] == str(bad) and "not an image" in errors[0][1].lower()


def test_drop_remainder_gives_one_batch_shape_and_new_images_each_epoch():
    paths = sorted((SAMPLES / "Original" / "Benign").iterdir())
    images, _, _ = load_images(paths, 32)
    seq = ImageBatches(images, np.zeros(5, int), batch_size=2, shuffle=True, seed=0, drop_remainder=True)
    assert len(seq) == 2 and {seq[i][0].shape for i in range(2)} == {(2, 32, 32, 3)}
    seen = set()
    for _ in range(6):  # the left-out image changes with the shuffle, so none is never trained on
        seen |= {int(i) for i in seq.order[: len(seq) * 2]}
        seq.on_epoch_end()
    assert seen == set(range(5))
    # Fewer images than one batch: keep them rather than train on nothing.
    assert len(ImageBatches(images[:1], np.zeros(1, int), batch_size=2, drop_remainder=True)) == 1


def test_session_robust_repaints_only_the_slide_and_covers_the_scale_bar():
    from core.augment import SESSION_ROBUST, cover_scale_bar, repaint_background, slide_mask
    from core.dataset import SCALE_BAR_FROM

    img = _img()
    slide = slide_mask(img)
    assert 0.05 < slide.mean() < 0.95  # a smear has both cells and slide between them
    painted = repaint_background(img, np.random.default_rng(0))
    assert np.array_equal(painted[~slide], img[~slide])  # every stained cell as captured
    assert np.abs(painted[slide].astype(int) - img[slide]).mean() > 3
    covered = cover_scale_bar(img, np.random.default_rng(0))
    r0, c0 = round(SCALE_BAR_FROM[0] * 132), round(SCALE_BAR_FROM[1] * 132)
    assert np.array_equal(covered[:r0], img[:r0]) and np.array_equal(covered[:, :c0], img[:, :c0])
    corner = covered[r0:, c0:].reshape(-1, 3).astype(float)
    assert corner.std(axis=0).max() < 6  # one colour (plus a little noise): no scale bar left
    outs = [augment(img, SESSION_ROBUST, np.random.default_rng(s)) for s in range(4)]
    assert all(o.shape == img.shape and o.dtype == np.uint8 for o in outs)
