"""seedvlm.pretrain.levers: the pretraining levers for a base that leans on its prior when it cannot see (degraded
views with targets cut to what stays visible; uninformative images and noisy views in the language stages), off by
default."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from seedvlm.errors import SeedVLMError
from seedvlm.pretrain import levers as L

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def micro_world(tmp_path_factory):
    from seedvlm.cli import main

    out = tmp_path_factory.mktemp("world") / "w"
    assert main(["world", "--out", str(out), "--train", "24", "--val", "6", "--quiet"]) == 0
    return out


def test_visibility_under_noise_follows_the_object_s_signal_to_noise_ratio():
    areas = np.array([400, 25])  # a 20 x 20 object and a 5 x 5 one
    assert L.visible_under_noise(areas, 1.0, 3.0).tolist() == [True, True]
    assert L.visible_under_noise(areas, 0.3, 3.0).tolist() == [True, True]   # sqrt(25 * 0.3 / 0.7) = 3.27
    assert L.visible_under_noise(areas, 0.2, 3.0).tolist() == [True, False]  # sqrt(25 * 0.25) = 2.5
    assert L.visible_under_noise(areas, 0.0, 3.0).tolist() == [False, False]


def test_visibility_under_mask_counts_the_box_s_unmasked_pixels():
    kept = np.ones((16, 16), dtype=bool)
    kept[:, :8] = False  # left half masked
    boxes = np.array([[0, 0, 8, 8], [8, 0, 8, 8], [4, 0, 8, 8], [5, 0, 8, 8]])
    assert L.visible_under_mask(boxes, kept).tolist() == [False, True, True, True]
    assert L.visible_under_mask(boxes, kept, min_fraction=0.6).tolist() == [False, True, False, True]


def _batch(b=6, size=32):
    """Images with each object drawn as a bright square in its box; labels from the objects."""
    objects = [[(0, [2, 2, 10, 10], 100), (3, [20, 18, 6, 6], 36)] for _ in range(b)]
    pix = torch.full((b, 3, size, size), -1.0)
    labels = torch.zeros(b, 5)
    for i, objs in enumerate(objects):
        for col, (x, y, w, h), _ in objs:
            pix[i, :, y:y + h, x:x + w] = 1.0
            labels[i, col] = 1.0
    return pix, labels, objects


def test_no_degradation_leaves_the_batch_as_it_is():
    pix, labels, objects = _batch()
    out, y, done = L.degrade_batch(pix, labels, objects, np.random.default_rng(0), fraction=0.0)
    assert torch.equal(out, pix) and torch.equal(y, labels) and all(d["kind"] is None for d in done)


def test_blank_views_have_no_targets_and_the_rest_stay_clean():
    pix, labels, objects = _batch(b=40)
    out, y, done = L.degrade_batch(pix, labels, objects, np.random.default_rng(1), fraction=0.5, kinds=("blank",))
    hit = [d["kind"] == "blank" for d in done]
    assert 10 <= sum(hit) <= 30  # about half
    for i, h in enumerate(hit):
        if h:
            assert (out[i] == 0).all() and (y[i] == 0).all()
        else:
            assert torch.equal(out[i], pix[i]) and torch.equal(y[i], labels[i])
    assert torch.equal(pix, _batch(b=40)[0])  # inputs untouched


def test_noisy_views_keep_the_targets_still_visible_at_their_noise_level():
    pix, labels, objects = _batch(b=60)
    out, y, done = L.degrade_batch(pix, labels, objects, np.random.default_rng(2), fraction=1.0, kinds=("noise",),
                                   snr=3.0, min_alpha=0.02)
    small_dropped = 0
    for i, d in enumerate(done):
        a = d["alpha"]
        assert 0.02 <= a < 1.0 and not torch.equal(out[i], pix[i])
        expect = L.visible_under_noise(np.array([100, 36]), a, 3.0)
        assert y[i, 0].item() == float(expect[0]) and y[i, 3].item() == float(expect[1])
        small_dropped += int(not expect[1])
    assert 0 < small_dropped < 60  # some levels hide the small object, others do not


def test_masked_views_keep_the_objects_whose_box_stays_mostly_unmasked():
    pix, labels, objects = _batch(b=30)
    out, y, done = L.degrade_batch(pix, labels, objects, np.random.default_rng(3), fraction=1.0, kinds=("mask",),
                                   patch_size=8)
    changed = 0
    for i, d in enumerate(done):
        assert d["kind"] == "mask" and 0.25 <= d["ratio"] <= 0.75
        kept = (out[i, 0] != 0).numpy()  # masked pixels are 0 (the images are -1 or 1 elsewhere)
        expect = L.visible_under_mask(np.array([b for _, b, _ in objects[i]]), kept)
        assert y[i, [0, 3]].tolist() == expect.astype(float).tolist()
        changed += int(not expect.all())
    assert changed > 0 and (y <= labels).all()  # targets only ever removed


def test_uninformative_images_and_the_swap():
    pix = L.uninformative_pixels(4, 16, seed=0)
    assert pix.shape == (4, 3, 16, 16) and (pix[0] == 0).all()
    assert abs(float(pix[1:].std()) - 1.0) < 0.1 and not torch.equal(pix[1], pix[2])
    own = torch.arange(100)
    g = torch.Generator().manual_seed(0)
    assert torch.equal(L.swap_to_uninformative(own, 0.0, 1000, 4, g), own)
    all_swapped = L.swap_to_uninformative(own, 1.0, 1000, 4, g)
    assert ((all_swapped >= 1000) & (all_swapped < 1004)).all() and len(set(all_swapped.tolist())) == 4
    half = L.swap_to_uninformative(own, 0.3, 1000, 4, torch.Generator().manual_seed(1))
    swapped = half >= 1000
    assert 15 <= int(swapped.sum()) <= 45 and torch.equal(half[~swapped], own[~swapped])
    assert torch.equal(half, L.swap_to_uninformative(own, 0.3, 1000, 4, torch.Generator().manual_seed(1)))
    with pytest.raises(SeedVLMError):
        L.degrade_batch(*_batch(), np.random.default_rng(0), fraction=0.5, kinds=("fog",))


def test_noisy_views_and_their_swap():
    pix = torch.randn(6, 3, 16, 16)
    noisy, alphas = L.noisy_pixels(pix, (0.2, 0.4), seed=3)
    assert noisy.shape == pix.shape and ((alphas >= 0.2) & (alphas <= 0.4)).all() and len(set(alphas.tolist())) == 6
    again, _ = L.noisy_pixels(pix, (0.2, 0.4), seed=3)
    assert torch.equal(noisy, again) and not torch.equal(noisy, L.noisy_pixels(pix, (0.2, 0.4), seed=4)[0])
    # each view keeps its image at its a: x' = sqrt(a) x + sqrt(1 - a) eps, so the residual has std sqrt(1 - a)
    for x, y, a in zip(pix, noisy, alphas):
        eps = (y - float(a) ** 0.5 * x) / (1 - float(a)) ** 0.5
        assert abs(float(eps.std()) - 1.0) < 0.1 and abs(float(eps.mean())) < 0.1
    kept, _ = L.noisy_pixels(pix, (1.0, 1.0), seed=0)
    assert torch.allclose(kept, pix)
    with pytest.raises(SeedVLMError, match="noise range"):
        L.noisy_pixels(pix, (0.5, 0.2), seed=0)
    own = torch.arange(100)
    assert torch.equal(L.swap_to_noisy(own, 0.0, 100, torch.Generator().manual_seed(0)), own)
    assert torch.equal(L.swap_to_noisy(own, 1.0, 100, torch.Generator().manual_seed(0)), own + 100)
    part = L.swap_to_noisy(own, 0.3, 100, torch.Generator().manual_seed(1))
    moved = part != own
    assert 15 <= int(moved.sum()) <= 45 and torch.equal(part[moved], own[moved] + 100)
    with pytest.raises(SeedVLMError, match="noisy-view fraction"):
        L.swap_to_noisy(own, 1.5, 100, torch.Generator())


def test_the_corpus_objects_are_the_corpus_scenes():
    from seedvlm.pretrain.pipeline import vision_corpus

    images, labels, cat_ids, objects = vision_corpus(8, 64, seed=5, with_objects=True)
    plain = vision_corpus(8, 64, seed=5)
    assert np.array_equal(plain[0], images) and np.array_equal(plain[1], labels)
    for i, objs in enumerate(objects):
        assert sorted({c for c, _, _ in objs}) == np.flatnonzero(labels[i]).tolist()
        assert all(0 < n <= w * h for _, (_, _, w, h), n in objs)


@pytest.mark.slow
def test_levers_are_off_by_default_and_change_the_stages_when_on(micro_world, tmp_path):
    """The shipped recipe is unchanged (no lever in the stage summaries); with both levers on, the vision stage saw
    degraded views and the language stages uninformative images, in about the asked shares."""
    import json

    from seedvlm.cli import main
    from seedvlm.pretrain.config import PretrainConfig

    assert PretrainConfig().vision_degrade == 0.0 and PretrainConfig().uninformative == 0.0
    common = ["--world", str(micro_world), "--text-steps", "0", "--vision-steps", "6", "--vision-pool", "64",
              "--vision-batch", "8", "--align-epochs", "0.3", "--instruct-epochs", "0.3", "--batch-size", "4",
              "--readiness-images", "0"]
    assert main(["pretrain", *common, "--out", str(tmp_path / "off")]) == 0
    off = json.loads((tmp_path / "off" / "pretrain.json").read_text())["stages"]
    assert "degraded_share" not in off["vision"] and "uninformative_share" not in off["instruct"]
    assert "noisy_share" not in off["instruct"] and PretrainConfig().noisy_views == 0.0
    assert main(["pretrain", *common, "--out", str(tmp_path / "on"), "--vision-degrade", "0.5",
                 "--uninformative", "0.25", "--uninformative-images", "3", "--noisy-views", "0.4",
                 "--noisy-alpha", "0.2,0.5"]) == 0
    on = json.loads((tmp_path / "on" / "pretrain.json").read_text())["stages"]
    assert 0.25 <= on["vision"]["degraded_share"] <= 0.75
    assert 0.05 <= on["align"]["uninformative_share"] <= 0.5 and 0.05 <= on["instruct"]["uninformative_share"] <= 0.5
    assert 0.1 <= on["align"]["noisy_share"] <= 0.7 and 0.1 <= on["instruct"]["noisy_share"] <= 0.7
    assert json.loads((tmp_path / "on" / "pretrain.json").read_text())["config"]["noisy_alpha"] == [0.2, 0.5]
    assert on["instruct"]["loss"] != off["instruct"]["loss"]
