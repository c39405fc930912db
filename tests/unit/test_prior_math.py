"""The ImageNet prior's fit without SciPy (whose import cost 0.3 s of every run): its
binomial tail, 1-D and box minimisers checked against SciPy's own on the same problems."""

import subprocess
import sys

import numpy as np
import pytest
from scipy.optimize import minimize
from scipy.special import betainc

from mtl.training import prior


@pytest.mark.parametrize(
    ("k", "n", "p"), [(1, 1, 0.5), (3, 20, 0.5), (16, 20, 0.5), (90, 100, 0.51), (1, 400, 0.01),
                      (400, 400, 0.99), (700, 2000, 0.3), (5, 10, 0.999)],
)  # fmt: skip
def test_binomial_tail_is_scipys_regularised_incomplete_beta(k, n, p):
    assert prior.binomial_tail(k, n, p) == pytest.approx(betainc(k, n - k + 1, p), rel=1e-9)


def test_binomial_tail_edges():
    assert prior.binomial_tail(0, 10, 0.3) == 1.0
    assert prior.binomial_tail(11, 10, 0.3) == 0.0
    assert prior.binomial_tail(3, 10, 0.0) == 0.0 and prior.binomial_tail(3, 10, 1.0) == 1.0


def test_golden_section_finds_the_minimum_and_a_boundary_one():
    x, fx = prior.golden_section(lambda t: (t - 1.3) ** 2 + 2, -5, 5)
    assert x == pytest.approx(1.3, abs=1e-4) and fx == pytest.approx(2.0)
    x, _ = prior.golden_section(lambda t: -t, 0, 3)
    assert x == pytest.approx(3.0, abs=1e-4)


def _problem(seed):
    rng = np.random.default_rng(seed)
    n, c, v = int(rng.integers(20, 300)), int(rng.integers(2, 12)), int(rng.integers(1, 3))
    labels = rng.integers(0, c, n)
    head = rng.normal(size=(n, v, c)) * rng.uniform(0.3, 3)
    head[np.arange(n), :, labels] += rng.uniform(0, 3)
    side = rng.normal(size=(n, v, c)) * rng.uniform(0.3, 3)
    side[np.arange(n), :, labels] += rng.uniform(0, 5)
    return head, side, labels


@pytest.mark.parametrize("seed", range(10))
def test_the_blend_likelihood_is_as_low_as_scipys(seed):
    """The box minimiser reaches SciPy's L-BFGS-B optimum (or a lower one) from the same start."""
    head, side, labels = _problem(seed)

    def nll(ab):
        return prior._views_nll(head, side, labels, float(ab[0]), float(ab[1]))

    start = np.array([1.0, 0.0])
    want = minimize(nll, start, bounds=[(0, 20), (0, 20)], method="L-BFGS-B").fun
    x, got = prior.box_newton(
        lambda ab: prior._nll_and_grad(head, side, labels, float(ab[0]), float(ab[1])),
        start,
        0.0,
        20.0,
    )
    assert np.all((x >= 0) & (x <= 20))
    assert got <= want + 1e-7
    assert got == pytest.approx(nll(x))


def test_the_gradient_is_the_likelihoods():
    head, side, labels = _problem(3)
    _, grad = prior._nll_and_grad(head, side, labels, 0.7, 1.3)
    e = 1e-6
    for i, (da, db) in enumerate(((e, 0), (0, e))):
        up = prior._views_nll(head, side, labels, 0.7 + da, 1.3 + db)
        down = prior._views_nll(head, side, labels, 0.7 - da, 1.3 - db)
        assert grad[i] == pytest.approx((up - down) / (2 * e), rel=1e-5, abs=1e-9)


def test_training_does_not_import_scipy():
    code = (
        "import sys, numpy as np\n"
        "from mtl.training import headrun, prior, headfit\n"
        "rng = np.random.default_rng(0)\n"
        "labels = np.arange(60) % 2\n"
        "z = rng.normal(size=(60, 2, 2)); z[np.arange(60), :, labels] += 3\n"
        "prior.fit(z, z * 2, labels)\n"
        "heads = [headfit.Head.fresh(8, 2, [4, 4], 0.0, s) for s in (1, 2)]\n"
        "headfit.side_by_side(heads)\n"
        "assert 'scipy' not in sys.modules, sorted(m for m in sys.modules if 'scipy' in m)[:3]\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
