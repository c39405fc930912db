"""`mtl review`'s wrong-label rule on real photos of 8 classes: calibrated out-of-fold
probabilities and a threshold relative to chance (``wrong_label / k``)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from tests.conftest import ALPHA, SHARED

pytestmark = pytest.mark.slow

CLOTHING = SHARED / "data" / "clothing" / "train"
PER_CLASS = 40
# (true class, the class it is filed under, how many): far-apart classes, so the
# out-of-fold head is sure of the true one.
SWAPS = [("shoes", "dress", 2), ("pants", "t_shirt", 2), ("dress", "shoes", 1)]


@pytest.fixture(scope="module")
def clothing(tmp_path_factory):
    """40 clothing photos of each of 8 classes, 5 of them filed under a wrong class."""
    if not CLOTHING.is_dir():
        pytest.skip(f"no clothing photos at {CLOTHING}")
    root = tmp_path_factory.mktemp("clothing") / "data"
    swapped: dict[str, str] = {}  # file name -> true class
    for d in sorted(CLOTHING.iterdir()):
        (root / d.name).mkdir(parents=True)
        for p in sorted(d.glob("*.jpg"))[:PER_CLASS]:
            shutil.copy(p, root / d.name / p.name)
    for true, filed, n in SWAPS:
        for p in sorted((CLOTHING / true).glob("*.jpg"))[PER_CLASS : PER_CLASS + n]:
            shutil.copy(p, root / filed / f"swapped-{p.name}")
            swapped[f"swapped-{p.name}"] = true
    return root, swapped


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("review_scores_features")


def test_wrong_labels_among_eight_classes_found_with_their_true_class(clothing, cache_dir):
    from mtl.review import Thresholds, review
    from mtl.training.config import TrainConfig

    root, swapped = clothing
    result = review(root, TrainConfig(alpha=ALPHA), cache_dir=cache_dir, write_report=False)
    wrong = {f.path.name: f for f in result.findings if f.reason == "wrong_label"}
    details = [(n, f.detail) for n, f in wrong.items()]
    found = [name for name in swapped if name in wrong]
    assert len(found) >= len(swapped) - 1, details  # recall
    # Shoes are unlike any other class: the suggestion is right (a dress may pass for a
    # t-shirt).
    assert all(wrong[n].suggested == "shoes" for n in found if swapped[n] == "shoes"), details
    # Few clean photos among them: shirt / longsleeve / t_shirt / outwear blur, and with 40
    # photos a class the head is weak (17 of 320 here; the benchmark's 65 a class do better).
    assert len(set(wrong) - set(swapped)) <= 24, details
    # The threshold is relative to chance: below 0.7 / 8 of the given class, calibrated.
    below = Thresholds().wrong_label / len(result.classes)
    assert all(f.probability < below for f in wrong.values())
    assert all(f.suggested_probability > f.probability for f in wrong.values())


def test_calibration_sharpens_under_confident_out_of_fold_probabilities(clothing, cache_dir):
    from mtl.review import scores
    from mtl.review.features import pooled_features
    from mtl.training.config import TrainConfig

    root, _ = clothing
    pooled = pooled_features(root, TrainConfig(alpha=ALPHA), cache_dir=cache_dir)
    raw = scores.out_of_fold(pooled.x, pooled.labels)
    calibrated, temperature = scores.calibrate(raw, pooled.labels)
    rows = np.arange(len(pooled.labels))

    def nll(p: np.ndarray) -> float:
        return float(-np.log(np.clip(p[rows, pooled.labels], 1e-12, 1.0)).mean())

    # The regularised logistic regression is under-confident: a temperature below 1.
    assert 0.05 <= temperature < 1.0
    assert nll(calibrated) < nll(raw)
    np.testing.assert_allclose(calibrated.sum(axis=1), 1.0, atol=1e-9)
    assert (calibrated.argmax(axis=1) == raw.argmax(axis=1)).all()  # ranks unchanged
    s = scores.score(pooled.x, pooled.labels, None)
    assert s.temperature == pytest.approx(temperature)
    np.testing.assert_allclose(s.label_quality, s.probs[rows, pooled.labels])


def test_calibrate_is_the_identity_for_already_calibrated_probabilities():
    # Labels drawn from the probabilities themselves: the best temperature is about 1.
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(4000, 4)) * 2
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    labels = np.array([rng.choice(4, p=row) for row in p])
    from mtl.review import scores

    calibrated, temperature = scores.calibrate(p, labels)
    assert temperature == pytest.approx(1.0, abs=0.1)
    np.testing.assert_allclose(calibrated, p, atol=0.05)


def test_every_reason_scores_one_half_at_its_threshold_so_top_n_ranks_them_alike():
    """The rule itself, on hand-made scores (the model is not the point here): a photo
    just past any threshold scores about 0.5, one far past it near 1, whatever the reason."""
    from pathlib import Path

    from mtl.review import flags
    from mtl.review.quality import Stats
    from mtl.review.scores import Scores

    t = flags.Thresholds()
    k = 2
    below = t.wrong_label / k
    # given class 0 for all; rows: just past / far past each threshold
    probs = np.full((12, k), 0.5)
    off = np.zeros(12)
    dup = np.full(12, -1)
    dup_sim = np.zeros(12)
    plain = Stats(0.5, 0.01, 1.5, 300, 200)
    stats = [plain] * 12
    probs[0] = [below * 0.999, 1 - below * 0.999]  # wrong_label, just past
    probs[1] = [0.0, 1.0]  # wrong_label, far past
    off[2], off[3] = t.off_topic * 1.001, 60.0
    dup[4], dup_sim[4], dup[5], dup_sim[5] = 11, t.duplicate + 1e-4, 11, 1.0
    stats[6] = Stats(t.dark * 0.999, 0.01, 1.5, 300, 200)
    stats[7] = Stats(0.0, 0.01, 1.5, 300, 200)
    stats[8] = Stats(0.5, t.blurry * 0.999, 1.5, 300, 200)
    stats[9] = Stats(0.5, 0.01, t.aspect * 1.001, 300, 100)
    scores = Scores(probs, probs[:, 0].copy(), 1.0, off, "imagenet-concepts", dup, dup_sim)
    labels = np.zeros(12, np.int64)
    found = flags.find([Path(f"{i}.jpg") for i in range(12)], labels, ["a", "b"], scores, stats, t)
    by_row = {f.index: (f.reason, f.score) for f in found}
    just_past = {0: "wrong_label", 2: "off_topic", 4: "duplicate", 6: "dark", 8: "blurry",
                 9: "odd_aspect"}  # fmt: skip
    for row, reason in just_past.items():
        assert by_row[row][0] == reason
        assert by_row[row][1] == pytest.approx(0.5, abs=0.01), reason
    for row, reason in {1: "wrong_label", 3: "off_topic", 5: "duplicate", 7: "dark"}.items():
        assert by_row[row][0] == reason and by_row[row][1] > 0.94, reason
    # Worst first over every reason: the four far past their thresholds lead the list.
    assert {f.index for f in found[:4]} == {1, 3, 5, 7}
