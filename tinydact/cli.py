"""The `tinydact` command line: a printer over the library. The library is quiet; this prints.

Every mistake of the user's (a missing file, a bad flag, a corrupt checkpoint) arrives here as
a `TinydactError` and is printed as one line, `Error: ...`, with exit status 1.

Modules that import torch are imported inside the commands, so that `--help` (of the group
and of every command) answers without loading torch.
"""

import json
import sys
from dataclasses import fields

import click
from click.core import ParameterSource

from .errors import TinydactError
from .options import DTYPES, KNOBS, METHODS, POLICIES, RULES, SCHEDULERS, TrainConfig, check_serve_options, eval_method


class Group(click.Group):
    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except TinydactError as e:
            raise click.ClickException(str(e)) from None
        except OSError as e:  # a full disk, a folder without write permission, ...
            raise click.ClickException(f"{e.strerror or e}: {e.filename}" if e.filename else str(e)) from None


DEVICE = click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
                      help="where to compute (auto: CUDA when available)")
RULE = click.option("--rule", type=click.Choice(RULES), default="paper", show_default=True,
                    help="halting rule: the paper's bound, or the tight one (also exact, never later)")
NO_HALT = click.option("--no-halt", is_flag=True, help="run every block (full depth): same predictions, by construction")
MODEL_HELP = "tinydact checkpoint: a directory, or the name of a downloaded model"
DTYPE = click.option("--dtype", type=click.Choice(DTYPES), default="float32", show_default=True,
                     help="the backbone's compute dtype (bfloat16: fast on CPUs with AVX512-BF16/AMX and GPUs; float16: CUDA only)")


@click.group(cls=Group)
@click.version_option(package_name="tinydact")
def cli():
    """DACT-BERT: BERT that stops running blocks once its answer can no longer change."""


def echo_json(obj) -> None:
    """One line of strict JSON (NaN and infinity are not JSON: they are an error, never printed)."""
    try:
        click.echo(json.dumps(obj, allow_nan=False, ensure_ascii=False))
    except ValueError:
        raise TinydactError("a result is not a finite number (NaN or infinity)") from None


def config_options(f):
    """One click option per TrainConfig field, with the field's default, help and range."""
    for field in reversed(fields(TrainConfig)):
        m, name = field.metadata, "--" + field.name.replace("_", "-")
        if isinstance(field.default, bool):
            f = click.option(name, is_flag=True, default=field.default, help=m["help"])(f)
            continue
        kind = {int: int, float: float}.get(type(field.default), str) if field.name != "phase" else int
        if "choices" in m:
            kind = click.Choice(m["choices"])
        elif "min" in m:
            rng = click.IntRange if kind is int else click.FloatRange
            kind = rng(min=m["min"], max=m.get("max"), min_open=m.get("min_open", False))
        f = click.option(name, type=kind, default=field.default, show_default=field.default is not None, help=m["help"])(f)
    return f


@cli.command()
@config_options
@click.option("--method", type=click.Choice(METHODS), default=None,
              help="train a method's step; sets --phase/--blocks/--freeze-backbone as listed above")
@click.option("--resume", is_flag=True, help="continue the run in --out (a recipe or one phase), with its saved settings")
@click.option("--overwrite", is_flag=True, help="delete the run --out holds and start again (without it such a folder is refused)")
@DEVICE
@click.option("--quiet", is_flag=True, help="no progress bars or dev lines")
def train(method, resume, overwrite, device, quiet, **options):
    """Fine-tune DACT-BERT: the whole recipe, or one phase, or a baseline's classifiers.

    \b
    Without --phase: the recipe of docs/dact.md §4 in one command, each phase in a subfolder
    of --out (phase1/, heads/, joint/), the final model in --out/final. An option the run
    does not use (e.g. --tau in phase 1) is an error, not ignored.
    --method sets these options (giving one of them with another value is an error):
      dact    --phase 1   phase 1 (--blocks all or last): backbone + per-block answers
      dact    --phase 2   phase 2: the DACT loss (--freeze-backbone: heads only)
      static              --phase 1 --blocks all: a classifier per block, trained jointly
      deebert --phase 1   stage 1 = --phase 1 --blocks last: backbone + last classifier
      deebert --phase 2   stage 2 = --phase 1 --blocks all-but-last --freeze-backbone:
                          the other classifiers on the frozen backbone (start from stage 1)
      pabee               --phase 1 --blocks weighted: jointly, loss Σ_j j·L_j / Σ_j j"""
    from .api import resolve_device
    from .baselines import method_settings
    from .train import run_training

    if options["out"] is None:
        raise TinydactError("--out is required")
    if not resume and (options["model"] is None or options["train"] is None):
        raise TinydactError("--model and --train are required (or --resume --out DIR)")
    ctx = click.get_current_context()
    given = {name for name in ctx.params if ctx.get_parameter_source(name) == ParameterSource.COMMANDLINE}
    if method is not None:
        options.update(method_settings(method, options, given))
    cfg = TrainConfig(**options)
    best = run_training(cfg, resolve_device(device), resume=resume, quiet=quiet, overwrite=overwrite, given=given & {*options, "method"})
    echo_json({"best": best, "out": cfg.out})


