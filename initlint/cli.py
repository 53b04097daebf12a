"""The command line: a thin face over the Python API (``initlint.api``)."""

from __future__ import annotations

import functools
import sys
import traceback
import warnings
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING

import click

from initlint import __version__
from initlint.choices import DEVICES, FIX_METHODS, HUMAN_FORMATS, OUTPUT_FORMATS, SEVERITIES

# numpy is optional: without it torch warns "Failed to initialize NumPy" on import, on every
# command, about a feature initlint does not use. Only that warning is silenced.
warnings.filterwarnings("ignore", message="Failed to initialize NumPy", category=UserWarning)

if TYPE_CHECKING:
    from initlint.api import CheckOptions
    from initlint.config import Config, TargetConfig
    from initlint.load import LoadedTarget
    from initlint.report import Report



def exit_summary(reports: list[Report], level: str, status: int) -> str:
    """``3 finding(s) (1 error, 2 warning) in 2 targets; exit 1: findings at or above warning``."""
    from initlint.report import severity_counts

    findings = [f for report in reports for f in report.findings]
    counts = severity_counts(findings)
    targets = f"{len(reports)} target{'s' * (len(reports) != 1)}"
    reason = (f"findings at or above {level}" if status else
              "--exit-zero" if any(r.at_or_above(level) for r in reports) else f"no finding at or above {level}")
    return f"{len(findings)} finding(s){f' ({counts})' if counts else ''} in {targets}; exit {status}: {reason}"


def _warn_unmatched_ignores(reports: list[Report], config: Config) -> None:
    """A per-module-ignores glob that matches no module of any checked model ignores nothing:
    most likely a misspelt path, which would otherwise pass silently."""
    unmatched = set.intersection(*(set(report.unmatched_ignores) for report in reports))
    for glob in sorted(unmatched):
        click.echo(f"initlint: warning: {config.path}: [tool.initlint] per-module-ignores {glob!r} matches no "
                   "module of the checked model(s); write a module path as findings show it (`body.2`, `head.*`).",
                   err=True)


def _fail(message: str) -> None:
    click.echo(f"initlint: error: {message}", err=True)
    sys.exit(2)


def _what_was_written(before: int) -> str:
    from initlint.output import written

    done = written()[before:]
    return f"only {', '.join(map(repr, done))} had been written" if done else "nothing was written"


def reports_errors(command: Callable) -> Callable:
    """Turn bad input into exit 2 and a message on stderr; a traceback only with --debug."""

    @functools.wraps(command)
    def wrapper(*args: object, debug: bool = False, **kwargs: object) -> object:
        from initlint.errors import InitlintError
        from initlint.interrupts import Interrupted, signals_handled
        from initlint.output import written

        outputs_before = len(written())
        try:
            with signals_handled():
                return command(*args, **kwargs)
        except click.ClickException:
            raise  # usage errors: click prints them and exits 2
        except InitlintError as error:
            if debug:
                traceback.print_exc()
            _fail(str(error))
        except KeyboardInterrupt as error:
            cause = f"by {error.signal_name}" if isinstance(error, Interrupted) else "by KeyboardInterrupt"
            _fail(f"interrupted {cause}; {_what_was_written(outputs_before)} (temporary files were removed); "
                  "run the command again and let it finish.")
        except Exception as error:  # a bug in initlint, or torch failing somewhere unexpected
            if debug:
                traceback.print_exc()
            _fail(f"unexpected {type(error).__name__}: {error} (run with --debug for a traceback, "
                  "and please report it).")

    return click.option("--debug", is_flag=True, help="Show Python tracebacks for errors.")(wrapper)


input_shape_option = click.option(
    "--input-shape", "input_shapes", multiple=True, metavar="8,3,224,224",
    help="Shape of one model input, batch first; repeat once per input. Inferred from the first layer when absent.",
)


input_option = click.option(
    "--input", "named_inputs", multiple=True, metavar="NAME=8,32:int64",
    help="A model input by name (a keyword of forward), shape batch first, and dtype (float32 "
         "[the model's float dtype], float16, bfloat16, int64, bool); repeatable. Integer ids are "
         "drawn within the embedding's vocabulary, integer or bool masks are all ones.",
)


def probe_options(command: Callable) -> Callable:
    """The options ``check`` and ``fix`` share: how to probe, and which config to read."""
    for option in reversed((
        input_shape_option,
        input_option,
        click.option("--device", type=click.Choice(DEVICES), help="Where to run the probe.  [default: cpu]"),
        click.option("--seed", type=int, help="Seed of the probe inputs and cotangents.  [default: 0]"),
        click.option("--config", "config_path", type=click.Path(dir_okay=False),
                     help="A pyproject.toml to read [tool.initlint] from (default: the nearest one)."),
    )):
        command = option(command)
    return command


