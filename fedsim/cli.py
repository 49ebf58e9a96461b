"""``fedsim`` command line: parses flags and calls the library (``fedsim.run``).

Exit status: 0 success; 2 bad input, with one line on stderr naming the bad value; 1 unexpected failure.
"""

import argparse
import logging
import re
import sys
import warnings
from pathlib import Path

from absl import flags
from ml_collections import ConfigDict, config_flags

from fedsim.config import base_config, suggest_keys
from fedsim.errors import ConfigError

COMMANDS = ("run", "sweep", "data", "plot", "bench", "keys")
USAGE = (
    "usage: fedsim run --config configs/NAME.py[:ARG] [--config.KEY=VALUE ...] --workdir DIR | "
    "fedsim sweep --config ... --workdir DIR | fedsim data --config ... [--out DIR] | "
    "fedsim plot --workdir DIR [DIR ...] [--out DIR] | "
    "fedsim bench --suite round|algorithms|pfl [--out FILE.json] [--clients K [K ...]] [--rounds N] "
    "[--quick] [--peer-python PATH] | fedsim keys [--config ...] [--markdown] | fedsim --help"
)
HELP = """fedsim: a JAX/Flax federated-learning simulator.

commands:
  run    --config FILE.py[:ARG] [--config.KEY=VALUE ...] --workdir DIR
         train one experiment into DIR (resumes from DIR's newest checkpoint)
  sweep  --config FILE.py[:ARG] [--config.KEY=VALUE ...] --workdir DIR
         every cell of the config's get_sweep() (one vmapped program where possible)
  data   --config FILE.py[:ARG] [--out DIR]
         the federation's client sizes and label matrix, with figures
  plot   --workdir DIR [DIR ...] [--out DIR]
         accuracy vs round, vs MB, and the personal-accuracy histogram
  bench  --suite round|algorithms|pfl [--out FILE.json] [--clients K ...] [--rounds N] [--quick]
         [--peer-python PATH]
         performance suites, written as JSON; pfl times pfl-research in PATH's environment
  keys   [--config FILE.py[:ARG] [--config.KEY=VALUE ...]] [--markdown]
         every config key with its default (or the config's value) and meaning

Multi-process (one experiment over several hosts' devices): put --coordinator HOST:PORT
--num-processes N --process-id I before the command on every process, with --config.devices=0.

ARG is a comma list key=value read by the config (e.g. configs/fedavg.py:algorithm=fedadam,smoke);
an algorithm's hyper-parameters live in its section: --config.fedprox.mu=0.1. The key reference
is also in docs/keys.md. Exit status: 0 success, 2 bad input (one line on stderr)."""


class _ArgumentParser(argparse.ArgumentParser):
    def error(self, message):
        raise ConfigError(f"{message}; {USAGE}")


def plot_command(args: list[str]) -> None:
    """``fedsim plot --workdir DIR [DIR ...] [--out DIR]``: figures into --out (default: first DIR)."""
    from fedsim.metrics.plots import plot_runs

    parser = _ArgumentParser(prog="fedsim plot", add_help=False)
    parser.add_argument("--workdir", nargs="+", required=True, type=Path)
    parser.add_argument("--out", type=Path, default=None)
    parsed = parser.parse_args(args)
    for path in plot_runs(parsed.workdir, parsed.out or parsed.workdir[0]):
        print(path)


def bench_command(args: list[str]) -> None:
    """``fedsim bench --suite NAME [--out FILE.json] [--clients K ...] [--rounds N] [--quick]``:
    a performance suite (``fedsim.bench``), its rows printed and written as JSON."""
    import json

    from fedsim import bench

    parser = _ArgumentParser(prog="fedsim bench", add_help=False)
    parser.add_argument("--suite", required=True)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--clients", type=int, nargs="+", default=None)
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--peer-python", default=sys.executable)
    parsed = parser.parse_args(args)
    rows = bench.run_suite(
        parsed.suite, clients=parsed.clients, rounds=parsed.rounds, quick=parsed.quick,
        peer_python=parsed.peer_python,
    )  # fmt: skip
    out = parsed.out or bench.default_out(parsed.suite)
    bench.write_json(rows, out)
    for row in rows:
        print(json.dumps(row))
    print(out)


def _one_line(err: BaseException) -> str:
    text = str(err).strip() or type(err).__name__
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return " ".join(lines[:4]) if isinstance(err, OSError) else lines[0]


def _config_error_cause(err: BaseException) -> ConfigError | None:
    """The ``ConfigError`` in ``err``'s chain of causes, if any."""
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, ConfigError):
            text = str(err)  # ml_collections re-raises it with the whole traceback as its message
            marker = "ConfigError: "
            if "\n" in text and marker in text:
                return ConfigError(text.rsplit(marker, 1)[1].strip().splitlines()[0])
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None


