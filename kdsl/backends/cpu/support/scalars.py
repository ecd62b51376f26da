"""Scalar functions of float32 the generated kernels call inside their fused loops, on every target.

They are plain Python here; `compiled_helpers(jit)` compiles them for one target (Numba's CPU
`njit`, or CUDA device functions), each calling the others as compiled for the same target.
`tanh` and `sigmoid` are rational approximations accurate to a few float32 ulps: in a
recurrent cell they run on every gate of every step, where libm calls would cost more than
the rest of the step.
"""

import math
import types

import numpy as np

__all__ = ["compiled_helpers"]  # what generated code names

_TANH_CLAMP = np.float32(7.90531110763549805)
# numerator (odd powers x**1..x**13) and denominator (even powers x**0..x**6) of tanh's rational fit
_A1 = np.float32(4.89352455891786e-03)
_A3 = np.float32(6.37261928875436e-04)
_A5 = np.float32(1.48572235717979e-05)
_A7 = np.float32(5.12229709037114e-08)
_A9 = np.float32(-8.60467152213735e-11)
_A11 = np.float32(2.00018790482477e-13)
_A13 = np.float32(-2.76076847742355e-16)
_B0 = np.float32(4.89352518554385e-03)
_B2 = np.float32(2.26843463243900e-03)
_B4 = np.float32(1.18534705686654e-04)
_B6 = np.float32(1.19825839466702e-06)
_HALF, _ONE, _ZERO, _SIX = np.float32(0.5), np.float32(1.0), np.float32(0.0), np.float32(6.0)
_SELU_SCALE, _SELU_ALPHA = np.float32(1.0507009873554805), np.float32(1.6732632423543772)
_SQRT_HALF, _INV_SQRT_2PI = np.float32(0.7071067811865476), np.float32(0.3989422804014327)
_LEAKY_SLOPE = np.float32(0.2)


def tanh_f32(x):
    """tanh as a 13/6 rational function on [-7.9, 7.9]; outside, tanh is ±1 in float32."""
    x = min(max(x, -_TANH_CLAMP), _TANH_CLAMP)
    x2 = x * x
    p = x2 * _A13 + _A11
    p = x2 * p + _A9
    p = x2 * p + _A7
    p = x2 * p + _A5
    p = x2 * p + _A3
    p = x2 * p + _A1
    p = x * p
    q = x2 * _B6 + _B4
    q = x2 * q + _B2
    q = x2 * q + _B0
    return p / q


def sigmoid_f32(x):
    return _HALF + _HALF * tanh_f32(_HALF * x)


def relu_f32(x):
    return max(x, _ZERO)


def step_f32(x):
    """The derivative of relu: 1 where x > 0."""
    return _ONE if x > _ZERO else _ZERO


def relu6_f32(x):
    return min(max(x, _ZERO), _SIX)


def leaky_relu_f32(x):
    return x if x > _ZERO else _LEAKY_SLOPE * x


def elu_f32(x):
    return x if x > _ZERO else math.exp(x) - _ONE


def selu_f32(x):
    return _SELU_SCALE * (x if x > _ZERO else _SELU_ALPHA * (math.exp(x) - _ONE))


def gelu_f32(x):
    return _HALF * x * (_ONE + math.erf(x * _SQRT_HALF))


def gelu_grad_f32(x):
    return _HALF * (_ONE + math.erf(x * _SQRT_HALF)) + x * _INV_SQRT_2PI * math.exp(-_HALF * x * x)


def softplus_f32(x):
    return max(x, _ZERO) + math.log1p(math.exp(-abs(x)))


HELPERS = (
    tanh_f32,
    sigmoid_f32,
    relu_f32,
    step_f32,
    relu6_f32,
    leaky_relu_f32,
    elu_f32,
    selu_f32,
    gelu_f32,
    gelu_grad_f32,
    softplus_f32,
)
TEMPLATE_CONSTANTS = ("_SELU_SCALE", "_SELU_ALPHA")  # named by ops' scalar templates (kdsl.ir.ops.elementwise)


def compiled_helpers(jit) -> dict:
    """Every helper compiled by `jit`, in a namespace of their own where the helpers they call are compiled by the
    same `jit`, and the constants the ops' scalar templates name: the globals a generated module needs."""
    namespace = dict(globals())
    for helper in HELPERS:
        plain = types.FunctionType(helper.__code__, namespace, helper.__name__, helper.__defaults__)
        namespace[helper.__name__] = jit(plain)
    return {name: namespace[name] for name in (*(h.__name__ for h in HELPERS), *TEMPLATE_CONSTANTS)}