def _merged_options(config: Config, device: str | None, seed: int | None, **settings: object) -> CheckOptions:
    """CheckOptions from the command line over [tool.initlint], over the defaults."""
    from initlint.api import CheckOptions, validated

    options = CheckOptions(
        device=device or config.device or "cpu",
        seed=seed if seed is not None else (config.seed or 0),
        **settings,
    )
    return validated(options, FLAGS)


FLAGS = {"seed": "--seed", "select": "--select", "ignore": "--ignore", "input_shapes": "--input-shape"}
"""How the settings that come from flags are spelled on the command line (config values are
checked, naming their file and key, when the config is read)."""


def _named_inputs(texts: tuple[str, ...]) -> dict[str, str]:
    """``--input NAME=SHAPE:DTYPE`` values as ``{NAME: "SHAPE:DTYPE"}``, each checked now."""
    from initlint.inputs import parse_input_option

    for text in texts:
        parse_input_option(text)
    return dict(text.split("=", 1) for text in texts)


def _for_target(options: CheckOptions, config: Config, loaded: LoadedTarget, job: TargetConfig) -> CheckOptions:
    """The options for one target: its inputs, and the config's imports resolved beside it."""
    leaf_modules, wrap_functions = config.imports_for(loaded)
    given = job.input_shapes or job.inputs
    shapes, named = (job.input_shapes, job.inputs) if given else (loaded.planned.shapes, loaded.planned.named)
    return replace(options, input_shapes=shapes or None, inputs=named, target=job.target,
                   leaf_modules=leaf_modules, wrap_functions=wrap_functions)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="initlint")
def main() -> None:
    """initlint: lint a PyTorch model's initialization by probing it with Gaussian data."""


@main.command()
@click.argument("targets", nargs=-1)
@probe_options
@click.option("--select", multiple=True, metavar="CODES", help="Only these rules (codes, prefixes such as IL1, names; comma-separated).")
@click.option("--ignore", multiple=True, metavar="CODES", help="Skip these rules.")
@click.option("--output-format", type=click.Choice(OUTPUT_FORMATS), help="[default: text]")
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Write the report to FILE instead of stdout.")
@click.option("--force", is_flag=True, help="Overwrite an existing --output or --plot file.")
@click.option("--plot", type=click.Path(dir_okay=False), metavar="FILE.png",
              help="Also draw the signal-propagation plot (needs the extra initlint[plot]).")
@click.option("--fail-level", type=click.Choice(SEVERITIES),
              help="Exit 1 when a finding is at least this severe.  [default: warning]")
@click.option("--exit-zero", is_flag=True, help="Exit 0 even when there are findings (bad input still exits 2).")
@click.option("--require-graph", is_flag=True,
              help="Exit 2 when a model cannot be captured as a graph, instead of checking it with the "
                   "few rules module hooks allow.")
@click.option("--timings", is_flag=True,
              help="Add each target's probe time (\"seconds\") to JSON reports; without it JSON is the same on every run.")
@reports_errors
def check(
    targets: tuple[str, ...], input_shapes: tuple[str, ...], named_inputs: tuple[str, ...],
    device: str | None, seed: int | None, config_path: str | None, select: tuple[str, ...], ignore: tuple[str, ...],
    output_format: str | None, output: str | None, force: bool, plot: str | None, fail_level: str | None,
    exit_zero: bool, require_graph: bool, timings: bool,
) -> None:
    """Check TARGET (path/to/file.py:factory, package.module:factory, or a folder written by
    `initlint fix`). Without TARGET, check the targets of [tool.initlint] in pyproject.toml."""
    from initlint.api import ModelSource, run_check
    from initlint.config import TargetConfig, load_config
    from initlint.errors import InitlintError
    from initlint.inputs import parse_shape
    from initlint.load import load_target
    from initlint.output import refuse_existing, write_text_atomically
    from initlint.plot import require_matplotlib, write_plot
    from initlint.report import RENDERERS, to_json
    from initlint.selection import select_rules

    config = load_config(config_path)
    shapes = [parse_shape(s) for s in input_shapes]
    jobs = [TargetConfig(t, shapes, _named_inputs(named_inputs)) for t in targets] or config.targets
    if not jobs:
        raise InitlintError(
            "no TARGET given and no targets in [tool.initlint] of "
            f"{config.path or 'a pyproject.toml'}; pass path/to/model.py:factory."
        )
    output_format = output_format or config.output_format or "text"
    options = _merged_options(
        config, device, seed,
        show_progress=output_format in HUMAN_FORMATS,
        select=list(select) if select else config.select,
        extend_select=config.extend_select,
        ignore=list(ignore) or config.ignore,
        thresholds=config.rules,
        per_module_ignores=config.per_module_ignores,
        require_graph=require_graph or bool(config.require_graph),
    )
    select_rules(options.select, options.ignore, options.thresholds, options.extend_select)  # fail early
    for path in filter(None, (output, plot)):
        refuse_existing(path, force)
    if plot:
        require_matplotlib()
    reports = []
    for job in jobs:
        loaded = load_target(job.target, options.seed)
        job_options = _for_target(options, config, loaded, job)
        source = ModelSource(loaded.construction_sites, loaded.factory_location)
        reports.append(run_check(loaded.model, (), job_options, source))
    _warn_unmatched_ignores(reports, config)
    rendered = to_json(reports, timings) if output_format == "json" else RENDERERS[output_format](reports)
    if output:
        write_text_atomically(output, rendered, force)
    else:
        click.echo(rendered, nl=False)
    if plot:
        write_plot(plot, reports, force)
    level = fail_level or config.fail_level or "warning"
    failing = any(report.at_or_above(level) for report in reports)
    status = 1 if failing and not exit_zero else 0
    if output:  # the report went to a file: say on the terminal what it holds and why the exit
        click.echo(f"initlint: wrote {output}: {exit_summary(reports, level, status)}", err=True)
    sys.exit(status)


