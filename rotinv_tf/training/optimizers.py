"""Adam as the authors' PyTorch code runs it: β₁ = 0.5, and weight decay coupled to the gradient.

PyTorch's `Adam(weight_decay=λ)` adds λ·w to each gradient before the moment estimates (L2
regularisation). Keras' `Adam(weight_decay=λ)` is the decoupled form (AdamW): it subtracts
lr·λ·w from the weights after the step, so with the paper's lr 1e-4 and λ 1e-5 it shrinks a weight
by 1e-9 per step, i.e. not at all. `CoupledDecayAdam` is the PyTorch form.
"""
import keras


class CoupledDecayAdam(keras.optimizers.Adam):
    """Adam whose `l2` adds l2·w to every gradient before the update (PyTorch's weight decay)."""

    def __init__(self, learning_rate: float = 1e-4, l2: float = 0.0, **kwargs):
        if kwargs.get("weight_decay"):
            raise ValueError("CoupledDecayAdam takes l2 (coupled), not Keras' weight_decay")
        super().__init__(learning_rate, **kwargs)
        self.l2 = float(l2)

    def update_step(self, gradient, variable, learning_rate) -> None:
        if self.l2:
            gradient = gradient + self.l2 * keras.ops.cast(variable, gradient.dtype)
        super().update_step(gradient, variable, learning_rate)

    def get_config(self) -> dict:
        return {**super().get_config(), "l2": self.l2}


def adam(learning_rate: float, beta_1: float, weight_decay: float) -> CoupledDecayAdam:
    """Adam with PyTorch's meaning of `weight_decay` (L2 added to the gradient)."""
    return CoupledDecayAdam(learning_rate, l2=weight_decay, beta_1=beta_1)
