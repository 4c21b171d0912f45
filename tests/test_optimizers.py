"""Adam as the authors' PyTorch code runs it (`rotinv_tf.training.optimizers`)."""
import keras
import numpy as np
import pytest

from rotinv_tf.training.optimizers import CoupledDecayAdam, adam


def _steps(optimizer, start, gradients):
    variable = keras.Variable(np.array(start, np.float32))
    for gradient in gradients:
        grad = gradient(np.asarray(variable)) if callable(gradient) else gradient
        optimizer.apply([keras.ops.convert_to_tensor(np.asarray(grad, np.float32))], [variable])
    return np.asarray(variable)


def test_weight_decay_adds_decay_times_weight_to_the_gradient():
    """Coupled: the same as plain Adam fed g + λ·w (PyTorch's Adam(weight_decay=λ))."""
    decay, start = 0.3, [1.0, -2.0, 3.0]
    grads = [np.array([0.1, 0.2, -0.3]), np.array([-0.5, 0.0, 0.4]), np.array([0.2, 0.1, 0.0])]
    coupled = _steps(adam(1e-2, 0.5, decay), start, grads)
    fed = _steps(keras.optimizers.Adam(1e-2, beta_1=0.5), start,
                 [lambda w, g=g: g + decay * w for g in grads])
    np.testing.assert_allclose(coupled, fed, rtol=1e-6)


def test_weight_decay_is_not_keras_decoupled_form():
    """With a zero loss gradient Adam sees λ·w and moves each weight by ~lr on its first step;
    Keras' decoupled decay would move it by only lr·λ·w."""
    moved = 3.0 - _steps(adam(0.1, 0.5, 0.01), [3.0], [np.zeros(1)])[0]
    keras_moved = 3.0 - _steps(keras.optimizers.Adam(0.1, weight_decay=0.01), [3.0],
                               [np.zeros(1)])[0]
    assert moved == pytest.approx(0.1, rel=1e-3)
    assert keras_moved == pytest.approx(0.1 * 0.01 * 3.0, rel=1e-3)


def test_beta_1_is_the_authors():
    optimizer = adam(1e-4, 0.5, 1e-5)
    assert optimizer.beta_1 == 0.5 and optimizer.l2 == 1e-5
    assert CoupledDecayAdam.from_config(optimizer.get_config()).l2 == 1e-5


def test_keras_decoupled_weight_decay_is_refused():
    with pytest.raises(ValueError, match="l2"):
        CoupledDecayAdam(1e-4, weight_decay=1e-5)