@cli.command("eval")
@click.option("--model", "model_dir", default=None, metavar="DIR", help=MODEL_HELP + " (default: the shipped weights/)")
@click.option("--data", required=True, help="labelled TSV")
@click.option("--task", default=None, help="data format (default: the model's, else detected)")
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True, help="examples per batch")
@click.option("--max-length", type=click.IntRange(min=2), default=128, show_default=True, help="tokens per example")
@NO_HALT
@RULE
@click.option("--method", type=click.Choice(METHODS), default=None,
              help="exit rule: DACT's halting test, or a baseline's on the same per-block answers "
                   "(default: the method the checkpoint was trained for, see tinydact train --help)")
@click.option("--knob", type=float, default=None,
              help="the baseline's exit knob: " + ", ".join(f"{m} {knob}" for m, knob in KNOBS.items()))
@click.option("--json", "as_json", is_flag=True, help="print one JSON object")
@DEVICE
@DTYPE
def eval_(model_dir, data, task, batch_size, max_length, no_halt, rule, method, knob, as_json, device, dtype):
    """Accuracy, blocks executed, estimated FLOPs and wall-clock on a labelled file."""
    from .api import load
    from .data import read_examples
    from .evaluate import evaluate

    clf = load(model_dir, device, dtype)
    given = {name for name in ("rule", "method") if click.get_current_context().get_parameter_source(name) == ParameterSource.COMMANDLINE}
    method = eval_method(method, knob, "rule" in given, no_halt, model_dir, clf.num_blocks)
    examples, task, names = read_examples(data, task or clf.task, clf.labels)
    if names != clf.labels:  # the data's class ids mean other labels than the model's answers
        raise TinydactError(f"{data} holds {task} labels {names}, the model answers {clf.labels}: accuracy would compare different things")
    r = evaluate(clf.model, examples, clf.tokenizer, batch_size, max_length, halt=not no_halt, rule=rule,
                 device=clf.device, method=method, knob=knob)
    r.pop("predictions"), r.pop("blocks")
    r.update(task=task, device=clf.device.type, dtype=dtype)
    if as_json:
        return echo_json(r)
    how = "full depth" if no_halt else f"halting ({rule} rule)" if method == "dact" else f"{method} exit, knob {r['knob']:g}"
    matthews = f"   Matthews corr. {r['matthews']:.4f}" if "matthews" in r else ""
    click.echo(f"{r['examples']} examples, {task}, {how}, {clf.device.type}, {dtype}\n"
               f"accuracy      {r['accuracy']:.4f}{matthews}\n"
               f"blocks        {r['avg_blocks']:.2f} of {r['num_blocks']} on average\n"
               f"histogram     {'  '.join(f'{n + 1}:{c}' for n, c in enumerate(r['histogram']))}\n"
               f"FLOPs         {r['gflops_per_example']:.3f} G per example ({r['flops_ratio']:.2f} of full depth)\n"
               f"wall-clock    {r['seconds']:.2f} s at batch size {batch_size}")


@cli.command()
@click.argument("texts", nargs=-1, metavar="TEXT...")
@click.option("--model", "model_dir", default=None, metavar="DIR", help=MODEL_HELP + " (default: the shipped weights/)")
@click.option("--pair", default=None, metavar="TEXT_B", help="second sentence of a pair (with exactly one TEXT)")
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True, help="texts per batch")
@NO_HALT
@RULE
@click.option("--json", "as_json", is_flag=True, help="one JSON object per line")
@click.option("--explain", is_flag=True, help="show y_n, h_n, p_n, a_n and the halting test after every block run")
@DEVICE
@DTYPE
def classify(texts, model_dir, pair, batch_size, no_halt, rule, as_json, explain, device, dtype):
    """Label each TEXT, stopping early where the answer can no longer change.

    TEXT `-` reads one text per line from standard input (a TAB between the two sentences
    of a pair). Prints the label, its probability in a_n at the exit, and the blocks run."""
    from .api import load
    from .data import command_line_inputs
    from .explain import legend, table

    inputs = command_line_inputs(texts, pair, sys.stdin.buffer.read)
    clf = load(model_dir, device, dtype)
    warning = clf.input_warning(inputs)
    if warning:
        click.echo(f"warning: {warning}", err=True)
    if explain and not as_json:
        click.echo(legend(clf.labels, clf.num_blocks, rule, not no_halt) + "\n")
    width = max(len(label) for label in clf.labels)
    for i in range(0, len(inputs), batch_size):  # print as results come
        for j, r in enumerate(clf(inputs[i : i + batch_size], halt=not no_halt, rule=rule, explain=explain, batch_size=batch_size)):
            if r.pop("truncated"):
                click.echo(f"note: text {i + j + 1} was truncated to the model's maximum of {clf.max_length} tokens", err=True)
            if as_json:
                echo_json(r)
                continue
            shown = r["text"] if "pair" not in r else f"{r['text']}  [SEP]  {r['pair']}"
            click.echo(f"{r['label']:<{width}}  {r['confidence']:.2f}  blocks {r['blocks']}/{r['num_blocks']}  {shown}")
            if explain:
                click.echo("\n".join(table(r["steps"], rule, not no_halt)) + "\n")


