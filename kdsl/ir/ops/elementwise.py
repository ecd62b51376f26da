"""Elementwise ops: arithmetic, activations and their derivatives, constants, masks.

Each is a NumPy function, a scalar Numba template and a gradient rule. The CPU backend
fuses any chain of them, broadcasting included, into a single loop.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from kdsl.ir.ops.base import Op, broadcast_dims, unbroadcast
from kdsl.ir.types import TensorType


class Elementwise(Op):
    elementwise = True

    def infer(self, attrs, *types):
        dtype = "f32" if any(t.dtype == "f32" for t in types) else types[0].dtype
        return [TensorType(dtype, broadcast_dims(*(t.dims for t in types)))]


class Const(Elementwise):
    """A scalar constant; the builder makes one from every Python number it is given."""

    name = "const"
    differentiable = False

    def infer(self, attrs):
        return [TensorType(attrs["dtype"], ())]

    def reference(self, attrs):
        return [np.asarray(attrs["value"], np.float32 if attrs["dtype"] == "f32" else np.int32)]

    def vjp(self, b, eqn, grads):
        return []

    def scalar(self, attrs):
        return f"np.float32({attrs['value']!r})" if attrs["dtype"] == "f32" else f"np.int32({int(attrs['value'])})"


@dataclass(frozen=True)
class Arithmetic(Elementwise):
    """`+ - * /` and friends; the gradient rule gets (builder, inputs, output, output gradient)."""

    name: str
    numpy: Callable
    template: str
    grad: Callable

    def reference(self, attrs, *xs):
        return [np.asarray(self.numpy(*xs))]

    def scalar(self, attrs, *args):
        return self.template.format(*args)

    def vjp(self, b, eqn, grads):
        (g,) = grads
        partials = self.grad(b, *eqn.inputs, eqn.out, g)
        return [unbroadcast(b, p, x) if p is not None else None for p, x in zip(partials, eqn.inputs)]


def _where_greater(b, x, y, g):
    """`g` where x > y, and the rest of `g`: how `maximum` and `minimum` share a gradient between their operands."""
    first = b.d_relu(b.sub(x, y), g)  # g where x - y > 0
    return first, b.sub(g, first)


# fmt: off
ARITHMETIC = [
    Arithmetic("add", np.add, "({0} + {1})", lambda b, x, y, out, g: (g, g)),
    Arithmetic("sub", np.subtract, "({0} - {1})", lambda b, x, y, out, g: (g, b.neg(g))),
    Arithmetic("mul", np.multiply, "({0} * {1})", lambda b, x, y, out, g: (b.mul(g, y), b.mul(g, x))),
    Arithmetic("div", np.divide, "({0} / {1})", lambda b, x, y, out, g: (b.div(g, y), b.neg(b.mul(g, b.div(out, y))))),
    Arithmetic("neg", np.negative, "(-{0})", lambda b, x, out, g: (b.neg(g),)),
    Arithmetic("maximum", np.maximum, "max({0}, {1})", lambda b, x, y, out, g: _where_greater(b, x, y, g)),
    Arithmetic("minimum", np.minimum, "min({0}, {1})", lambda b, x, y, out, g: _where_greater(b, y, x, g)),
    Arithmetic("exp", np.exp, "math.exp({0})", lambda b, x, out, g: (b.mul(g, out),)),
    Arithmetic("log", np.log, "math.log({0})", lambda b, x, out, g: (b.div(g, x),)),
    Arithmetic("square", np.square, "({0} * {0})", lambda b, x, out, g: (b.mul(g, b.mul(x, 2.0)),)),
    Arithmetic("abs", np.abs, "abs({0})", lambda b, x, out, g: (b.mul(g, b.sign(x)),)),
    Arithmetic("sign", np.sign, "np.float32(np.sign({0}))", lambda b, x, out, g: (None,)),
    Arithmetic("sqrt", np.sqrt, "math.sqrt({0})", lambda b, x, out, g: (b.div(b.mul(g, 0.5), out),)),
    Arithmetic("rsqrt", lambda x: 1 / np.sqrt(x), "(np.float32(1.0) / math.sqrt({0}))",
               lambda b, x, out, g: (b.mul(g, b.mul(b.mul(out, b.mul(out, out)), -0.5)),)),
]
# fmt: on
ADD, SUB, MUL, DIV, NEG = ARITHMETIC[:5]


class Clip(Elementwise):
    """Clamp to [lo, hi]; the gradient passes only where the value was inside (as Keras's clipping does)."""

    name = "clip"

    def reference(self, attrs, x):
        return [np.clip(x, attrs["lo"], attrs["hi"]).astype(x.dtype)]

    def scalar(self, attrs, x):
        return f"min(max({x}, np.float32({attrs['lo']!r})), np.float32({attrs['hi']!r}))"

    def vjp(self, b, eqn, grads):
        return [b.mul(grads[0], b.inside(eqn.inputs[0], lo=eqn.attrs["lo"], hi=eqn.attrs["hi"]))]


class Inside(Elementwise):
    """1 where lo <= x <= hi, else 0."""

    name = "inside"
    differentiable = False

    def reference(self, attrs, x):
        return [((x >= attrs["lo"]) & (x <= attrs["hi"])).astype(np.float32)]

    def scalar(self, attrs, x):
        return f"np.float32(np.float32({attrs['lo']!r}) <= {x} <= np.float32({attrs['hi']!r}))"


class NotEqual(Elementwise):
    """The padding mask: 1.0 where a token id differs from `value`."""

    name = "not_equal"
    differentiable = False

    def infer(self, attrs, x):
        return [TensorType("f32", x.dims)]

    def reference(self, attrs, x):
        return [(x != attrs["value"]).astype(np.float32)]

    def scalar(self, attrs, x):
        return f"np.float32({x} != {attrs['value']})"


class OneHot(Op):
    """Class ids as rows of 0/1 over as many classes as `like` has along its last axis (known at run time when
    symbolic): the targets of a crossentropy on probabilities `like`."""

    name = "one_hot"
    differentiable = False

    def infer(self, attrs, ids, like):
        return [TensorType("f32", (*ids.dims, like.dims[-1]))]

    def reference(self, attrs, ids, like):
        return [np.eye(like.shape[-1], dtype=np.float32)[ids]]


class Cast(Elementwise):
    """Integer labels as float32 (binary targets given as i32)."""

    name = "cast"
    differentiable = False

    def infer(self, attrs, x):
        return [TensorType("f32", x.dims)]

    def reference(self, attrs, x):
        return [x.astype(np.float32)]

    def scalar(self, attrs, x):
        return f"np.float32({x})"


class BroadcastLike(Elementwise):
    """`x` broadcast to the shape of `like` (whose values are not read): gradients of reductions."""

    name = "broadcast_like"

    def infer(self, attrs, x, like):
        broadcast_dims(x.dims, like.dims)
        return [TensorType(x.dtype, like.dims)]

    def reference(self, attrs, x, like):
        return [np.broadcast_to(x, like.shape).astype(x.dtype)]

    def scalar(self, attrs, x, like):
        return x

    def vjp(self, b, eqn, grads):
        return [unbroadcast(b, grads[0], eqn.inputs[0]), None]


def _erf(x):
    from scipy.special import erf  # here, so that checking a model never loads SciPy

    return erf(x)


def _sigmoid(x):
    return 0.5 * (1.0 + np.tanh(0.5 * x))


@dataclass(frozen=True)
class ActivationFn:
    """An activation: NumPy forward and derivative, and both as Numba templates.

    The derivative is a function of the input (`of="x"`) or, where it can be, of the output
    (`of="y"`): then the backward pass needs only the output, which it keeps anyway.
    """

    numpy: Callable
    template: str  # in terms of {x}
    of: str
    derivative: Callable  # of x or y -> dy/dx
    derivative_template: str  # in terms of {v}, the x or y named by `of`


SELU_SCALE, SELU_ALPHA = 1.0507009873554805, 1.6732632423543772
# fmt: off
F = "np.float32"
ACTIVATION_FNS = {
    "relu": ActivationFn(lambda x: np.maximum(x, 0), "relu_f32({x})", "y", lambda y: (y > 0) * 1.0, "step_f32({v})"),
    "relu6": ActivationFn(lambda x: np.clip(x, 0, 6), "relu6_f32({x})", "y", lambda y: ((y > 0) & (y < 6)) * 1.0,
                          f"({F}(1) if {F}(0) < {{v}} < {F}(6) else {F}(0))"),
    "leaky_relu": ActivationFn(lambda x: np.where(x > 0, x, 0.2 * x), "leaky_relu_f32({x})", "y",
                               lambda y: np.where(y > 0, 1.0, 0.2), f"({F}(1) if {{v}} > {F}(0) else {F}(0.2))"),
    "elu": ActivationFn(lambda x: np.where(x > 0, x, np.expm1(np.minimum(x, 0))), "elu_f32({x})", "y",
                        lambda y: np.where(y > 0, 1, y + 1), f"({F}(1) if {{v}} > {F}(0) else {{v}} + {F}(1))"),
    "selu": ActivationFn(
        lambda x: SELU_SCALE * np.where(x > 0, x, SELU_ALPHA * np.expm1(np.minimum(x, 0))), "selu_f32({x})", "y",
        lambda y: np.where(y > 0, SELU_SCALE, y + SELU_SCALE * SELU_ALPHA),
        f"(_SELU_SCALE if {{v}} > {F}(0) else {{v}} + _SELU_SCALE * _SELU_ALPHA)"),
    "gelu": ActivationFn(lambda x: 0.5 * x * (1 + _erf(x / np.sqrt(2))), "gelu_f32({x})", "x",
                         lambda x: 0.5 * (1 + _erf(x / np.sqrt(2))) + x * np.exp(-0.5 * x * x) / np.sqrt(2 * np.pi),
                         "gelu_grad_f32({v})"),
    "sigmoid": ActivationFn(_sigmoid, "sigmoid_f32({x})", "y", lambda y: y * (1 - y), f"{{v}} * ({F}(1) - {{v}})"),
    "hard_sigmoid": ActivationFn(lambda x: np.clip(x + 3, 0, 6) / 6, f"relu6_f32({{x}} + {F}(3)) / {F}(6)", "y",
                                 lambda y: ((y > 0) & (y < 1)) / 6.0,
                                 f"({F}(1 / 6) if {F}(0) < {{v}} < {F}(1) else {F}(0))"),
    "tanh": ActivationFn(np.tanh, "tanh_f32({x})", "y", lambda y: 1 - y * y, f"({F}(1) - {{v}} * {{v}})"),
    "softplus": ActivationFn(lambda x: np.logaddexp(x, 0), "softplus_f32({x})", "x", _sigmoid, "sigmoid_f32({v})"),
    "softsign": ActivationFn(lambda x: x / (1 + np.abs(x)), f"({{x}} / ({F}(1) + abs({{x}})))", "x",
                             lambda x: 1 / np.square(1 + np.abs(x)), f"{F}(1) / (({F}(1) + abs({{v}})) ** 2)"),
    "silu": ActivationFn(lambda x: x * _sigmoid(x), "({x} * sigmoid_f32({x}))", "x",
                         lambda x: _sigmoid(x) * (1 + x * (1 - _sigmoid(x))),
                         f"(sigmoid_f32({{v}}) * ({F}(1) + {{v}} * ({F}(1) - sigmoid_f32({{v}}))))"),
    "exponential": ActivationFn(np.exp, "math.exp({x})", "y", lambda y: y, "{v}"),
    "hard_silu": ActivationFn(lambda x: x * np.clip(x + 3, 0, 6) / 6, f"({{x}} * relu6_f32({{x}} + {F}(3)) / {F}(6))",
                              "x", lambda x: np.clip(x + 3, 0, 6) / 6 + np.where(np.abs(x) < 3, x / 6, 0),
                              f"(relu6_f32({{v}} + {F}(3)) / {F}(6) + "
                              f"({{v}} / {F}(6) if abs({{v}}) < {F}(3) else {F}(0)))"),
}
# fmt: on


@dataclass(frozen=True)
class Activation(Elementwise):
    name: str
    fn: ActivationFn

    def reference(self, attrs, x):
        return [self.fn.numpy(x.astype(np.float64)).astype(x.dtype)]

    def scalar(self, attrs, x):
        return self.fn.template.format(x=x)

    def vjp(self, b, eqn, grads):
        (x,), (g,) = eqn.inputs, grads
        return [b.emit(ACTIVATION_GRADS[self.name], (x if self.fn.of == "x" else eqn.out, g))[0]]


@dataclass(frozen=True)
class ActivationGrad(Elementwise):
    """dL/dx of an activation from its input or output (per `fn.of`) and dL/dy; fused like any elementwise op."""

    name: str
    fn: ActivationFn
    differentiable = False  # a gradient: training differentiates once

    def reference(self, attrs, v, g):
        return [(g * self.fn.derivative(v.astype(np.float64))).astype(g.dtype)]

    def scalar(self, attrs, v, g):
        return f"({g} * {self.fn.derivative_template.format(v=v)})"


ACTIVATIONS = {name: Activation(name, fn) for name, fn in ACTIVATION_FNS.items()}
ACTIVATION_GRADS = {name: ActivationGrad(f"d_{name}", fn) for name, fn in ACTIVATION_FNS.items()}

OPS = [
    Const(),
    Clip(),
    Inside(),
    NotEqual(),
    OneHot(),
    Cast(),
    BroadcastLike(),
    *ARITHMETIC,
    *ACTIVATIONS.values(),
    *ACTIVATION_GRADS.values(),
]