@main.command()
@click.argument("activation")
@click.option("--depth", type=click.IntRange(1, 1000), default=50, show_default=True,
              help="Layers in the (Linear -> ACTIVATION) stack the gain is chosen for.")
@click.option("--width", type=click.IntRange(2, 4096), default=128, show_default=True, help="Width of the stack.")
@click.option("--output-format", type=click.Choice(["text", "json"]), default="text", show_default=True,
              help="json adds the per-depth forward and gradient curves.")
@reports_errors
def gain(activation: str, depth: int, width: int, output_format: str) -> None:
    """Renorm constants of ACTIVATION and the gain that suits a deep stack of it."""
    from initlint.gain_report import gain_json, gain_text, measure_gains

    measured = measure_gains(activation, depth, width, show_progress=True)
    click.echo(gain_json(measured) if output_format == "json" else gain_text(measured), nl=False)


@main.command()
@click.argument("target")
@click.option("-o", "--output", "output", required=True, type=click.Path(),
              help="Folder to write: model.py, weights.pt, renorm.json (and folded_state_dict.pt with --fold).")
@click.option("--fold", is_flag=True, help="Also fold the constants into your model's own weights.")
@click.option("--method", type=click.Choice(FIX_METHODS), default=None,
              help="dks (the default without --fold): constants before and after each activation that keep the "
                   "whole network's kernel healthy at its depth (Deep Kernel Shaping); dks-scale (the default "
                   "with --fold): the same where an input scale does it (tanh, sigmoid), and for a ReLU-like one "
                   "between two Linear or conv layers outside residual branches, looks-linear pairs of those layers' "
                   "directions (linear at init), elsewhere renorm's constants; renorm: only each activation's "
                   "output to mean 0, std 1.")
@click.option("--keep-directions", is_flag=True,
              help="Only rescale the Linear and Conv layers (and draw no looks-linear pairs); by default those "
                   "the fix rescales also take orthogonal directions at their own norm, as LSUV starts from.")
@click.option("--force", is_flag=True,
              help="Replace an output folder that `initlint fix` wrote before (never any other folder).")
@probe_options
@reports_errors
def fix(target: str, output: str, fold: bool, method: str | None, keep_directions: bool, force: bool,
        input_shapes: tuple[str, ...],
        named_inputs: tuple[str, ...], device: str | None, seed: int | None, config_path: str | None) -> None:
    """Write TARGET with renorm constants after each nonlinearity (or folded into its weights).
    Device, seed, leaf-modules and wrap-functions come from [tool.initlint] unless given here."""
    from initlint.api import ModelSource
    from initlint.config import TargetConfig, load_config
    from initlint.export import refuse_existing_fix_output, write_fix
    from initlint.fixer import run_fix
    from initlint.inputs import parse_shape
    from initlint.load import load_target

    config = load_config(config_path)
    shapes = [parse_shape(s) for s in input_shapes]
    refuse_existing_fix_output(output, force)
    merged = _merged_options(config, device, seed, show_progress=True)
    loaded = load_target(target, merged.seed)
    job = TargetConfig(target, shapes, _named_inputs(named_inputs))
    options = _for_target(merged, config, loaded, job)
    result = run_fix(loaded.model, (), options, ModelSource(loaded.construction_sites, loaded.factory_location), fold,
                     method=method, keep_directions=keep_directions)
    missing_code = write_fix(output, result, target, force)
    click.echo(result.summary(output), err=True)
    if missing_code:
        click.echo(f"  wrote the folded weights and the plan only: {missing_code}; load {output}/folded_state_dict.pt "
                   "into your model class with strict=True", err=True)


@main.command()
@click.argument("code", required=False)
@click.option("--all", "list_all", is_flag=True, help="List every rule: code, name and summary.")
@reports_errors
def rule(code: str | None, list_all: bool) -> None:
    """Print the documentation of rule CODE (a code such as IL201, or a name such as saturated-activation)."""
    from initlint.rule_docs import rule_documentation, rules_listing

    if list_all == (code is not None):
        raise click.UsageError("give either a rule CODE or --all.")
    click.echo(rules_listing() if list_all else rule_documentation(code), nl=False)