@cli.command()
@click.argument("name")
@click.argument("task", required=False)
@click.option("--to", default=None, metavar="DIR",
              help="folder to write into (default: $TINYDACT_HOME/models/NAME, or $TINYDACT_HOME/data/glue)")
def download(name, task, to):
    """Fetch an official BERT checkpoint, or GLUE data, into $TINYDACT_HOME (~/.cache/tinydact).

    \b
    tinydact download sentence-transformers/all-MiniLM-L6-v2   (then --model all-MiniLM-L6-v2)
    tinydact download google/bert_uncased_L-4_H-256_A-4 --to models/bert-mini
    tinydact download glue SST-2"""
    from .download import GLUE_TASKS, download_glue, download_model
    from .home import home

    if name == "glue":
        if task is None:
            raise TinydactError(f"which GLUE task? tinydact download glue TASK ({', '.join(GLUE_TASKS)})")
        for folder in download_glue(task, to or home() / "data" / "glue", progress=sys.stderr.isatty()):  # no bars in logs
            click.echo(f"wrote {folder}")
        return
    if task is not None:
        raise TinydactError(f"unexpected argument {task!r}: a model is downloaded with tinydact download NAME")
    r = download_model(name, to or home() / "models" / name.rstrip("/").split("/")[-1])
    cfg = r["config"]
    converted = ", pytorch_model.bin converted to model.safetensors" if r["weights"] == "pytorch_model.bin" else ""
    click.echo(f"wrote {r['path']}: {cfg.num_hidden_layers} blocks, hidden size {cfg.hidden_size}{converted}")


@cli.command()
@click.option("--model", "model_dir", default=None, metavar="DIR", help=MODEL_HELP + " (default: the shipped weights/)")
@click.option("--host", default="127.0.0.1", show_default=True, help="address to listen on")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True, help="port (0: any free one, printed)")
@click.option("--scheduler", type=click.Choice(SCHEDULERS), default="depth", show_default=True,
              help="depth: rows join and leave between blocks; compact: batch by batch, early exit; static: every block")
@click.option("--policy", type=click.Choice(POLICIES), default="oldest", show_default=True,
              help="depth: run the block of the oldest request, the longest-waiting row, or the longest queue")
@click.option("--max-batch", type=click.IntRange(min=1), default=32, show_default=True, help="rows in one block run")
@click.option("--max-wait-ms", type=click.FloatRange(min=0), default=5.0, show_default=True, help="how long new rows wait for others")
@click.option("--max-queue", type=click.IntRange(min=1), default=1024, show_default=True,
              help="texts in the service at once; beyond it a request gets 503")
@RULE
@DEVICE
@DTYPE
def serve(model_dir, host, port, scheduler, policy, max_batch, max_wait_ms, max_queue, rule, device, dtype):
    """Answer POST /classify over HTTP (GET /health, GET /metrics): see tinydact/server.py."""
    from .api import load
    from .scheduler import Service
    from .server import listen, serve, uvicorn_or_error

    ctx = click.get_current_context()
    check_serve_options(scheduler, {n for n in ("rule", "policy") if ctx.get_parameter_source(n) == ParameterSource.COMMANDLINE})
    uvicorn_or_error()  # before the model loads
    clf = load(model_dir, device, dtype)
    sock, name = listen(host, port), str(model_dir or "weights/")
    host, port = sock.getsockname()[:2]
    click.echo(f"serving {name} ({clf.num_blocks} blocks, scheduler {scheduler}) on http://{host}:{port} "
               "(Ctrl-C stops after the requests in flight)", err=True)
    answered = serve(Service(clf, scheduler, policy, rule, max_batch, max_wait_ms, max_queue), name, sock)
    click.echo(f"stopped: {answered} requests answered", err=True)


def main(argv=None):
    cli.main(args=argv, prog_name="tinydact")
