"""A model called on tensors of another model is one layer of it, as in Keras: its layers, weights (shared with the
inner model object), order, names and summary row."""

import numpy as np
import pytest

import kdsl
from kdsl import layers as L
from kdsl.errors import KdslArgumentError, KdslShapeError, KdslUnsupportedError

RNG = np.random.default_rng(0)


def _x(*shape):
    return RNG.random(shape, dtype=np.float32)


def _base():
    """A functional base: two Dense layers, (None, 4) -> (None, 6)."""
    x = kdsl.Input(shape=(4,))
    return kdsl.Model(x, L.Dense(6, name="b2")(L.Dense(5, activation="relu", name="b1")(x)), name="base")


def _head_on_base(base):
    """`head(add([skip(x), base(x)]))`: a skip connection around the nested base."""
    x = kdsl.Input(shape=(4,))
    skip = L.Dense(6, name="skip")(x)
    return kdsl.Model(x, L.Dense(2, name="head")(L.add([skip, base(x)])), name="outer")


def _shapes(weights):
    return [w.shape for w in weights]


def test_a_sequential_of_two_sequentials_lists_them_and_orders_their_weights_in_turn():
    # Keras's Sequential lists its layers as added: the first model, then the second, each contributing its own
    # weights (kernel, bias per Dense) at its place
    first = kdsl.Sequential([L.Dense(3, input_shape=(4,)), L.Dense(5)])
    second = kdsl.Sequential([L.Dense(2)])
    outer = kdsl.Sequential([first])
    outer.add(second)
    assert outer.layers[0] is first and outer.layers[1] is second
    assert _shapes(outer.get_weights()) == [(4, 3), (3,), (3, 5), (5,), (5, 2), (2,)]
    assert _shapes(outer.weights) == _shapes(first.get_weights() + second.get_weights())
    x = _x(3, 4)
    w = outer.get_weights()
    np.testing.assert_allclose(outer.predict(x, verbose=0), ((x @ w[0] + w[1]) @ w[2] + w[3]) @ w[4] + w[5], rtol=1e-5)


def test_a_head_on_a_base_with_a_skip_connection_orders_the_base_as_one_layer():
    # Keras's map_graph over the outer graph: head at depth 0, add at 1, then `skip` and `base` both at depth 2,
    # `skip` first because the walk back from the output reaches add's inputs in order (skip, base). Inlined as
    # layers of their own, b1 would sit at depth 3 and come first: the nested model must count as one operation.
    base = _base()
    outer = _head_on_base(base)
    assert [layer.name for layer in outer.layers] == ["input_layer", "skip", "base", "add", "head"]
    assert outer.get_layer("base") is base and outer.layers[2] is base
    assert _shapes(outer.get_weights()) == [(4, 6), (6,), (4, 5), (5,), (5, 6), (6,), (6, 2), (2,)]
    x = _x(5, 4)
    sk, sb, k1, b1, k2, b2, kh, bh = outer.get_weights()
    by_hand = ((x @ sk + sb) + (np.maximum(x @ k1 + b1, 0) @ k2 + b2)) @ kh + bh
    np.testing.assert_allclose(outer.predict(x, verbose=0), by_hand, rtol=1e-5, atol=1e-6)


def test_a_siamese_model_calls_one_inner_model_twice_sharing_its_weights():
    # Keras: out (0), concatenate (1), proj and inner's call on `a` (2), inner's call on `b` under proj (3); a
    # layer takes its deepest call's depth, so inner (3) comes before proj (2), and the inputs (4) first
    i = kdsl.Input(shape=(4,))
    inner = kdsl.Model(i, L.Dense(3, name="embed")(i), name="tower")
    a, b = kdsl.Input(shape=(4,), name="a"), kdsl.Input(shape=(4,), name="b")
    out = L.Dense(1, name="out")(L.concatenate([inner(a), L.Dense(3, name="proj")(inner(b))]))
    model = kdsl.Model([a, b], out)
    assert [layer.name for layer in model.layers] == ["a", "b", "tower", "proj", "concatenate", "out"]
    assert _shapes(model.get_weights()) == [(4, 3), (3,), (3, 3), (3,), (6, 1), (1,)]
    xa, xb = _x(2, 4), _x(2, 4)
    k, c, kp, bp, ko, bo = model.get_weights()
    by_hand = np.concatenate([xa @ k + c, (xb @ k + c) @ kp + bp], axis=1) @ ko + bo
    np.testing.assert_allclose(model.predict([xa, xb], verbose=0), by_hand, rtol=1e-5, atol=1e-6)