def _typed_key(args: list[str], leaf: str) -> str:
    """The dotted key of the ``--config.KEY`` flag that ends in ``leaf`` (ml_collections names only
    the last part, so ``moon.temperature`` would read as ``temperature``)."""
    typed = [a.removeprefix("--config.").split("=")[0] for a in args if a.startswith("--config.")]
    return next((key for key in typed if key.split(".")[-1] == leaf), leaf)


def parse_config_flags(args: list[str], directory_flag: str = "workdir"):
    """``(config, directory)`` from ``--config ... --<directory_flag> DIR``; every problem becomes a
    ``ConfigError``. ``run`` requires ``--workdir``; ``data`` takes an optional ``--out``."""
    path = _config_path(args)
    if path and not Path(path).is_file():
        raise ConfigError(f"config file {path!r} does not exist")
    args, model_kwargs = _model_kwargs_flags(args)
    argv = ["fedsim", *args]
    values = flags.FlagValues()
    config_flags.DEFINE_config_file(
        "config", None, "experiment config file", flag_values=values, sys_argv=argv
    )
    flags.DEFINE_string(directory_flag, None, "output directory", flag_values=values)
    try:
        rest = values(argv)
    except flags.Error as err:
        cause = _config_error_cause(err)
        if cause is not None:  # the config file's get_config rejected its ARG
            raise cause from None
        raise ConfigError(f"bad flag: {_one_line(err)}") from None
    except AttributeError as err:  # an override of a key the config does not have
        named = re.search(r"[A-Za-z_][\w.]*", str(err))  # the message quotes and escapes the key
        key = _typed_key(args, named.group(0) if named else str(err))
        hint = suggest_keys(base_config(), key)
        raise ConfigError(f"--config.{key}: no such config key{hint}") from None
    if len(rest) > 1:
        raise ConfigError(f"unexpected argument {rest[1]!r}; {USAGE}")
    if values["config"].value is None and not any(a.startswith("--config") for a in args):
        raise ConfigError(f"--config is required; {USAGE}")
    if directory_flag == "workdir" and not values.workdir:
        raise ConfigError(f"--workdir is required; {USAGE}")
    try:
        config = values.config
        config.keys()  # a config that failed to load raises on first use
    except ConfigError:
        raise
    except Exception as err:
        cause = _config_error_cause(err)
        if cause is not None:
            raise cause from None
        raise ConfigError(f"--config could not be loaded: {_one_line(err)}") from None
    if model_kwargs:  # open-ended: a flag may also change a value's type (hidden=(32,) -> 16)
        config.unlock()
        config.model_kwargs = ConfigDict({**config.model_kwargs.to_dict(), **model_kwargs})
        config.lock()
    return config, values[directory_flag].value


def _model_kwargs_flags(args: list[str]) -> tuple[list[str], dict]:
    """``args`` without its ``--config.model_kwargs.NAME=VALUE`` flags, and those as a dict (the
    model's arguments are open-ended, so they may name keys the config does not have yet)."""
    from fedsim.config import literal

    rest, kwargs = [], {}
    for arg in args:
        name, sep, value = arg.removeprefix("--config.model_kwargs.").partition("=")
        if arg.startswith("--config.model_kwargs.") and sep and name.isidentifier():
            kwargs[name] = literal(value)
        else:
            rest.append(arg)
    return rest, kwargs


def data_command(args: list[str]) -> None:
    """``fedsim data --config ... [--out DIR]``: federation statistics, printed (and plotted into
    ``--out`` when given)."""
    from fedsim.data.stats import federation_summary, label_matrix_text
    from fedsim.engine.setup import load_federation
    from fedsim.metrics.plots import plot_federation

    config, out = parse_config_flags(args, directory_flag="out")
    data = load_federation(config)
    for key, value in federation_summary(data).items():
        print(f"{key:>32}: {value:g}" if isinstance(value, float) else f"{key:>32}: {value}")
    print(label_matrix_text(data))
    if out:
        for path in plot_federation(data, Path(out), f"{config.dataset}, {config.partition}"):
            print(path)


def _config_path(args: list[str]) -> str:
    """The config file of the ``--config FILE.py[:ARG]`` flag in ``args``."""
    for i, arg in enumerate(args):
        if arg == "--config" and i + 1 < len(args):
            return args[i + 1].partition(":")[0]
        if arg.startswith("--config="):
            return arg.partition("=")[2].partition(":")[0]
    return ""


