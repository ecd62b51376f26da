"""The micro-kernel of products inside time loops: a tile of rows times packed weight panels, its sums in
vector registers, written as LLVM IR because Numba does not vectorize this form by itself.

A weight is packed once before a time loop into panels of PANEL columns, each (K, PANEL) contiguous
(`kdsl.backends.cpu.loop_products`). A tile of up to six rows of `a` and a few panels keeps its sums in
vector registers: at every p along K it loads the panels' row p, broadcasts each a[i, p] and adds their
products (fused multiply-add). No horizontal sums, no packing at each step. (Where the CPU has no fused
multiply-add, LLVM calls a library routine for each: right, and slow.)

Two variants, by the width of the vectors the tiles are written in: 256 bits (AVX2; two NEON vectors
each elsewhere), a panel row in two registers and up to twelve sums, and 512 bits (AVX-512), a panel row
in one register and up to twenty-four sums of the 32 registers. The host's features choose; the
environment variable KDSL_VECTOR_BITS (256 or 512) forces one, whatever the CPU (LLVM splits vectors wider
than the CPU's). Their rates against OpenBLAS's on these shapes are in benchmarks/RESULTS.md.

Part of the support package generated modules import: it needs only Numba and its llvmlite.
"""

import os

from llvmlite import binding, ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

PANEL = 16  # columns of a packed panel
MAX_TILE_ROWS = 6
# for each vector width: panels per tile for each count of rows, as many sums as the registers hold
TILE_PANELS_BY_BITS = {256: (0, 6, 3, 2, 1, 1, 1), 512: (0, 8, 8, 6, 5, 4, 4)}


def vector_bits() -> int:
    """The tiles' vector width: KDSL_VECTOR_BITS if set, else 512 where the host has AVX-512, else 256."""
    forced = os.environ.get("KDSL_VECTOR_BITS", "").strip()
    if forced:
        if forced not in ("256", "512"):
            raise ValueError(f"KDSL_VECTOR_BITS must be 256 or 512, got {forced!r}")
        return int(forced)
    return 512 if binding.get_host_cpu_features().get("avx512f") else 256


VECTOR_BITS = vector_bits()  # fixed for the process: the support package's cached kernels are keyed by it
LANES = VECTOR_BITS // 32  # floats in a vector register
TILE_PANELS = TILE_PANELS_BY_BITS[VECTOR_BITS]


FLOATS = ir.VectorType(ir.FloatType(), LANES)
SPLAT = ir.Constant(ir.VectorType(ir.IntType(32), LANES), [0] * LANES)  # a shuffle mask: lane 0 everywhere


def _emit_tile(builder, rows: int, panels: int, a, lda, b, k, out, ldo) -> None:
    """out[i, q·PANEL + j] = Σ_p a[i, p]·b[q, p, j] for i < rows, q < panels, j < PANEL (float pointers, element
    strides lda and ldo; panel q starts k·PANEL floats after panel q − 1)."""
    fma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(FLOATS, [FLOATS] * 3), f"llvm.fma.v{LANES}f32")
    vectors = PANEL // LANES  # a panel row's

    def at(pointer, offset):
        return builder.gep(pointer, [offset if isinstance(offset, ir.Value) else ir.Constant(lda.type, offset)])

    def vector_at(pointer, offset):
        return builder.bitcast(at(pointer, offset), FLOATS.as_pointer())

    sums = [[cgutils.alloca_once_value(builder, ir.Constant(FLOATS, [0.0] * LANES)) for _ in range(vectors * panels)]
            for _ in range(rows)]  # fmt: skip
    panel_size = builder.mul(k, ir.Constant(lda.type, PANEL))
    with cgutils.for_range(builder, k) as loop:
        p = loop.index
        row_p = at(b, builder.mul(p, ir.Constant(lda.type, PANEL)))
        weights = []
        for q in range(panels):
            panel_row = at(row_p, builder.mul(ir.Constant(lda.type, q), panel_size))
            weights += [builder.load(vector_at(panel_row, h * LANES), align=4) for h in range(vectors)]
        for i in range(rows):
            x = builder.load(at(a, builder.add(builder.mul(ir.Constant(lda.type, i), lda), p)))
            lane = builder.insert_element(ir.Constant(FLOATS, ir.Undefined), x, ir.Constant(ir.IntType(32), 0))
            broadcast = builder.shuffle_vector(lane, ir.Constant(FLOATS, ir.Undefined), SPLAT)
            for total, w in zip(sums[i], weights):
                builder.store(builder.call(fma, [broadcast, w, builder.load(total)]), total)
    for i in range(rows):
        out_row = at(out, builder.mul(ir.Constant(lda.type, i), ldo))
        for h, total in enumerate(sums[i]):
            builder.store(builder.load(total), vector_at(out_row, h * LANES), align=4)


@intrinsic
def tile_product(typingctx, rows, panels, a, i, packed, q, out, j):
    """out[i:i + rows, j:j + panels·PANEL] = a[i:i + rows]·(panels q to q + panels of `packed`).

    `rows` (1 to MAX_TILE_ROWS) and `panels` (1 or TILE_PANELS[rows]) pick one of the specialized loops (few
    of them: each is compiled again into every kernel with a time loop); `a` and `out` are matrices with
    contiguous rows, `packed` (count, K, PANEL) is C-contiguous.
    """
    sig = types.void(rows, panels, a, i, packed, q, out, j)

    def codegen(context, builder, signature, args):
        a, packed, out = args[2], args[4], args[6]
        a_arr = context.make_array(signature.args[2])(context, builder, a)
        packed_arr = context.make_array(signature.args[4])(context, builder, packed)
        out_arr = context.make_array(signature.args[6])(context, builder, out)
        intp = context.get_value_type(types.intp)
        four = ir.Constant(intp, 4)
        lda = builder.sdiv(cgutils.unpack_tuple(builder, a_arr.strides, 2)[0], four)
        ldo = builder.sdiv(cgutils.unpack_tuple(builder, out_arr.strides, 2)[0], four)
        k = cgutils.unpack_tuple(builder, packed_arr.shape, 3)[1]
        rows, panels, i, q, j = (context.cast(builder, args[n], signature.args[n], types.intp) for n in (0, 1, 3, 5, 7))
        a_ptr = builder.gep(a_arr.data, [builder.mul(i, lda)])
        b_ptr = builder.gep(packed_arr.data, [builder.mul(q, builder.mul(k, ir.Constant(intp, PANEL)))])
        out_ptr = builder.gep(out_arr.data, [builder.add(builder.mul(i, ldo), j)])
        done = builder.append_basic_block("tile_done")
        choice = builder.add(builder.mul(rows, ir.Constant(intp, 16)), panels)
        switch = builder.switch(choice, done)
        for r in range(1, MAX_TILE_ROWS + 1):
            for n in sorted({1, TILE_PANELS[r]}):  # the most sums a tile holds, and one panel for the rest
                case = builder.append_basic_block(f"tile_{r}x{n}")
                switch.add_case(ir.Constant(intp, 16 * r + n), case)
                builder.position_at_end(case)
                _emit_tile(builder, r, n, a_ptr, lda, b_ptr, k, out_ptr, ldo)
                builder.branch(done)
        builder.position_at_end(done)
        return context.get_dummy_value()

    return sig, codegen
