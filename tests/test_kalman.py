"""Kalman filter: vectorised steps vs filterpy, deep_sort's noise model, gating."""

import numpy as np
import pytest
from filterpy.kalman import KalmanFilter

from trackpipe.trackers import kalman
from trackpipe.trackers.kalman import KalmanParams


def _filterpy_run(z0, zs, p):
    """Reference: one filterpy KalmanFilter with deep_sort's F, H and height-scaled Q, R."""
    kf = KalmanFilter(dim_x=8, dim_z=4)
    kf.F = kalman.transition()
    kf.H = np.eye(4, 8)
    mean, cov = kalman.initiate(z0[None], p)
    kf.x = mean[0].reshape(8, 1).copy()
    kf.P = cov[0].copy()
    out = []
    for z in zs:
        q = np.diag(kalman.process_noise(kf.x[3:4, 0], p)[0])
        kf.predict(Q=q)
        prior = (kf.x.ravel().copy(), kf.P.copy())
        if z is not None:
            r = np.diag(kalman.measurement_noise(kf.x[3:4, 0], p)[0])
            kf.update(z.reshape(4, 1), R=r)
        out.append((prior, (kf.x.ravel().copy(), kf.P.copy())))
    return out


@pytest.mark.parametrize("params", [KalmanParams(), KalmanParams(std_weight_velocity=1 / 80)])
def test_matches_filterpy_on_three_tracks(params):
    rng = np.random.default_rng(0)
    n_tracks, steps = 3, 40
    start = np.array([[100.0, 200.0, 0.5, 80.0], [400.0, 50.0, 0.4, 150.0], [20.0, 300.0, 0.6, 40.0]])
    vel = np.array([[3.0, -1.0, 0.0, 0.2], [-5.0, 2.0, 0.0, -0.3], [0.5, 0.5, 0.001, 0.0]])
    zs = [[start[i] + (k + 1) * vel[i] + rng.normal(0, [2, 2, 0.01, 1.5]) for k in range(steps)]
          for i in range(n_tracks)]
    # track 2 misses a few frames (predict only)
    for k in (5, 6, 7, 20):
        zs[2][k] = None
    refs = [_filterpy_run(start[i], zs[i], params) for i in range(n_tracks)]

    mean, cov = kalman.initiate(start, params)
    for k in range(steps):
        mean, cov = kalman.predict(mean, cov, params)
        for i in range(n_tracks):
            np.testing.assert_allclose(mean[i], refs[i][k][0][0], rtol=1e-9, atol=1e-9)
            np.testing.assert_allclose(cov[i], refs[i][k][0][1], rtol=1e-9, atol=1e-9)
        rows = [i for i in range(n_tracks) if zs[i][k] is not None]
        z = np.array([zs[i][k] for i in rows])
        mean[rows], cov[rows] = kalman.update(mean[rows], cov[rows], z, params)
        for i in range(n_tracks):
            np.testing.assert_allclose(mean[i], refs[i][k][1][0], rtol=1e-9, atol=1e-8)
            np.testing.assert_allclose(cov[i], refs[i][k][1][1], rtol=1e-8, atol=1e-8)


def test_initiate_uses_deep_sort_noise():
    mean, cov = kalman.initiate(np.array([[10.0, 20.0, 0.5, 100.0]]))
    np.testing.assert_array_equal(mean[0], [10, 20, 0.5, 100, 0, 0, 0, 0])
    # deep_sort: std = [2*h/20, 2*h/20, 1e-2, 2*h/20, 10*h/160, 10*h/160, 1e-5, 10*h/160]
    std = np.array([10, 10, 1e-2, 10, 6.25, 6.25, 1e-5, 6.25])
    np.testing.assert_allclose(cov[0], np.diag(std ** 2))


def test_predict_is_pure_and_constant_velocity():
    mean, cov = kalman.initiate(np.array([[0.0, 0.0, 1.0, 50.0]]))
    mean[0, 4:] = [2.0, -1.0, 0.0, 0.5]
    m0, c0 = mean.copy(), cov.copy()
    m1, c1 = kalman.predict(mean, cov)
    np.testing.assert_array_equal(mean, m0)
    np.testing.assert_array_equal(cov, c0)
    np.testing.assert_allclose(m1[0, :4], [2.0, -1.0, 1.0, 50.5])
    assert np.all(np.diag(c1[0]) > np.diag(c0[0]))          # uncertainty grows


def test_velocity_is_learned_from_a_moving_box():
    mean, cov = kalman.initiate(np.array([[100.0, 100.0, 0.5, 60.0]]))
    for k in range(1, 40):
        mean, cov = kalman.predict(mean, cov)
        mean, cov = kalman.update(mean, cov, np.array([[100.0 + 4 * k, 100.0 - 2 * k, 0.5, 60.0]]))
    np.testing.assert_allclose(mean[0, 4:6], [4.0, -2.0], atol=0.05)
    pred, _ = kalman.predict(mean, cov)
    np.testing.assert_allclose(pred[0, :2], [100 + 4 * 40, 100 - 2 * 40], atol=0.5)


def test_gating_distance_is_squared_mahalanobis():
    rng = np.random.default_rng(1)
    mean, cov = kalman.initiate(np.array([[50.0, 60.0, 0.5, 80.0], [300.0, 200.0, 0.4, 120.0]]))
    mean, cov = kalman.predict(mean, cov)
    z = rng.normal([100, 100, 0.5, 90], [60, 60, 0.05, 10], size=(5, 4))
    d2 = kalman.gating_distance(mean, cov, z)
    d2_pos = kalman.gating_distance(mean, cov, z, only_position=True)
    assert d2.shape == (2, 5)
    pm, s = kalman.project(mean, cov)
    for i in range(2):
        for j in range(5):
            d = z[j] - pm[i]
            assert d2[i, j] == pytest.approx(d @ np.linalg.inv(s[i]) @ d, rel=1e-9)
            dp = d[:2]
            assert d2_pos[i, j] == pytest.approx(dp @ np.linalg.inv(s[i][:2, :2]) @ dp, rel=1e-9)
    # a measurement at the predicted state has distance 0; gate thresholds are chi2 95%
    assert kalman.gating_distance(mean, cov, pm)[[0, 1], [0, 1]] == pytest.approx([0, 0])
    assert kalman.CHI2INV95[4] == pytest.approx(9.4877)
    assert kalman.gating_distance(mean[:0], cov[:0], z).shape == (0, 5)