def sweep_command(args: list[str]) -> None:
    """``fedsim sweep --config FILE.py[:ARG] ... --workdir DIR``: every cell of the config's
    ``get_sweep()`` in ``DIR/<key=value-...>`` (``fedsim.sweep``: new cells that differ only in seeds
    or traceable hyper-parameters train as one vmapped program), then ``DIR/sweep.json``,
    ``DIR/results.csv`` and ``DIR/sweep.png``. A cell's values (any type: numbers, tuples, dicts;
    dotted keys reach into sections) are set on the flags' config."""
    from fedsim.config import sweep_cells, with_overrides
    from fedsim.engine.setup import check_config
    from fedsim.sweep import run_sweep

    config, workdir = parse_config_flags(args)
    cells = [(o, with_overrides(config, o)) for o in sweep_cells(_config_path(args))]
    for _, cell in cells:  # every cell's config checked before any run
        check_config(cell)
    run_sweep(cells, workdir)
    print(Path(workdir) / "sweep.json")


def keys_command(args: list[str]) -> None:
    """``fedsim keys [--config FILE.py[:ARG] ...] [--markdown]``: the key reference of a config
    (``base_config()`` without ``--config``)."""
    from fedsim import keys
    from fedsim.config import with_algorithm_section

    markdown = "--markdown" in args
    args = [a for a in args if a != "--markdown"]
    config = base_config()
    if args:
        config = with_algorithm_section(parse_config_flags(args, directory_flag="out")[0])
    rows = keys.reference(config)
    print(keys.as_markdown(rows) if markdown else keys.as_text(rows), end="")


def join_processes(argv: list[str]) -> list[str]:
    """``argv`` without its leading ``--coordinator HOST:PORT --num-processes N --process-id I``,
    after joining this process to that ``jax.distributed`` run (unchanged without them)."""
    if not argv or argv[0] != "--coordinator":
        return argv
    parser = _ArgumentParser(prog="fedsim", add_help=False)
    parser.add_argument("--coordinator", required=True)
    parser.add_argument("--num-processes", type=int, required=True)
    parser.add_argument("--process-id", type=int, required=True)
    parser.add_argument("command", nargs=argparse.REMAINDER)
    parsed = parser.parse_args(argv)
    if parsed.num_processes < 1:
        raise ConfigError(f"--num-processes {parsed.num_processes}: accepted 1 or more")
    if not 0 <= parsed.process_id < parsed.num_processes:
        raise ConfigError(
            f"--process-id {parsed.process_id}: accepted 0..{parsed.num_processes - 1} "
            f"(--num-processes {parsed.num_processes})"
        )
    import jax

    jax.distributed.initialize(parsed.coordinator, parsed.num_processes, parsed.process_id)
    return parsed.command


def _wants_help(argv: list[str]) -> bool:
    return not argv or argv[0] in ("-h", "--help", "help") or "--help" in argv or "-h" in argv


def _quiet_libraries() -> None:
    """fedsim's own warnings as one line (no source line); TFDS's absl INFO/WARNING logs silenced
    (e.g. 'Variant folder ... has no dataset_info.json' when nothing is downloaded)."""
    shown = warnings.formatwarning
    if getattr(shown, "fedsim", False):
        return

    def one_line(message, category, filename, *rest, **kwargs):
        if "/fedsim/" in filename:
            return f"fedsim: warning: {message}\n"
        return shown(message, category, filename, *rest, **kwargs)

    one_line.fedsim = True
    warnings.formatwarning = one_line
    logging.getLogger("absl").setLevel(logging.ERROR)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    _quiet_libraries()
    try:
        argv = join_processes(argv)
        if _wants_help(argv):
            print(HELP)
            return 0
        if argv[0] not in COMMANDS:
            given = argv[0] if argv else "nothing"
            raise ConfigError(
                f"command {given!r} is unknown; accepted: {', '.join(COMMANDS)}. {USAGE}"
            )
        commands = {
            "plot": plot_command,
            "data": data_command,
            "sweep": sweep_command,
            "bench": bench_command,
            "keys": keys_command,
        }
        if argv[0] in commands:
            commands[argv[0]](argv[1:])
            return 0
        config, workdir = parse_config_flags(argv[1:])
        from fedsim.driver import run

        print(summary_line(run(config, workdir), workdir))
    except ConfigError as err:
        print(f"fedsim: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as err:  # fedsim.driver.Interrupted, or Ctrl-C before the rounds
        saved = err.args[0] if err.args else 0
        where = f"resume from round {saved}" if saved else "start again"
        print(f"fedsim: interrupted; rerun the same command to {where}", file=sys.stderr)
        return 130
    return 0


def summary_line(summary: dict, workdir) -> str:
    """One line about a finished run: its final metrics, time and where its files are."""
    personal = summary.get("personal_acc_mean")
    return (
        f"fedsim: {summary['rounds']} rounds in {summary['wall_s']:.0f} s: "
        f"global_acc {summary['global_acc']:.4f}, personal_acc_mean {personal:.4f}, "
        f"up {summary['up_mb']:.1f} MB, down {summary['down_mb']:.1f} MB; "
        f"files in {workdir} (summary.json, metrics.jsonl)"
    )


if __name__ == "__main__":
    sys.exit(main())
