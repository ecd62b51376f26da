"""`.kd` text and Python-built graphs survive printing and re-parsing unchanged."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import kdsl
from kdsl import layers as L
from kdsl.catalogue.functions import ACTIVATIONS
from kdsl.lang import load, load_file
from kdsl.lang.format import to_kd
from kdsl.layers import KerasTensor

small = st.integers(1, 6)


def test_every_example_round_trips(examples):
    for path in sorted(examples.glob("*.kd")):
        for graph in load_file(path).models.values():
            again = load(to_kd(graph)).model()
            assert again == graph, path
            assert again.train == graph.train


def test_graphs_differ_when_a_setting_differs():
    a = load("model M(x: f32[batch, 3]) -> y { y = dense(x, 4) }").model()
    b = load("model M(x: f32[batch, 3]) -> y { y = dense(x, 4, use_bias=false) }").model()
    c = load("model M(x: f32[batch, 3]) -> y { y = dense(x, 5) }").model()
    assert a != b and a != c and a == load(to_kd(a)).model()


@st.composite
def dense_layers(draw) -> L.Layer:
    return L.Dense(
        draw(small),
        activation=draw(st.sampled_from(ACTIVATIONS)),
        use_bias=draw(st.booleans()),
        kernel_regularizer=draw(st.sampled_from([None, "l2", "l1", "l1_l2"])),
        kernel_initializer=draw(st.sampled_from(["glorot_uniform", "he_normal", "zeros", "orthogonal"])),
    )


@st.composite
def recurrent_layers(draw, force_sequences: bool = False) -> L.Layer:
    layer = draw(st.sampled_from([L.SimpleRNN, L.LSTM, L.GRU]))
    extra = {"reset_after": draw(st.booleans())} if layer is L.GRU else {}
    return layer(
        draw(small),
        return_sequences=force_sequences or draw(st.booleans()),
        go_backwards=draw(st.booleans()),
        dropout=draw(st.sampled_from([0.0, 0.25])),
        **extra,
    )


@st.composite
def step(draw, pool: list[KerasTensor]) -> list[KerasTensor]:
    """One random, shape-correct layer call on tensors from the pool."""
    x = draw(st.sampled_from(pool))
    rank, dtype = x.type.rank, x.type.dtype
    if dtype == "i32":
        return [L.Embedding(draw(st.integers(2, 20)), draw(small), mask_zero=draw(st.booleans()))(x)]
    choices = ["dense", "activation", "dropout", "batch_norm", "merge"]
    choices += ["repeat"] if rank == 2 else []
    choices += ["rnn", "rnn_state", "bidirectional", "time_distributed", "flatten"] if rank == 3 else []
    choice = draw(st.sampled_from(choices))
    if choice == "dense":
        return [draw(dense_layers())(x)]
    if choice == "activation":
        return [L.Activation(draw(st.sampled_from(ACTIVATIONS)))(x)]
    if choice == "dropout":
        return [L.Dropout(draw(st.sampled_from([0.1, 0.5])))(x)]
    if choice == "batch_norm":
        return [L.BatchNormalization(center=draw(st.booleans()), scale=draw(st.booleans()))(x)]
    if choice == "repeat":
        return [L.RepeatVector(draw(small))(x)]
    if choice == "rnn":
        return [draw(recurrent_layers())(x)]
    if choice == "rnn_state":
        outputs = L.LSTM(draw(small), return_state=True)(x)
        return list(outputs)
    if choice == "bidirectional":
        merge = draw(st.sampled_from(["concat", "sum", "mul", "ave", None]))
        out = L.Bidirectional(draw(recurrent_layers()), merge_mode=merge)(x)
        return out if isinstance(out, list) else [out]
    if choice == "time_distributed":
        return [L.TimeDistributed(draw(dense_layers()))(x)]
    if choice == "flatten":
        return [L.Flatten()(x)]
    partners = [t for t in pool if t is not x and t.type.dtype == "f32" and t.type.rank == rank]
    same = [t for t in partners if t.type == x.type]
    if same and draw(st.booleans()):
        return [draw(st.sampled_from([L.Add, L.Multiply]))()([x, draw(st.sampled_from(same))])]
    joinable = [t for t in partners if t.type.dims[:-1] == x.type.dims[:-1]]
    if joinable:
        return [L.Concatenate()([x, draw(st.sampled_from(joinable))])]
    return [L.Dense(draw(small))(x)]


@st.composite
def models(draw) -> kdsl.Model:
    inputs = []
    for position in range(draw(st.integers(1, 2))):
        shape = draw(st.sampled_from([(3,), (4, 3), (5,)]))
        dtype = draw(st.sampled_from(["float32", "int32"])) if len(shape) == 1 else "float32"
        inputs.append(kdsl.Input(shape=shape, dtype=dtype, name=f"in{position}"))
    pool = list(inputs)
    shared = L.Dense(draw(small))
    for _ in range(draw(st.integers(1, 7))):
        pool += draw(step(pool))
        candidates = [t for t in pool if t.type.dtype == "f32" and t.type.dims[-1] == 3]
        if candidates and draw(st.booleans()):
            pool.append(shared(draw(st.sampled_from(candidates))))
    computed = [t for t in pool if t.call is not None]
    outputs = draw(st.lists(st.sampled_from(computed), min_size=1, max_size=3, unique_by=id)) if computed else []
    if not outputs:
        outputs = [L.Dense(2)(inputs[0]) if inputs[0].type.dtype == "f32" else L.Embedding(4, 2)(inputs[0])]
    return kdsl.Model(inputs, outputs, name="random")


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(models())
def test_parse_of_to_kd_equals_the_graph(model):
    text = model.to_kd()
    again = load(text).model()
    assert again == model.graph, text
    assert [v.type for v in again.outputs] == [v.type for v in model.graph.outputs]
    assert again.param_count() == model.graph.param_count()
    assert to_kd(again) == text
