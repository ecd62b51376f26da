"""Layers that merge several inputs: Concatenate, Add, Multiply."""

from __future__ import annotations

from kdsl.catalogue.args import Arg, integer
from kdsl.catalogue.base import LayerKind, expect_float, normalize_axis, show
from kdsl.errors import KdslShapeError


class Concatenate(LayerKind):
    name, keras = "concatenate", "Concatenate"
    args = (Arg("axis", integer, -1),)
    min_inputs, max_inputs = 2, None

    def output_types(self, config, inputs):
        first = inputs[0]
        for x in inputs:
            expect_float(self, x)
        axis = normalize_axis(self, config["axis"], first.rank)
        for x in inputs[1:]:
            others_match = x.rank == first.rank and all(
                a == b for i, (a, b) in enumerate(zip(x.dims, first.dims)) if i != axis
            )
            if not others_match:
                raise KdslShapeError(
                    f"`concatenate` along axis {config['axis']} needs equal shapes elsewhere, "
                    f"got {show(first)} and {show(x)}"
                )
        symbolic = next((x.dims[axis] for x in inputs if not isinstance(x.dims[axis], int)), None)
        if symbolic is not None:
            raise KdslShapeError(
                f"`concatenate` along axis {config['axis']} needs fixed sizes there, got `{symbolic}`",
                hint="kernels place each input at a fixed offset; declare that dimension as a number",
            )
        total = sum(x.dims[axis] for x in inputs)
        return [first.with_dims((*first.dims[:axis], total, *first.dims[axis + 1 :]))]


class Elementwise(LayerKind):
    """Inputs of one shape combined element by element."""

    min_inputs, max_inputs = 2, None

    def output_types(self, config, inputs):
        first = inputs[0]
        for x in inputs:
            expect_float(self, x)
            if x.dims != first.dims:
                raise KdslShapeError(f"`{self.name}` needs inputs of one shape, got {show(first)} and {show(x)}")
        return [first]


class Add(Elementwise):
    name, keras = "add", "Add"


class Multiply(Elementwise):
    name, keras = "multiply", "Multiply"
