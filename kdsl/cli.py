"""The `kdsl` command: check, summarize and compile `.kd` model files."""

from __future__ import annotations

import argparse
import importlib.util
import sys
import textwrap
import time
from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path

import numpy as np

from kdsl import catalogue, datasets
from kdsl.catalogue.args import REQUIRED
from kdsl.catalogue.datasets import DATASETS
from kdsl.curves import check_can_write
from kdsl.distribute import MirroredStrategy
from kdsl.errors import KdslError, did_you_mean
from kdsl.ir.graph import Graph
from kdsl.ir.printer import print_graph
from kdsl.lang import load_file, parse_file
from kdsl.lang.ast import dump
from kdsl.lang.format import format_setting, to_kd
from kdsl.memory import machine_memory
from kdsl.model import Model, Sequential, load_model
from kdsl.pictures.model_graph import Options, model_to_dot
from kdsl.pictures.render import write_picture
from kdsl.summary import summary

DEFAULT_DATA = "mnist_small"
MODEL_HELP = "which model of the file (by default the one model no other model of the file calls)"
PLOT_OPTIONS = [option.name for option in fields(Options)]  # `kdsl plot --show-shapes` ...: plot_model's switches


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except KdslError as error:
        print(error.render(), file=sys.stderr)
        return 1
    except MemoryError as error:  # refused before allocating, or NumPy's own refusal
        print(f"kdsl: out of memory: {error}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # `kdsl ... | head`: the reader has all it wanted
        sys.stdout = None
        return 0
    except Exception as error:  # a bug in kdsl; the user still gets a message, not a traceback
        print(f"kdsl: internal error: {type(error).__name__}: {error}", file=sys.stderr)
        print("please report this with the file that caused it", file=sys.stderr)
        return 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kdsl", description="A model-graph compiler for dense and recurrent networks."
    )
    commands = parser.add_subparsers(title="commands", required=True, metavar="COMMAND")

    check = commands.add_parser("check", help="parse a .kd file and check its shapes", description=_check.__doc__)
    check.add_argument("files", nargs="+", metavar="FILE")
    check.set_defaults(run=_check)

    summarize = commands.add_parser("summary", help="print the Keras-style summary table", description=_summary.__doc__)
    summarize.add_argument("file", metavar="FILE")
    summarize.add_argument("--model", help=MODEL_HELP)
    summarize.add_argument("--ascii", action="store_true", help="draw the table with ASCII characters only")
    summarize.set_defaults(run=_summary)

    compile_ = commands.add_parser(
        "compile", help="compile a model, or show a stage of it", description=_compile.__doc__
    )
    compile_.add_argument("file", metavar="FILE")
    compile_.add_argument("--model", help="which model of the file (needed when it defines several)")
    compile_.add_argument(
        "--emit",
        choices=["ast", "ir", "kd", "py", "ptx"],
        help="ast: the syntax tree; ir: the typed IR graph and its lowered, fused kernels; "
        "kd: the model printed back as .kd text; py: the generated Numba module; "
        "ptx: each CUDA kernel compiled for a GPU (--target cuda; needs no GPU)",
    )
    compile_.add_argument(
        "--cc", type=_compute_capability, default="9.0", help="the GPU --emit ptx compiles for (default 9.0, Hopper)"
    )
    compile_.add_argument("-o", "--output", metavar="DIR", help="write a standalone module, metadata and weights")
    compile_.add_argument("--explain", action="store_true", help="per layer: kernels, fusion, cost, fallbacks")
    compile_.add_argument("--inference", action="store_true", help="inference only: no training step")
    compile_.add_argument("--batch", type=int, default=32, help="batch size for the costs --explain reports")
    compile_.add_argument(
        "--target",
        choices=["cpu", "cuda"],
        default="cpu",
        help="cpu: Numba CPU kernels; cuda: Numba CUDA kernels (a GPU, or NUMBA_ENABLE_CUDASIM=1)",
    )
    compile_.set_defaults(run=_compile)

    train = commands.add_parser(
        "train",
        help="run a file's train block on a dataset",
        description=_train.__doc__,
        epilog=_data_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    train.add_argument("file", metavar="FILE")
    train.add_argument("--model", help=MODEL_HELP)
    train.add_argument("--data", help="a dataset's name or an .npz (below); default: the train block's `data`")
    train.add_argument("--epochs", type=int, help="instead of the train block's")
    train.add_argument("--batch-size", type=int, help="instead of the train block's")
    train.add_argument("--seed", type=int, default=0)
    verbosity = "0: silent; 1: a progress bar (its last line off a terminal); 2: a line an epoch"
    train.add_argument("--verbose", type=int, choices=[0, 1, 2], default=1, help=verbosity)
    train.add_argument("--target", choices=["cpu", "cuda", "numpy"], default="cpu", help="the backend to train on")
    train.add_argument("--out", help="where to save the trained model (default: MODEL.kdz)")
    train.add_argument("--plot", metavar="FILE", help="draw the training curves to FILE (.png, .svg or .pdf)")
    train.set_defaults(run=_train)

    for name, run, text in (("evaluate", _evaluate, "loss and metrics of a saved model on a dataset's test split"),
                            ("predict", _predict, "outputs of a saved model on a dataset's test split")):  # fmt: skip
        command = commands.add_parser(name, help=text, description=run.__doc__, epilog=_data_help(),
                                      formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
        command.add_argument("saved", metavar="MODEL.kdz")
        command.add_argument("--data", help="a dataset's name or an .npz (below); default: the train block's `data`")
        if name == "predict":
            one, several = "an .npy (default predictions.npy)", "an .npz by output name (default predictions.npz)"
            command.add_argument("--out", help=f"where to write the outputs: {one}; for several outputs, {several}")
        command.set_defaults(run=run)

    convert = commands.add_parser(
        "convert",
        help="a Keras .keras or .h5 model to .kd and weights, or back",
        description=_convert.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    convert.add_argument("source", metavar="FILE", help="a Keras .keras or legacy .h5 model, or a .kd file")
    convert.add_argument("-o", "--out", help="where to write the .kd text (default: print it)")
    convert.add_argument("--weights", help="from Keras: where to write the weights (.npz); from .kd: weights to use")
    convert.add_argument("--partial", action="store_true", help="from Keras: stop the model at the layers kdsl refuses")
    convert.add_argument("--to", metavar="M.keras", help="from .kd: the Keras archive to write")
    convert.add_argument("--model", help=MODEL_HELP)
    convert.set_defaults(run=_convert)

    plot = commands.add_parser("plot", help="draw a model's layers, or its kernels", description=_plot.__doc__)
    plot.add_argument("file", metavar="FILE")
    plot.add_argument("-o", "--out", required=True, help="the picture: .svg, .png or .pdf (by Graphviz), or .dot")
    plot.add_argument("--model", help=MODEL_HELP)
    for option in PLOT_OPTIONS:
        plot.add_argument(f"--{option.replace('_', '-')}", action="store_true", help="as plot_model's " + option)
    plot.add_argument("--rankdir", choices=["TB", "LR"], default="TB", help="top to bottom, or left to right")
    plot.add_argument("--dpi", type=int, default=200)
    plot.add_argument("--kernels", action="store_true", help="draw the kernels --explain lists instead of the layers")
    plot.add_argument("--training", action="store_true", help="with --kernels: the training step's kernels too")
    plot.add_argument("--batch", type=int, default=32, help="with --kernels: the batch size of the costs")
    plot.set_defaults(run=_plot)

    layers = commands.add_parser("layers", help="list the layers and their arguments", description=_layers.__doc__)
    layers.add_argument("name", nargs="?", help="show one layer's arguments and defaults")
    layers.set_defaults(run=_layers)
    return parser


def _check(args: argparse.Namespace) -> int:
    """Parse each file, resolve its names, infer every shape and run the compiler's stages (no kernels are
    compiled); report the first error of each file, and warn of a model that would not fit in memory."""
    failed = 0
    for file in args.files:
        try:
            program = load_file(file)
            warnings = [_memory_warning(graph) for graph in program.models.values()]
        except KdslError as error:
            print(error.render(), file=sys.stderr)
            failed += 1
            continue
        models = ", ".join(f"{g.name} ({g.param_count():,} parameters)" for g in program.models.values())
        print(f"{file}: ok — {models or 'no models'}")
        for warning in filter(None, warnings):
            print(warning, file=sys.stderr)
    return 1 if failed else 0


def _convert(args: argparse.Namespace) -> int:
    """Convert a Keras model to kdsl, or a kdsl model to Keras.

    kdsl convert M.keras [-o M.kd] [--weights M.weights.npz] [--partial]
        the model (a .keras archive or a legacy .h5 file) as .kd text, its compile settings as its train block;
        with --weights, its weights as .npz by Keras name, which model.load_weights reads. A layer or argument
        kdsl cannot honour is refused with its reason; with --partial, such a layer and every layer after it are
        left out instead, each named on stderr, and the model ends where they began.
    kdsl convert M.kd --to M.keras [--model NAME] [--weights W.npz]
        a .keras archive that Keras 3 loads: the model with its initial weights (seed 0) or the given ones, and
        its train block as compile settings.
    """
    from kdsl.keras_files import is_keras_file, read_keras_model

    if is_keras_file(args.source):
        if args.to or args.model:
            raise KdslError(f"{args.source} is a Keras model: `--to` and `--model` are for a .kd file",
                            hint=f"kdsl convert {args.source} -o model.kd")  # fmt: skip
        imported = read_keras_model(args.source, Model, partial=args.partial, sequential_class=Sequential)
        for reason in imported.left_out:
            print(f"left out: {reason}", file=sys.stderr)
        text = imported.model.to_kd()
        if args.weights:
            imported.model.save_weights(args.weights)
        if args.out:
            Path(args.out).write_text(text)
        else:
            print(text, end="")
        return 0
    if not args.source.endswith(".kd") or not args.to or args.out or args.partial:
        raise KdslError("kdsl convert takes a Keras model (-o, --weights, --partial) or a .kd file with --to M.keras",
                        hint="kdsl convert m.keras -o m.kd, or kdsl convert m.kd --to m.keras")  # fmt: skip
    if not args.to.endswith(".keras"):
        raise KdslError(f"--to {args.to}: kdsl writes Keras 3's .keras archive", hint="give a name ending in .keras")
    model = Model.from_graph(load_file(args.source).model(args.model))
    if args.weights:
        model.load_weights(args.weights)
    model.save(args.to)
    return 0


def _summary(args: argparse.Namespace) -> int:
    """Print the summary Keras prints for the same model: layers, output shapes, parameter counts."""
    graph = load_file(args.file).model(args.model)
    ascii_only = args.ascii or not _can_print("┏━┃")
    print(summary(graph, ascii_only=ascii_only))
    warning = _memory_warning(graph)
    if warning:
        print(warning, file=sys.stderr)
    return 0


def _memory_warning(graph: Graph) -> str | None:
    """What of the model would not fit in this machine's memory, said before anything is compiled."""
    from kdsl.footprint import footprint  # the compiler's stages, without Numba

    warning = footprint(graph).warning(machine_memory())
    if warning is None:
        return None
    where = f"{graph.span.file}:{graph.span.line}: " if graph.span else ""
    return f"{where}warning: model `{graph.name}`: {warning}"


def _compile(args: argparse.Namespace) -> int:
    """Compile a model to Numba CPU or CUDA kernels (cached on disk), or show a stage of it.

    With no option, generates and compiles the kernels so later runs start fast.
    """
    # Numba: only the commands that compile import the backends
    from kdsl.backends.compiled import cpu_source, export
    from kdsl.backends.modules import cache_dir
    from kdsl.explain import explain, format_fused
    from kdsl.pipeline import compile_model, compile_programs, new_state
    from kdsl.runtime.optimizers import get as get_optimizer

    if args.emit == "ast":
        print(dump(parse_file(args.file).items))
        return 0
    program = load_file(args.file)
    graphs = [program.model(args.model)] if args.model or len(program.models) == 1 else list(program.models.values())
    if args.emit == "kd":
        print(to_kd(*graphs).rstrip())
        return 0
    if args.emit == "ptx" and args.target != "cuda":
        raise KdslError("--emit ptx shows CUDA kernels", hint="add --target cuda")
    if args.output and args.target == "cuda":
        raise KdslError("-o writes a standalone CPU module", hint="see the CUDA kernels with --emit py --target cuda")
    for graph in graphs:
        training = not args.inference and graph.train is not None
        compilation = compile_programs(graph, target=args.target, training=training)
        if args.emit == "ir":
            print(print_graph(graph).rstrip())
            for entry in compilation.entries:
                fused = format_fused(entry.program, compilation.plans[entry.name])
                print(f"\n# {entry.name}: lowered and fused\n{fused}")
        elif args.emit == "py":
            print(_cuda_module(compilation)[0] if args.target == "cuda" else cpu_source(compilation))
        elif args.emit == "ptx":
            print(_ptx(compilation, args.cc))
        if args.explain:
            print(explain(compilation, batch=args.batch))
        if args.output:
            path = export(compilation, new_state(compilation), args.output)
            json_name, npz_name = path.with_suffix(".json").name, path.with_suffix(".npz").name
            print(f"wrote {path}, the support package beside it, {json_name} and {npz_name}")
        if not (args.emit or args.explain or args.output):
            started = time.perf_counter()
            optimizer = get_optimizer(graph.train.optimizer) if training else None  # its update loop is compiled too
            compile_model(graph, target=args.target, training=training).warm_up(
                optimizer=optimizer, verbose=True, summary=False
            )
            print(
                f"compiled {graph.name}: {', '.join(compilation.programs)} in {time.perf_counter() - started:.1f} s "
                f"(cached in {cache_dir()})"
            )
    return 0


def _cuda_module(compilation):
    """The CUDA module's text for a compilation, and its schedules; writing them needs no GPU."""
    from kdsl.backends.cuda.codegen import generate_module

    title = f"CUDA kernels of model `{compilation.graph.name}`."
    return generate_module(title, compilation.entries, compilation.plans)


def _ptx(compilation, cc: tuple[int, int]) -> str:
    """Every kernel the model's CUDA module launches, and the runner's own, as PTX for compute capability `cc`."""
    from kdsl.backends.cuda.launch import simulated

    hint = "install NVIDIA's compiler with `pip install 'kdsl[cuda]'`"
    if simulated():
        raise KdslError("--emit ptx compiles for a real GPU, not Numba's simulator", hint="unset NUMBA_ENABLE_CUDASIM")
    if importlib.util.find_spec("numba_cuda") is None:  # Numba's own CUDA support is retired and lowers less
        raise KdslError("--emit ptx needs NVIDIA's numba-cuda package", hint=hint)
    try:
        from kdsl.backends.cuda.ptx import model_ptx, runtime_ptx
        from kdsl.backends.modules import load_module

        text, schedules = _cuda_module(compilation)
        kernels = {**model_ptx(load_module(text), schedules, cc), **runtime_ptx(cc)}
    except (ImportError, OSError) as error:
        raise KdslError(f"cannot compile CUDA kernels here: {error}", hint=hint) from error
    return "\n".join(f"// ===== kernel {name}, sm_{cc[0]}{cc[1]} =====\n{ptx}" for name, ptx in kernels.items())


def _compute_capability(text: str) -> tuple[int, int]:
    major, _, minor = text.partition(".")
    if not (major.isdigit() and minor.isdigit()):
        raise argparse.ArgumentTypeError(f"expected MAJOR.MINOR, such as 9.0, not {text!r}")
    return int(major), int(minor)


def _train(args: argparse.Namespace) -> int:
    """Train a model as its `train` block says, on a dataset; print test loss and metrics; save the model.
    Launched by `mpiexec -n N`, N processes train it together, each on its share of every (global) batch."""
    graph = load_file(args.file).model(args.model)
    if graph.train is None:
        raise KdslError(f"model `{graph.name}` has no train block", hint=f"add `train {graph.name} {{ loss = ... }}`")
    recipe = graph.train
    if args.plot:
        check_can_write(args.plot)
    losses = [recipe.losses.get(output, recipe.losses.get(None)).loss for output in graph.output_names]
    strategy = MirroredStrategy()  # under `mpiexec -n N`, N replicas; else this process alone
    data = _data(args.data, graph, args.file, say=strategy.is_chief)
    arrays = datasets.for_model(data, datasets.Signature.of(graph, losses))  # before anything compiles
    with strategy.scope():
        model = Model.from_graph(graph)
        model.compile(seed=args.seed, target=args.target)
    batch_size = recipe.batch_size if args.batch_size is None else args.batch_size  # the global batch
    epochs = recipe.epochs if args.epochs is None else args.epochs  # --epochs 0 trains nothing, as Keras's fit
    history = model.fit(arrays["x_train"], arrays["y_train"], batch_size=batch_size, epochs=epochs,
                        verbose=args.verbose, validation_split=recipe.validation_split,
                        shuffle=recipe.shuffle)  # fmt: skip
    logs = model.evaluate(arrays["x_test"], arrays["y_test"], batch_size=256, return_dict=True)
    out = args.out or f"{graph.name}.kdz"
    model.save(out)  # by the chief alone
    if strategy.is_chief:
        print("test: " + " - ".join(f"{k}: {v:.4f}" for k, v in logs.items()))
        print(f"saved {out}")
        if args.plot:
            history.plot(args.plot)
            print(f"training curves in {args.plot}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    """Loss and metrics of a model saved by `kdsl train` on a dataset's test split."""
    model = load_model(args.saved)
    arrays = _test_split(model, args, ("x_test", "y_test"))
    logs = model.evaluate(arrays["x_test"], arrays["y_test"], batch_size=256, return_dict=True)
    print(" - ".join(f"{k}: {v:.4f}" for k, v in logs.items()))
    return 0


def _predict(args: argparse.Namespace) -> int:
    """Outputs of a model saved by `kdsl train` on a dataset's test split, as an .npy (several: an .npz by name)."""
    model = load_model(args.saved)
    names = model.output_names
    suffix = ".npy" if len(names) == 1 else ".npz"
    out = args.out or f"predictions{suffix}"
    if not out.endswith(suffix):
        how_many = "one output" if len(names) == 1 else f"{len(names)} outputs"
        hint = f"--out {Path(out).with_suffix(suffix)}"
        raise KdslError(f"`{model.name}` has {how_many}: --out is an {suffix} file", hint=hint)
    arrays = _test_split(model, args, ("x_test",))
    outputs = model.predict(arrays["x_test"], batch_size=256)
    if len(names) == 1:
        np.save(out, outputs)
    else:
        np.savez(out, **dict(zip(names, outputs)))
    count = len(arrays["x_test"][model.input_names[0]])
    print(f"wrote {out}: {count} predictions of {', '.join(names)}")
    return 0


def _test_split(model: Model, args: argparse.Namespace, groups: tuple[str, ...]) -> dict[str, dict[str, np.ndarray]]:
    """The `groups` of the data a saved model is evaluated on, checked against it."""
    data = _data(args.data, model.graph, None)
    signature = datasets.Signature.of(model.graph, [term.loss for term in model.trainer.losses])
    return datasets.for_model(data, signature, groups)


def _data(given: str | None, graph: Graph, kd_file: str | None, say: bool = True) -> datasets.Data:
    """`--data`, else the train block's `data` (a path in it is relative to the .kd file), else mnist_small; with
    `say`, one line says which, and where the choice came from."""
    setting = graph.train.data if graph.train is not None else None
    if given is not None:
        choice, why = given, "--data"
    elif setting is None:
        choice, why = DEFAULT_DATA, "the default; --data to change"
    elif setting in datasets.NAMED or Path(setting).is_absolute():
        choice, why = setting, "the train block's"
    elif kd_file is not None:
        choice, why = str(Path(kd_file).parent / setting), "the train block's"
    else:
        raise KdslError(
            f"model `{graph.name}` was trained on {setting}, a path relative to the .kd file it came from",
            hint="give the data with --data",
        )
    if say:
        print(f"data: {choice} ({why})")
    return datasets.load(choice)


def _data_help() -> str:
    """What `--data` and a train block's `data` may name, and the layout of an .npz."""
    names = "\n".join(f"  {name:<15}{what}" for name, what in DATASETS.items())
    layout = textwrap.fill(datasets.LAYOUT, 100)
    choice = f"--data, else the train block's `data = ...`, else {DEFAULT_DATA}"
    return f"data: {choice}; a dataset below or an .npz.\n{names}\n\n{layout}"


def _plot(args: argparse.Namespace) -> int:
    """Draw a model as Keras's plot_model does (a box per layer), or with --kernels the kernels the compiler
    generates for it (a box per kernel --explain lists, coloured by kind, with its layers and costs)."""
    graph = load_file(args.file).model(args.model)
    if args.kernels:
        if args.training and graph.train is None:
            hint = f"add `train {graph.name} {{ loss = ... }}`, or leave out --training"
            raise KdslError(f"model `{graph.name}` has no train block: it has no training step", hint=hint)
        from kdsl.pictures.kernels import kernels_to_dot  # Numba: only the commands that compile import the backends
        from kdsl.pipeline import compile_programs

        compilation = compile_programs(graph, training=args.training)
        dot = kernels_to_dot(compilation, batch=args.batch, rankdir=args.rankdir, dpi=args.dpi)
    else:
        options = Options(**{option: getattr(args, option) for option in PLOT_OPTIONS})
        dot = model_to_dot(graph, options, rankdir=args.rankdir, dpi=args.dpi)
    print(f"wrote {write_picture(dot, args.out)}")
    return 0


def _layers(args: argparse.Namespace) -> int:
    """List the layer catalogue, or one layer's arguments with their Keras defaults."""
    if args.name is None:
        for kind in catalogue.KINDS:
            also = f" (also {', '.join(kind.aliases)})" if kind.aliases else ""
            print(f"{kind.name:<22}{kind.keras}{also}")
        return 0
    kind = catalogue.lookup(args.name)
    if kind is None:
        raise KdslError(f"unknown layer `{args.name}`", hint=did_you_mean(args.name, catalogue.spellings()))
    print(f"{kind.name} ({kind.keras})")
    for arg in kind.args:
        default = "required" if arg.default is REQUIRED else f"= {format_setting(arg.default)}"
        print(f"  {arg.name:<28}{default}{'  (may be given by position)' if arg.positional else ''}")
    for name, hint in kind.unsupported.items():
        print(f"  {name:<28}not supported: {hint}")
    return 0


def _can_print(text: str) -> bool:
    try:
        text.encode(sys.stdout.encoding or "ascii")
        return True
    except (UnicodeEncodeError, LookupError):
        return False


if __name__ == "__main__":
    sys.exit(main())
