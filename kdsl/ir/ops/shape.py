"""Ops that move data without arithmetic: reshape, transpose, flip, concat, split, repeat, gather."""

from __future__ import annotations

import numpy as np

from kdsl.ir.ops.base import Op
from kdsl.ir.types import TensorType, dim_product


class View(Op):
    """Ops whose output is their input's data, reshaped."""

    view = True


class Reshape(View):
    """To `shape` (ints and symbols; a product of symbols is the one axis the kernel infers)."""

    name = "reshape"

    def infer(self, attrs, x):
        if dim_product(x.dims) != dim_product(attrs["shape"]):
            raise ValueError(f"reshape: {x} to {attrs['shape']}")
        return [TensorType(x.dtype, tuple(attrs["shape"]))]

    def reference(self, attrs, x):
        return [x.reshape([d if isinstance(d, int) else attrs["symbols"].get(d, -1) for d in attrs["shape"]])]

    def vjp(self, b, eqn, grads):
        return [b.reshape_like(grads[0], eqn.inputs[0])]


class ReshapeLike(View):
    name = "reshape_like"

    def infer(self, attrs, x, like):
        return [TensorType(x.dtype, like.dims)]

    def reference(self, attrs, x, like):
        return [x.reshape(like.shape)]

    def vjp(self, b, eqn, grads):
        return [b.reshape_like(grads[0], eqn.inputs[0]), None]


class Transpose(Op):
    name = "transpose"

    def infer(self, attrs, x):
        return [TensorType(x.dtype, tuple(x.dims[p] for p in attrs["perm"]))]

    def reference(self, attrs, x):
        return [np.ascontiguousarray(np.transpose(x, attrs["perm"]))]

    def vjp(self, b, eqn, grads):
        return [b.transpose(grads[0], perm=tuple(np.argsort(eqn.attrs["perm"]).tolist()))]


class Flip(Op):
    """Reverse along `axis`: a sequence read backwards."""

    name = "flip"

    def infer(self, attrs, x):
        return [x]

    def reference(self, attrs, x):
        return [np.ascontiguousarray(np.flip(x, attrs["axis"]))]

    def vjp(self, b, eqn, grads):
        return [b.flip(grads[0], axis=eqn.attrs["axis"])]


class Concat(Op):
    name = "concat"

    def row_wise(self, eqn):
        return eqn.attrs["axis"] == eqn.inputs[0].rank - 1  # each row's pieces side by side

    def infer(self, attrs, *xs):
        axis = attrs["axis"]
        dims = list(xs[0].dims)
        dims[axis] = _sum_dims([x.dims[axis] for x in xs])
        return [TensorType(xs[0].dtype, tuple(dims))]

    def reference(self, attrs, *xs):
        return [np.concatenate(xs, axis=attrs["axis"])]

    def vjp(self, b, eqn, grads):
        sizes = [x.shape[eqn.attrs["axis"]] for x in eqn.inputs]
        return b.split(grads[0], sizes=tuple(sizes), axis=eqn.attrs["axis"])


def _sum_dims(dims):
    if all(isinstance(d, int) for d in dims):
        return sum(dims)
    raise ValueError(f"concat along symbolic dims {dims}")


class Split(Op):
    """Pieces of `sizes` along `axis`: a recurrent cell's gates from one projection."""

    name = "split"
    single_output = False

    def row_wise(self, eqn):
        return eqn.attrs["axis"] == eqn.inputs[0].rank - 1  # each row's pieces side by side

    def infer(self, attrs, x):
        axis, sizes = attrs["axis"], attrs["sizes"]
        if sum(sizes) != x.dims[axis]:
            raise ValueError(f"split: {x} into {sizes}")
        return [x.with_dims(tuple(s if a == axis else d for a, d in enumerate(x.dims))) for s in sizes]

    def reference(self, attrs, x):
        return [np.ascontiguousarray(p) for p in np.split(x, np.cumsum(attrs["sizes"])[:-1], axis=attrs["axis"])]

    def vjp(self, b, eqn, grads):
        pieces = [g if g is not None else b.broadcast_like(0.0, out) for g, out in zip(grads, eqn.outputs)]
        return [b.concat(*pieces, axis=eqn.attrs["axis"])]


class Repeat(Op):
    """(batch, features) -> (batch, n, features): Keras's RepeatVector."""

    name = "repeat"

    def infer(self, attrs, x):
        return [x.with_dims((x.dims[0], attrs["n"], *x.dims[1:]))]

    def reference(self, attrs, x):
        return [np.repeat(x[:, None], attrs["n"], axis=1)]

    def vjp(self, b, eqn, grads):
        return [b.reduce_sum(grads[0], axes=(1,))]


class Gather(Op):
    """Rows of a table by integer id: Embedding."""

    name = "gather"

    def infer(self, attrs, table, ids):
        return [TensorType(table.dtype, (*ids.dims, table.dims[1]))]

    def reference(self, attrs, table, ids):
        if ids.size and (ids.min() < 0 or ids.max() >= table.shape[0]):
            raise IndexError(f"token id out of range [0, {table.shape[0]})")
        return [table[ids]]

    def vjp(self, b, eqn, grads):
        table, ids = eqn.inputs
        return [b.gather_grad(grads[0], ids, table), None]


class GatherGrad(Op):
    """The table gradient of `gather`: output gradients summed into the rows they came from."""

    name = "gather_grad"
    differentiable = False  # a gradient: training differentiates once

    def infer(self, attrs, g, ids, table):
        return [table]

    def reference(self, attrs, g, ids, table):
        out = np.zeros(table.shape, g.dtype)
        np.add.at(out, ids.reshape(-1), g.reshape(-1, table.shape[1]))
        return [out]


class Fill(Op):
    """A constant tensor shaped (x.shape[:lead], *tail): zero initial states, whatever the batch size."""

    name = "fill"
    differentiable = False
    sizes_only = True

    def infer(self, attrs, x):
        return [TensorType("f32", (*x.dims[: attrs["lead"]], *attrs["tail"]))]

    def reference(self, attrs, x):
        return [np.full((*x.shape[: attrs["lead"]], *attrs["tail"]), attrs["value"], np.float32)]


OPS = [Fill(), Reshape(), ReshapeLike(), Transpose(), Flip(), Concat(), Split(), Repeat(), Gather(), GatherGrad()]
