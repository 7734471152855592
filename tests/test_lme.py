"""log-mean-exp (docs/maths.md, "Log-mean-exp"): its facts for ANY finite log-weights (hypothesis), its gradient, and -inf handling."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy.special import logsumexp

from conftest import AGREE_RTOL, assert_fd_close
from npvae.checks.gradcheck import elementwise
from npvae.maths.lme import log_mean_exp, softmax

finite = st.floats(-1e4, 1e4, allow_nan=False, allow_infinity=False)
log_weights = arrays(np.float64, st.integers(1, 30), elements=finite)


@settings(max_examples=200, deadline=None)
@given(log_weights)
def test_between_mean_and_max(a):
    v = log_mean_exp(a)
    slack = 1e-12 * max(1.0, np.abs(a).max())
    assert a.mean() - slack <= v <= a.max() + slack
    assert v >= a.max() - np.log(a.size) - slack


@settings(max_examples=200, deadline=None)
@given(log_weights, st.floats(-1e3, 1e3), st.randoms())
def test_shift_and_permutation_invariance(a, c, r):
    v = log_mean_exp(a)
    tol = 1e-12 * max(1.0, np.abs(a).max() + abs(c))
    assert abs(log_mean_exp(a + c) - (v + c)) <= tol
    perm = np.array(r.sample(range(a.size), a.size))
    assert abs(log_mean_exp(a[perm]) - v) <= tol


@settings(max_examples=100, deadline=None)
@given(arrays(np.float64, st.integers(1, 12), elements=st.floats(-30, 30)))
def test_matches_scipy_and_gradient_is_softmax(a):
    assert log_mean_exp(a) == pytest.approx(logsumexp(a) - np.log(a.size), rel=1e-13, abs=1e-13)
    w = softmax(a)
    assert w.sum() == pytest.approx(1.0, rel=1e-14)
    fd = elementwise(lambda t: float(log_mean_exp(t[0])), [a], 0, 1e-6)
    assert_fd_close(w, fd, log_mean_exp(a))


def test_subset_average_at_most_full(rng):
    """Averaging LME over all subsets of size m < K gives at most LME over all K (Burda et al. 2016, Thm 1)."""
    from itertools import combinations

    a = rng.standard_normal(7) * 3
    for m in range(1, 7):
        subs = [log_mean_exp(a[list(c)]) for c in combinations(range(7), m)]
        assert np.mean(subs) <= log_mean_exp(a) + 1e-12


def test_minus_inf():
    a = np.array([[-np.inf, 0.0], [-np.inf, -np.inf]])  # axis 0 = samples: column 1 has one finite weight
    v = log_mean_exp(a, axis=0)
    assert v[0] == -np.inf and v[1] == pytest.approx(-np.log(2))
    assert not np.isnan(v).any()
    with pytest.raises(ValueError, match="all -inf|every log-weight is -inf"):
        softmax(a, axis=0)


@pytest.mark.parametrize("bad", [np.array([np.nan, 0.0]), np.array([np.inf, 0.0]), np.array([], dtype=float), np.array([1, 2])])
def test_bad_input(bad):
    with pytest.raises(ValueError):
        log_mean_exp(bad)


@pytest.mark.parametrize("axis", [0, 1])
def test_float32_preserved_and_agrees_with_float64(rng, axis):
    """float32 in, float32 out for LME and softmax (no silent upcast), and scipy's float64 answer to AGREE_RTOL."""
    from scipy.special import softmax as sp_softmax

    a = (rng.standard_normal((6, 5)) * 8 - 40).astype(np.float32)  # log-weights spread over many nats, as in IWAE
    a[0, 0] = -np.inf  # one dead sample
    v, w = log_mean_exp(a, axis=axis), softmax(a, axis=axis)
    assert v.dtype == np.float32 and w.dtype == np.float32, (v.dtype, w.dtype)
    a64 = a.astype(np.float64)
    tol = AGREE_RTOL[np.float32]
    np.testing.assert_allclose(v, logsumexp(a64, axis=axis) - np.log(a.shape[axis]), rtol=tol)
    np.testing.assert_allclose(w, sp_softmax(a64, axis=axis), rtol=tol, atol=tol * 1e-3)
    assert np.asarray(log_mean_exp(a[:, 0])).dtype == np.float32  # a 1-d slice reduces to a float32 0-d result
