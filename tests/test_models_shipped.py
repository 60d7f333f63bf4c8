"""The shipped facial-vitiligo weights: load, contract, speed and accuracy through predict."""
from __future__ import annotations


import numpy as np
import pytest

from models.facial.inference import DEFAULT_WEIGHTS, LesionSegmenter, config_path_for
from models.metrics import confusion, f1, f_vitiligo
from models.facial.synthetic import astronaut_sample, generate_sample, sample_rng

HELD_OUT_SEED = 424_242  # not a training seed

@pytest.fixture(scope="module")
def segmenter() -> LesionSegmenter:
    return LesionSegmenter.load()


def test_shipped_files_are_small_and_complete():
    assert DEFAULT_WEIGHTS.stat().st_size < 15 * 1024 * 1024
    assert config_path_for(DEFAULT_WEIGHTS).exists()
    assert DEFAULT_WEIGHTS.with_suffix(".md").exists()


def test_identity_and_contract(segmenter):
    assert segmenter.name == "facial_vitiligo_ddrnet23slim"
    assert isinstance(segmenter.version, str) and segmenter.version
    assert len(segmenter.weights_sha256) == 64 and "DDRNet" in segmenter.architecture
    rng = np.random.default_rng(0)
    roi = rng.integers(0, 255, (1500, 1200, 3), dtype=np.uint8)
    mask = np.zeros((1500, 1200), bool)
    mask[100:1400, 150:1050] = True
    prob = segmenter.predict(roi, mask)
    assert prob.shape == (1500, 1200) and prob.dtype == np.float32
    assert 0.0 <= prob.min() and prob.max() <= 1.0 and (prob[~mask] == 0).all()


def test_predict_handles_a_large_roi(segmenter):
    """A 1600x2000 ROI (a face in a 2832x4240 photograph) comes back at full size.

    Its speed is a figure in benchmarks/bench_facial_vitiligo.py, not an assertion here.
    """
    s = generate_sample(sample_rng(HELD_OUT_SEED, 0), 384, astronaut_fraction=0.0)
    import cv2

    roi = cv2.resize(s.image, (1600, 2000), interpolation=cv2.INTER_LINEAR)
    mask = cv2.resize(s.skin_mask.astype(np.uint8), (1600, 2000), interpolation=cv2.INTER_NEAREST).astype(bool)
    prob = segmenter.predict(roi, mask)
    assert prob.shape == (2000, 1600) and prob.dtype == np.float32
    assert (prob[~mask] == 0).all()


def test_accuracy_on_held_out_synthetic_and_astronaut(segmenter):
    f1s, errors = [], []
    for i in range(6):
        rng = sample_rng(HELD_OUT_SEED, 100 + i)
        s = astronaut_sample(rng, 900) if i % 3 == 2 else generate_sample(rng, 512, astronaut_fraction=0.0,
                                                                          uv=bool(i % 3))
        pred = (segmenter.predict(s.image, s.skin_mask) >= 0.5) & s.skin_mask
        if s.lesion_mask.any():
            f1s.append(f1(confusion(pred, s.lesion_mask, s.skin_mask)))
        errors.append(abs(f_vitiligo(pred, s.skin_mask) - f_vitiligo(s.lesion_mask, s.skin_mask)))
    assert np.median(f1s) > 0.7
    assert np.median(errors) < 2.0
