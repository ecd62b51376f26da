"""Autodiff against central finite differences (float64, NumPy backend), on models hypothesis draws.

Backpropagation through time is checked through every recurrent option: masks, go_backwards,
return_sequences / return_state, initial states, dropout, recurrent dropout, bidirectional
merges; and every loss, activation and regularizer the catalogue has.
"""

from __future__ import annotations

import numpy as np
from gradients import worst_gradient_error
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kdsl.lang import load
from kdsl.pipeline import compile_programs

TOLERANCE = 1e-4
ACTIVATIONS = ["linear", "relu", "relu6", "leaky_relu", "elu", "selu", "gelu", "sigmoid", "hard_sigmoid", "tanh",
               "softplus", "softsign", "silu", "exponential", "hard_silu"]  # fmt: skip
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def training_for(text: str):
    return compile_programs(load(text, "t.kd").models["M"], target="numpy").training


def flag(value: bool) -> str:
    return "true" if value else "false"


@st.composite
def recurrent_models(draw):
    kind = draw(st.sampled_from(["simple_rnn", "lstm", "gru"]))
    units, steps, features = draw(st.integers(1, 4)), draw(st.integers(1, 4)), draw(st.integers(1, 3))
    args = [f"units={units}", f"go_backwards={flag(draw(st.booleans()))}", f"use_bias={flag(draw(st.booleans()))}"]
    if kind == "gru":
        args.append(f"reset_after={flag(draw(st.booleans()))}")
    if kind != "simple_rnn":
        args.append(f"recurrent_activation={draw(st.sampled_from(['sigmoid', 'hard_sigmoid', 'tanh']))}")
    args.append(f"activation={draw(st.sampled_from(['tanh', 'relu', 'elu', 'softsign']))}")
    if draw(st.booleans()):
        args += ["dropout=0.3", "recurrent_dropout=0.2"]
    if draw(st.booleans()):
        args.append("kernel_regularizer=l1_l2(0.01, 0.02)")
    sequences, states = draw(st.booleans()), draw(st.booleans())
    args += [f"return_sequences={flag(sequences)}", f"return_state={flag(states)}"]
    masked = draw(st.booleans())
    bidirectional = draw(st.booleans())
    n_states = {"lstm": 2}.get(kind, 1)
    source = "e" if masked else "x"
    lines = ["e = embedding(ids, 6, " + str(features) + ", mask_zero=true)"] if masked else []
    call = f"{kind}({', '.join(args)})"
    if bidirectional:
        merge = draw(st.sampled_from(["concat", "sum", "mul", "ave"]))
        lines.append(f"layer r = bidirectional({call}, merge_mode={merge})")
        outs = 1 + (2 * n_states if states else 0)
    else:
        lines.append(f"layer r = {call}")
        outs = 1 + (n_states if states else 0)
    names = [f"o{i}" for i in range(outs)]
    lines.append(f"{', '.join(names)} = r({source})")
    pooled = "flatten(o0)" if sequences else "o0"
    extra = " ".join(f"|> add({n})" for n in names[1:2]) if states and not bidirectional and not sequences else ""
    lines.append(f"y = {pooled} {extra} |> dense(3, activation=softmax)")
    inputs = f"ids: i32[batch, {steps}]" if masked else f"x: f32[batch, {steps}, {features}]"
    body = "\n    ".join(lines)
    train = "train M { loss = sparse_categorical_crossentropy\n optimizer = sgd() }"
    return f"model M({inputs}) -> y {{\n    {body}\n}}\n{train}"


@SETTINGS
@given(recurrent_models(), st.integers(1, 3), st.integers(0, 2**16))
def test_bptt_matches_finite_differences(text, batch, seed):
    training = training_for(text)
    assert worst_gradient_error(training, np.random.default_rng(seed), batch) < TOLERANCE, text


@SETTINGS
@given(
    st.sampled_from(ACTIVATIONS),
    st.sampled_from(
        [
            "mean_squared_error",
            "mean_absolute_error",
            "binary_crossentropy",
            "binary_crossentropy(from_logits=true, label_smoothing=0.1)",
            "categorical_crossentropy(label_smoothing=0.2)",
            "categorical_crossentropy(from_logits=true)",
            "sparse_categorical_crossentropy(from_logits=true)",
        ]
    ),
    st.sampled_from(["softmax", "sigmoid", "linear", "log_softmax"]),
    st.integers(1, 3),
    st.integers(0, 2**16),
)
def test_dense_stack_and_every_loss(activation, loss, head, batch, seed):
    if head == "log_softmax" and "crossentropy" in loss and "logits" not in loss:
        head = "softmax"  # probabilities must be positive
    if loss.startswith("binary") and "logits" not in loss:
        head = "sigmoid"
    text = f"""model M(x: f32[batch, 4], z: f32[batch, 3]) -> y {{
        h = dense(x, 5, activation={activation}, kernel_regularizer=l2(0.01), bias_regularizer=l1(0.01))
        h = batch_norm(concatenate(h, z))
        h = dropout(h, 0.25)
        y = dense(h, 3, activation={head})
    }}
    train M {{ loss = {loss}
    optimizer = sgd() }}"""
    assert worst_gradient_error(training_for(text), np.random.default_rng(seed), batch) < TOLERANCE


def test_shared_layers_several_outputs_and_weighted_losses():
    text = """model M(a: f32[batch, 3, 2], b: f32[batch, 3, 2]) -> (main, aux) {
        layer encoder = gru(units=3)
        main = concatenate(encoder(a), encoder(b)) |> dense(2, activation=softmax)
        aux = repeat_vector(encoder(a), 2) |> time_distributed(dense(2)) |> reshape([4]) |> dense(1)
    }
    train M { loss main = categorical_crossentropy, weight 1.0
              loss aux = mean_squared_error, weight 0.3
              optimizer = sgd() }"""
    assert worst_gradient_error(training_for(text), np.random.default_rng(3), 2, samples=4) < TOLERANCE


def test_the_backward_pass_recomputes_one_minus_z_instead_of_storing_it():
    """A GRU's 1 - z is recomputed from z (which the backward cell reads anyway): one stacked value less."""
    training = training_for("""model M(x: f32[batch, 5, 3]) -> y {
        y = gru(x, 4) |> dense(1)
    }
    train M { loss = mean_squared_error }""")
    forward, backward = [e for e in training.program.eqns if e.op.name == "scan"]
    makers = forward.attrs["body"].producers()
    stored = [makers.get(id(v)) for v in forward.attrs["body"].outputs[forward.attrs["num_carry"] :]]
    assert [e.op.name for e in stored if e is not None].count("sigmoid") == 2  # z and r
    assert "sub" not in [e.op.name for e in stored if e is not None]  # no 1 - z
    assert "sub" in [e.op.name for e in backward.attrs["body"].eqns]