def test_an_inner_model_with_two_outputs_gives_a_list_and_its_own_weight_order():
    # the inner model's own order is h, then p and q (both at depth 0, p first among its outputs); the outer
    # model takes it whole at its place, before concatenate and out
    i = kdsl.Input(shape=(4,))
    h = L.Dense(4, name="h")(i)
    inner = kdsl.Model(i, [L.Dense(2, name="p")(h), L.Dense(3, name="q")(h)], name="two")
    x = kdsl.Input(shape=(4,))
    first, second = inner(x)
    assert first.shape == (None, 2) and second.shape == (None, 3)
    model = kdsl.Model(x, L.Dense(1, name="out")(L.concatenate([second, first])))
    assert [layer.name for layer in model.layers] == ["input_layer", "two", "concatenate", "out"]
    assert _shapes(model.get_weights()) == [(4, 4), (4,), (4, 2), (2,), (4, 3), (3,), (5, 1), (1,)]
    for mine, its in zip(model.get_weights(), inner.get_weights()):
        np.testing.assert_array_equal(mine, its)


def test_the_summary_shows_a_nested_model_as_one_row():
    base = _base()
    outer = _head_on_base(base)
    lines = []
    outer.summary(print_fn=lines.append)
    row = next(line for line in lines[0].splitlines() if "base (" in line)
    assert "base (Functional)" in row and "(None, 6)" in row and " 61 " in row  # 4*5+5 + 5*6+6
    seq = kdsl.Sequential([kdsl.Input(shape=(4,)), kdsl.Sequential([L.Dense(3)], name="stack"), L.Dense(1)])
    seq.summary(print_fn=lines.append)
    assert "stack (Sequential)" in lines[1] and "dense (Dense)" not in lines[1]


def test_models_are_named_as_keras_names_them():
    x = kdsl.Input(shape=(4,))
    first, second = kdsl.Model(x, L.Dense(1)(x)), kdsl.Model(x, L.Dense(1)(x))
    number = 0 if first.name == "functional" else int(first.name.rsplit("_", 1)[1])
    assert first.name.startswith("functional") and second.name == f"functional_{number + 1}"
    seq = kdsl.Sequential()
    assert seq.name.startswith("sequential") and kdsl.Sequential().name != seq.name
    # the inner model's layers were named when it was made: the outer's own Dense comes after them
    outer = kdsl.Sequential([first, L.Dense(2)])
    assert [layer.name for layer in outer.layers] == [first.name, "dense_1"]


def _weights_after_one_sgd_step(model, x, y):
    model.compile(kdsl.optimizers.SGD(0.1), "mse", target="numpy")
    model.train_on_batch(x, y)
    return model.get_weights()


def test_one_sgd_step_changes_the_weights_as_in_the_same_flat_model():
    base = _base()
    outer = _head_on_base(base)
    x = kdsl.Input(shape=(4,))
    skip = L.Dense(6)(x)
    flat = kdsl.Model(x, L.Dense(2)(L.add([skip, L.Dense(6)(L.Dense(5, activation="relu")(x))])))
    # in the flat model Keras lists b1 (depth 3) first, then skip and b2 (both at depth 2), add, head
    to_flat = [2, 3, 0, 1, 4, 5, 6, 7]
    start = outer.get_weights()
    flat.set_weights([start[i] for i in to_flat])
    data, labels = _x(8, 4), _x(8, 2)
    nested_after = _weights_after_one_sgd_step(outer, data, labels)
    flat_after = _weights_after_one_sgd_step(flat, data, labels)
    assert not np.allclose(nested_after[0], start[0])
    for i, j in enumerate(to_flat):
        np.testing.assert_allclose(flat_after[i], nested_after[j], rtol=1e-5, atol=1e-6)
    for mine, its in zip(nested_after[2:6], base.get_weights()):  # the base object holds the trained weights
        np.testing.assert_array_equal(mine, its)


