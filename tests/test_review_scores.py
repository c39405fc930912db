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
    from mtl.pipeline.config import TrainConfig
    from mtl.review import Thresholds, review

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
    from mtl.pipeline.config import TrainConfig
    from mtl.review import scores
    from mtl.review.features import pooled_features

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
    stats[10] = Stats(0.5, 0.01, 1.5, 300, 200, detail_area=t.tiny * 0.999)
    scores = Scores(probs, probs[:, 0].copy(), 1.0, off, "imagenet-concepts", dup, dup_sim)
    labels = np.zeros(12, np.int64)
    found = flags.find([Path(f"{i}.jpg") for i in range(12)], labels, ["a", "b"], scores, stats, t)
    by_row = {f.index: (f.reason, f.score) for f in found}
    just_past = {0: "wrong_label", 2: "off_topic", 4: "duplicate", 6: "dark", 8: "blurry",
                 9: "odd_aspect", 10: "tiny_subject"}  # fmt: skip
    for row, reason in just_past.items():
        assert by_row[row][0] == reason
        assert by_row[row][1] == pytest.approx(0.5, abs=0.01), reason
    for row, reason in {1: "wrong_label", 3: "off_topic", 5: "duplicate", 7: "dark"}.items():
        assert by_row[row][0] == reason and by_row[row][1] > 0.94, reason
    # Worst first over every reason: the four far past their thresholds lead the list.
    assert {f.index for f in found[:4]} == {1, 3, 5, 7}


@pytest.fixture(scope="module")
def ants_and_bees(tmp_path_factory):
    """30 ants and 30 bees, plus 4 of each filed under the other class."""
    from tests.conftest import HYMENOPTERA

    root = tmp_path_factory.mktemp("hym") / "data"
    swapped: dict[str, str] = {}
    for true, filed in (("ants", "bees"), ("bees", "ants")):
        photos = sorted((HYMENOPTERA / true).iterdir())
        (root / true).mkdir(parents=True, exist_ok=True)
        (root / filed).mkdir(parents=True, exist_ok=True)
        for p in photos[:30]:
            shutil.copy(p, root / true / p.name)
        for p in photos[30:34]:
            shutil.copy(p, root / filed / f"swapped-{p.name}")
            swapped[f"swapped-{p.name}"] = true
    return root, swapped


def test_imagenet_classes_lean_on_the_concept_classifier(ants_and_bees, cache_dir):
    """Ants and bees are ImageNet concepts: the class means of MobileNet's own ImageNet
    probabilities help a regression on 68 photos with 8 wrong labels, and the likelihood
    of the given labels says so: the concepts get weight (past 0.5 at alpha 0.75, 0.1 at
    1.0, whose own features separate ants from bees better)."""
    from mtl.pipeline.config import TrainConfig
    from mtl.review import review, scores
    from mtl.review.concepts import imagenet_probabilities
    from mtl.review.features import pooled_features

    root, swapped = ants_and_bees
    result = review(root, TrainConfig(alpha=ALPHA), cache_dir=cache_dir, write_report=False)
    assert result.concept_weight >= 0.1 and result.to_json()["concept_weight"] >= 0.1
    wrong = {f.path.name: f for f in result.findings if f.reason == "wrong_label"}
    details = [(n, f.detail) for n, f in wrong.items()]
    found = [n for n in swapped if n in wrong and wrong[n].suggested == swapped[n]]
    assert len(found) >= 7, details  # recall, with the true class suggested
    assert len(set(wrong) - set(swapped)) <= 2, details  # precision
    # Without the concept classifier (weight 0) the same photos score worse.
    pooled = pooled_features(root, TrainConfig(alpha=ALPHA), cache_dir=cache_dir)
    concepts = imagenet_probabilities(pooled.x, "mobilenet", ALPHA, 224)
    raw = scores.out_of_fold(pooled.x, pooled.labels)
    blended, _, w = scores.combine(raw, scores.concept_class_probs(concepts, pooled.labels),
                                   pooled.labels)  # fmt: skip
    alone, _ = scores.calibrate(raw, pooled.labels)
    rows = np.arange(len(pooled.labels))
    given = pooled.labels
    assert w == result.concept_weight
    assert -np.log(blended[rows, given]).mean() < -np.log(alone[rows, given]).mean()


def test_concept_classifier_leaves_each_photo_out_of_its_class_mean():
    from mtl.review import scores

    # Two photos per class; photo 0's own class mean is photo 1 alone, and so on.
    c = np.array([[0.7, 0.2, 0.1], [0.6, 0.3, 0.1], [0.1, 0.2, 0.7], [0.2, 0.1, 0.7]])
    labels = np.array([0, 0, 1, 1])
    p = scores.concept_class_probs(c, labels)
    log_c = np.log(c)
    for i, other_same, others in ((0, 1, [2, 3]), (2, 3, [0, 1])):
        z = np.array([log_c[i] @ c[other_same], log_c[i] @ c[others].mean(axis=0)])
        if labels[i] == 1:
            z = z[::-1]
        np.testing.assert_allclose(p[i], np.exp(z) / np.exp(z).sum(), rtol=1e-12)
    # Without a concept classifier the weight is 0 and the result is the calibration.
    raw = np.array([[0.8, 0.2], [0.6, 0.4], [0.3, 0.7], [0.45, 0.55]])
    probs, t, w = scores.combine(raw, None, labels)
    assert w == 0.0
    np.testing.assert_allclose(probs, scores.calibrate(raw, labels)[0])


def test_a_small_subject_on_a_plain_or_blurred_background_is_flagged_and_real_photos_not(
    tmp_path,
):
    """tiny_subject from cheap image statistics: where the photo's detail is. Real photos
    of both shared datasets are never flagged; a real photo shrunk into a fifth of the
    width on a plain or a blurred background always is (and is not called blurry)."""
    from PIL import Image, ImageFilter

    from mtl.data.images import list_images
    from mtl.review import flags
    from mtl.review.quality import all_stats
    from tests.conftest import HYMENOPTERA

    t = flags.Thresholds()
    real = list_images(HYMENOPTERA) + list_images(CLOTHING)
    assert min(s.detail_area for s in all_stats(real) if s) > t.tiny
    made = []
    for i, p in enumerate(real[::40][:12]):
        with Image.open(p) as img:
            subject = img.convert("RGB")
            subject.thumbnail((128, 128))  # within a fifth of the width, 5% of the area
        with Image.open(real[-1 - i]) as other:
            blurred = other.convert("RGB").resize((640, 480)).filter(ImageFilter.GaussianBlur(25))
        background = blurred if i % 2 else Image.new("RGB", (640, 480), (40 * (i % 6), 90, 160))
        background.paste(subject, (30 + 37 * i, 60 + 11 * i))
        made.append(tmp_path / f"small_{i}.jpg")
        background.save(made[-1], quality=90)
    stats = all_stats(made)
    assert all(s is not None and s.detail_area < t.tiny for s in stats)
    scores_of = np.zeros(len(made))
    from mtl.review.scores import Scores

    blank = Scores(np.full((len(made), 2), 0.5), np.full(len(made), 0.5), 1.0, scores_of,
                   "imagenet-concepts", np.full(len(made), -1), scores_of)  # fmt: skip
    found = flags.find(made, np.zeros(len(made), np.int64), ["a", "b"], blank, stats, t)
    assert [f.reason for f in found] == ["tiny_subject"] * len(made)