def test_weights_are_shared_both_ways_and_freezing_the_inner_model_freezes_its_layers():
    base = _base()
    outer = _head_on_base(base)
    x = _x(4, 4)
    changed = [np.full_like(w, 0.5) for w in base.get_weights()]
    before = outer.predict(x, verbose=0)
    base.set_weights(changed)
    assert not np.allclose(outer.predict(x, verbose=0), before)
    np.testing.assert_array_equal(outer.get_weights()[2], changed[0])
    base.trainable = False
    assert not base.layers[1].trainable and not base.trainable
    skip_before = outer.get_weights()[0]
    after = _weights_after_one_sgd_step(outer, x, _x(4, 2))
    for mine, frozen in zip(after[2:6], changed):
        np.testing.assert_array_equal(mine, frozen)
    assert not np.allclose(after[0], skip_before)  # the outer's own layers train
    assert outer.count_params() == (4 * 6 + 6) + 61 + (6 * 2 + 2)


def test_weights_files_round_trip_for_a_nested_model(tmp_path):
    outer = _head_on_base(_base())
    again = _head_on_base(_base())
    outer.save_weights(tmp_path / "w.npz")
    again.load_weights(tmp_path / "w.npz")
    for mine, its in zip(outer.get_weights(), again.get_weights()):
        np.testing.assert_array_equal(mine, its)
    np.testing.assert_array_equal(again.get_layer("base").get_weights()[0], outer.get_weights()[2])


def test_an_unbuilt_sequential_is_built_by_its_first_call():
    inner = kdsl.Sequential([L.Dense(3)])
    outer = kdsl.Sequential([kdsl.Input(shape=(5,)), inner])
    assert _shapes(inner.get_weights()) == [(5, 3), (3,)] and outer.layers == [inner]


def test_wrong_inputs_are_refused_at_the_call():
    base = _base()
    with pytest.raises(KdslShapeError, match=r"model `base` expects input `input_layer` of shape \(None, 4\)"):
        base(kdsl.Input(shape=(5,)))
    with pytest.raises(KdslShapeError, match="i32"):
        base(kdsl.Input(shape=(4,), dtype="int32"))
    with pytest.raises(KdslArgumentError, match="takes 1 input"):
        base([kdsl.Input(shape=(4,)), kdsl.Input(shape=(4,))])
    with pytest.raises(KdslArgumentError, match="gives 2 outputs"):
        i = kdsl.Input(shape=(4,))
        kdsl.Sequential([kdsl.Model(i, [L.Dense(1)(i), L.Dense(2)(i)], name="pair")])


def test_what_cannot_be_done_is_refused():
    base = _base()
    shared = L.Dense(4, name="shared")
    i = kdsl.Input(shape=(4,))
    inner = kdsl.Model(i, shared(i), name="holder")
    x = kdsl.Input(shape=(4,))
    with pytest.raises(KdslUnsupportedError, match="also used elsewhere"):
        kdsl.Model(x, L.add([inner(x), shared(x)]))
    with pytest.raises(KdslArgumentError, match="time_distributed"):
        L.TimeDistributed(base)


def test_an_outer_model_compiled_for_the_cpu_trains_the_inner_models_weights():
    base = _base()
    outer = _head_on_base(base)
    x, y = _x(16, 4), _x(16, 2)
    before = base.predict(x, verbose=0)
    outer.compile(kdsl.optimizers.SGD(0.1), "mse", target="cpu")
    outer.fit(x, y, epochs=2, batch_size=8, verbose=0)
    k1, b1, k2, b2 = outer.get_weights()[2:6]
    after = base.predict(x, verbose=0)
    assert not np.allclose(after, before)
    np.testing.assert_allclose(after, np.maximum(x @ k1 + b1, 0) @ k2 + b2, rtol=1e-5, atol=1e-5)
