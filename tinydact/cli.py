"""The `tinydact` command line. The library is quiet; this module prints.

Every mistake of the user's (a missing file, a bad flag, a corrupt checkpoint) arrives here as
a `TinydactError` and is printed as one line, `Error: ...`, with exit status 1.
"""

import json
import sys
from dataclasses import fields
from pathlib import Path

import click
import torch

from .baselines import METHODS
from .errors import TinydactError


class Group(click.Group):
    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except TinydactError as e:
            raise click.ClickException(str(e)) from None


def resolve_device(name: str) -> torch.device:
    """`auto` -> CUDA when available, else CPU. An explicit `cuda` without CUDA is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        build = f"built with CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
        raise TinydactError(f"--device cuda: CUDA is not available here (torch {torch.__version__}, {build})")
    return torch.device(name)


DEVICE = click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)


@click.group(cls=Group)
@click.version_option(package_name="tinydact")
def cli():
    """DACT-BERT: BERT that stops running blocks once its answer can no longer change."""


def _train_options(f):
    from .train import TrainConfig

    helps = {
        "model": "pretrained BERT directory, or a tinydact checkpoint (e.g. phase 1's best/)",
        "train": "training TSV (GLUE format or sentence<TAB>label)",
        "out": "run folder: best/, final/, state.pt, log.jsonl",
        "dev": "dev TSV, evaluated during training",
        "task": "data format (default: detected from the file)",
        "phase": "1: cross-entropy warm-up of backbone + answers; 2: the DACT loss",
        "layers": "phase 1: cross-entropy on every block's answer (all), the last (last), every block's "
                  "weighted by its depth j (weighted: PABEE) or all but the last (all-but-last: DeeBERT stage 2)",
        "tau": "ponder penalty τ of the DACT loss",
        "tau_end": "phase 2, our option: τ rises linearly from --tau to --tau-end over the run (0: constant τ)",
        "freeze_backbone": "phase 2: train only the DACT modules, on cached [CLS] states",
        "cache": "file to keep cached [CLS] states in (frozen backbone), reused when it matches",
    }
    for field in reversed(fields(TrainConfig)):
        name = "--" + field.name.replace("_", "-")
        default = field.default
        if field.type is bool or isinstance(default, bool):
            opt = click.option(name, is_flag=True, default=default, help=helps.get(field.name))
        elif field.name in ("model", "train", "out"):
            opt = click.option(name, default=None, help=helps.get(field.name))
        else:
            kind = {int: int, float: float}.get(type(default), str)
            opt = click.option(name, type=kind, default=default, show_default=True, help=helps.get(field.name))
        f = opt(f)
    return f


@cli.command()
@_train_options
@click.option("--method", type=click.Choice(METHODS), default=None,
              help="train a method's step; sets --phase/--layers/--freeze-backbone as listed above")
@click.option("--resume", is_flag=True, help="continue the run in --out from its state.pt, with its saved settings")
@DEVICE
@click.option("--quiet", is_flag=True)
def train(method, resume, device, quiet, **kw):
    """Fine-tune DACT-BERT (the two phases of DACT.md section 4), or a baseline's classifiers.

    \b
    --method sets these options (giving one of them with another value is an error):
      dact    --phase 1   phase 1 (--layers all or last): backbone + per-block answers
      dact    --phase 2   phase 2: the DACT loss (--freeze-backbone: heads only)
      static              --phase 1 --layers all: a classifier per block, trained jointly
      deebert --phase 1   stage 1 = --phase 1 --layers last: backbone + last classifier
      deebert --phase 2   stage 2 = --phase 1 --layers all-but-last --freeze-backbone:
                          the other classifiers on the frozen backbone (start from stage 1)
      pabee               --phase 1 --layers weighted: jointly, loss Σ_j j·L_j / Σ_j j
    Evaluate with tinydact eval --method M --knob X."""
    from .train import TrainConfig, train as run

    if kw["out"] is None:
        raise TinydactError("--out is required")
    if not resume and (kw["model"] is None or kw["train"] is None):
        raise TinydactError("--model and --train are required (or --resume --out DIR)")
    if method is not None:
        kw.update(method_settings(method, kw))
    cfg = TrainConfig(**{k: v for k, v in kw.items()})
    best = run(cfg, resolve_device(device), resume=resume, quiet=quiet)
    click.echo(json.dumps({"best": best, "out": kw["out"]}))


def method_settings(method: str, kw: dict) -> dict:
    """The TrainConfig fields `--method` sets (baselines.training_settings); an option the
    user gave on the command line with another value is an error, not silently replaced."""
    from click.core import ParameterSource

    from .baselines import training_settings

    ctx = click.get_current_context()
    given = lambda name: ctx.get_parameter_source(name) == ParameterSource.COMMANDLINE  # noqa: E731
    settings = training_settings(method, kw["phase"] if given("phase") or method == "dact" else None)
    for name, value in settings.items():
        if name != "phase" and given(name) and kw[name] != value:
            flag = "--" + name.replace("_", "-")
            raise TinydactError(f"--method {method} sets {flag} {value}; it cannot be combined with {flag} {kw[name]}")
    if method == "dact":
        settings.pop("phase")  # dact's steps are the phases themselves
    return settings


@cli.command("eval")
@click.option("--model", "model_dir", required=True, help="a tinydact checkpoint directory")
@click.option("--data", required=True, help="labelled TSV")
@click.option("--task", default=None, help="data format (default: detected)")
@click.option("--batch-size", default=64, show_default=True)
@click.option("--max-length", default=128, show_default=True)
@click.option("--no-halt", is_flag=True, help="run every block (full depth)")
@click.option("--rule", type=click.Choice(["paper", "tight"]), default="paper", show_default=True)
@click.option("--method", type=click.Choice(METHODS), default="dact", show_default=True,
              help="exit rule: DACT's halting test, or a baseline's on the same per-block answers")
@click.option("--knob", type=float, default=None,
              help="the baseline's exit knob: static k (exit at block k), deebert S (exit when the "
                   "answer's entropy < S), pabee t (exit when t blocks in a row agree)")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object")
@DEVICE
def eval_(model_dir, data, task, batch_size, max_length, no_halt, rule, method, knob, as_json, device):
    """Accuracy, blocks executed, estimated FLOPs and wall-clock on a labelled file."""
    from .data import read_examples
    from .evaluate import evaluate
    from .model import load_checkpoint
    from .tokenizer import Tokenizer

    dev = resolve_device(device)
    model, meta = load_checkpoint(model_dir)
    examples, task, _ = read_examples(data, task or meta.get("task"), meta["labels"])
    r = evaluate(model.to(dev), examples, Tokenizer.from_pretrained(model_dir), batch_size, max_length,
                 halt=not no_halt, rule=rule, device=dev, method=method, knob=knob)
    r.pop("predictions"), r.pop("layers")
    r.update(task=task, device=dev.type)
    if as_json:
        click.echo(json.dumps(r))
        return
    how = "full depth" if no_halt else f"halting ({rule} rule)" if method == "dact" else f"{method} exit, knob {r['knob']:g}"
    click.echo(f"{r['examples']} examples, {task}, {how}, {dev.type}")
    click.echo(f"accuracy      {r['accuracy']:.4f}" + (f"   Matthews corr. {r['matthews']:.4f}" if "matthews" in r else ""))
    click.echo(f"blocks        {r['avg_layers']:.2f} of {r['num_layers']} on average")
    click.echo("histogram     " + "  ".join(f"{n + 1}:{c}" for n, c in enumerate(r["histogram"])))
    click.echo(f"FLOPs         {r['gflops_per_example']:.3f} G per example ({r['flops_ratio']:.2f} of full depth)")
    click.echo(f"wall-clock    {r['seconds']:.2f} s at batch size {batch_size}")



# ----------------------------------------------------------------------------------------
# classify: label texts with a trained model, and show the halting test at work
# ----------------------------------------------------------------------------------------


def default_model_places() -> list:
    """Where the bundled model may be: `tinydact/weights/` inside an installed package
    (`pip install .` copies the repository's top-level weights/ there, see pyproject.toml),
    then `weights/` beside the package folder (a checkout, or `pip install -e .`)."""
    from importlib.resources import files

    return [Path(str(files("tinydact") / "weights")), Path(__file__).resolve().parent.parent / "weights"]


def default_model_dir() -> Path:
    places = default_model_places()
    for place in places:
        if (place / "model.safetensors").is_file():
            return place
    raise TinydactError(
        f"no default model: weights/model.safetensors is not in this installation (looked in "
        f"{' and '.join(str(p) for p in dict.fromkeys(places))}); pass --model DIR with a tinydact checkpoint"
    )


def load_model_dir(path):
    """(model, meta, tokenizer) from a tinydact checkpoint directory, or a one-line error."""
    from .model import load_checkpoint
    from .tokenizer import Tokenizer

    path = Path(path)
    if not path.is_dir():
        raise TinydactError(f"model directory not found: {path}")
    missing = [f for f in ("config.json", "model.safetensors", "vocab.txt") if not (path / f).is_file()]
    if missing:
        raise TinydactError(f"{path} is not a complete tinydact checkpoint: it has no {', '.join(missing)}")
    try:
        model, meta = load_checkpoint(path)
        tokenizer = Tokenizer.from_pretrained(path)
    except (TypeError, ValueError, KeyError, RuntimeError) as e:  # e.g. a config value of the wrong type
        raise TinydactError(f"{path}: cannot load the checkpoint ({type(e).__name__}: {e})".replace("\n", " ")) from None
    return model, meta, tokenizer


def classify_inputs(texts, pair):
    """[(where, text_a, text_b or None)] from the TEXT arguments and --pair, or from standard
    input for `-`: one text per line, a TAB between the two sentences of a pair; blank lines
    are skipped."""
    if list(texts) == ["-"]:
        if pair is not None:
            raise TinydactError("--pair goes with one TEXT argument; on standard input, a TAB separates the two sentences")
        inputs = []
        for lineno, line in enumerate(sys.stdin.read().splitlines(), start=1):
            if not line.strip():
                continue
            a, tab, b = line.partition("\t")
            if "\t" in b:
                raise TinydactError(f"line {lineno} of standard input has more than one TAB (expected TEXT<TAB>PAIR)")
            if not a.strip() or (tab and not b.strip()):
                raise TinydactError(f"line {lineno} of standard input has an empty sentence around its TAB")
            inputs.append((f"line {lineno}", a.strip(), b.strip() if tab else None))
        if not inputs:
            raise TinydactError("no text on standard input (one text per line)")
        return inputs
    if not texts:
        raise TinydactError("no text given: pass TEXT..., or - to read one text per line from standard input")
    if "-" in texts:
        raise TinydactError("'-' (read standard input) must be the only TEXT")
    if pair is not None and len(texts) != 1:
        raise TinydactError(f"--pair goes with exactly one TEXT, got {len(texts)}")
    if pair is not None and not pair.strip():
        raise TinydactError("--pair is empty")
    for i, text in enumerate(texts, start=1):
        if not text.strip():
            raise TinydactError(f"text {i} is empty")
    return [(f"text {i}", text.strip(), None if pair is None else pair.strip()) for i, text in enumerate(texts, start=1)]


def halting_bounds(a_n, p_n, remaining: int, rule: str = "paper"):
    """The two sides of `dact.can_halt`'s test, to show it: (the lowest a_N[c*] can fall to,
    the highest a_N[c'] can rise to), each (B,), for a_n (B, K) and p_n (B,). `can_halt`
    decides (it also stops every example at the last step, and compares the tight rule in an
    equivalent rearranged form); these are for display."""
    top2 = torch.topk(a_n, 2, dim=-1).values  # (B, 2): a_n[c*], a_n[c']
    shrink = (1 - p_n) ** remaining  # (1 − p_n)^d
    lower = top2[:, 0] * shrink  # a_n[c*] · (1 − p_n)^d
    if rule == "paper":
        return lower, top2[:, 1] + p_n * remaining  # a_n[c'] + p_n · d
    return lower, 1 - (1 - top2[:, 1]) * shrink  # 1 − (1 − a_n[c']) · (1 − p_n)^d


def explain_steps(trace, B: int, N: int, rule: str, halt: bool) -> list:
    """`predict`'s trace holds, for every block, the rows still running (in input order).
    Put it back per example: a list of B lists of one dict per block that example ran."""
    from .dact import can_halt

    steps = [[] for _ in range(B)]
    live = list(range(B))  # input row of each row of this block's tensors
    for t in trace:
        n, d = t["n"], N - t["n"]
        lower, upper = halting_bounds(t["a_n"], t["p_n"], d, rule)
        # what the test says; without --no-halt this is exactly what stopped the example
        test = t["halt"] if halt else can_halt(t["a_n"], t["p_n"], d, rule)
        for j, i in enumerate(live):
            steps[i].append(dict(n=n, d=d, y_n=t["y_n"][j].tolist(), h_n=t["h_n"][j].item(), p_n=t["p_n"][j].item(),
                                 a_n=t["a_n"][j].tolist(), top_lower_bound=lower[j].item(),
                                 runner_up_upper_bound=upper[j].item(), passes_test=bool(test[j]),
                                 stop=bool(t["halt"][j]) or n == N))
        live = [i for i, done in zip(live, t["halt"].tolist()) if not done]
    return steps


def _num(x: float) -> str:
    return f"{x:.4f}" if x == 0 or 1e-3 <= abs(x) < 1e4 else f"{x:.2e}"


def explain_legend(labels, N: int, rule: str, halt: bool) -> str:
    upper = "a_n[c'] + p_n·d" if rule == "paper" else "1 − (1 − a_n[c'])·(1 − p_n)^d"
    return (
        f"After block n the DACT module gives y_n, the block's own answer over ({', '.join(labels)}),\n"
        "and h_n, its halting value; p_n = h_n·p_{n-1} and a_n = p_{n-1}·y_n + (1 − p_{n-1})·a_{n-1}\n"
        f"(p_0 = 1, a_0 = 0). With d = N − n blocks left (N = {N}), whatever they output, the top class\n"
        f"c* of a_n can fall at most to a_n[c*]·(1 − p_n)^d and the runner-up c' can rise at most to\n"
        f"{upper} ({rule} rule): when the first is larger, the answer can no longer change\n"
        "and the example stops" + (" (here --no-halt runs every block anyway)." if not halt else ".")
    )


def explain_table(steps, rule: str, halt: bool) -> list:
    upper = "a_n[c']+p_n·d" if rule == "paper" else "1−(1−a_n[c'])(1−p_n)^d"
    rows = [["n", "y_n", "h_n", "p_n", "a_n", "a_n[c*]·(1−p_n)^d", "", upper, "d", "decision"]]
    for s in steps:
        if s["d"] == 0:
            verdict = "last block: stop"
        elif s["passes_test"]:
            verdict = "stop" if halt else "would stop (--no-halt: go on)"
        else:
            verdict = "go on"
        lower, upper = s["top_lower_bound"], s["runner_up_upper_bound"]
        rows.append([str(s["n"]), " ".join(f"{v:.4f}" for v in s["y_n"]), _num(s["h_n"]), _num(s["p_n"]),
                     " ".join(f"{v:.4f}" for v in s["a_n"]), _num(lower), ">" if lower > upper else "≤", _num(upper),
                     str(s["d"]), verdict])
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    return ["    " + "  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in rows]


@cli.command()
@click.argument("texts", nargs=-1, metavar="TEXT...")
@click.option("--model", "model_dir", default=None, metavar="DIR", help="tinydact checkpoint directory (default: the bundled weights/)")
@click.option("--pair", default=None, metavar="TEXT_B", help="second sentence of a pair (with exactly one TEXT)")
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True)
@click.option("--no-halt", is_flag=True, help="run every block (full depth)")
@click.option("--rule", type=click.Choice(["paper", "tight"]), default="paper", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="one JSON object per line")
@click.option("--explain", is_flag=True, help="show y_n, h_n, p_n, a_n and the halting test after every block run")
@DEVICE
def classify(texts, model_dir, pair, batch_size, no_halt, rule, as_json, explain, device):
    """Label each TEXT, stopping early where the answer can no longer change.

    TEXT `-` reads one text per line from standard input (a TAB between the two sentences
    of a pair). Prints the label, its probability in a_n at the exit, and the blocks run."""
    from .data import FORMATS

    inputs = classify_inputs(texts, pair)
    dev = resolve_device(device)
    model, meta, tokenizer = load_model_dir(model_dir if model_dir is not None else default_model_dir())
    model.to(dev)
    labels, N, task = meta["labels"], model.num_layers, meta.get("task")
    max_length = min(tokenizer.max_length, model.bert.config.max_position_embeddings)
    pair_task = FORMATS[task].text_b is not None if task in FORMATS else None
    has_pairs = any(b is not None for _, _, b in inputs)
    if pair_task is False and has_pairs:
        click.echo(f"warning: this model was trained on single sentences (task {task}); "
                   "the second sentence is read as BERT's segment B anyway", err=True)
    if pair_task and not all(b is not None for _, _, b in inputs):
        click.echo(f"warning: this model was trained on sentence pairs (task {task}); "
                   "give the second sentence with --pair or after a TAB", err=True)
    if explain and not as_json:
        click.echo(explain_legend(labels, N, rule, not no_halt) + "\n")

    width = max(len(label) for label in labels)
    for batch in batches(inputs, batch_size):
        a = [x[1] for x in batch]
        b = [x[2] for x in batch] if batch[0][2] is not None else None
        for (where, _, _), n in zip(batch, tokenizer.num_tokens(a, b)):
            if n > max_length:
                click.echo(f"note: {where} has {n} tokens; truncated to the model's maximum of {max_length}", err=True)
        enc = tokenizer(a, b, max_length=max_length)
        trace = [] if explain else None
        pred, probs, layers = model.predict(*(t.to(dev) for t in enc), halt=not no_halt, rule=rule, trace=trace)
        steps = explain_steps(trace, len(batch), N, rule, not no_halt) if explain else None
        for j, (where, text_a, text_b) in enumerate(batch):
            k = int(pred[j])
            label, confidence, used = labels[k], probs[j, k].item(), int(layers[j])
            if as_json:
                out = {"text": text_a, **({"pair": text_b} if text_b is not None else {}), "label": label,
                       "confidence": confidence, "layers": used, "num_layers": N}
                if explain:
                    out["blocks"] = steps[j]
                click.echo(json.dumps(out, ensure_ascii=False))
                continue
            shown = text_a if text_b is None else f"{text_a}  [SEP]  {text_b}"
            click.echo(f"{label:<{width}}  {confidence:.2f}  blocks {used}/{N}  {shown}")
            if explain:
                click.echo("\n".join(explain_table(steps[j], rule, not no_halt)) + "\n")


def batches(inputs, size: int):
    """Consecutive runs of at most `size` inputs, each all pairs or all single texts (the
    tokenizer encodes a batch one way or the other), so results come out in input order."""
    batch = []
    for x in inputs:
        if batch and (len(batch) == size or (batch[-1][2] is None) != (x[2] is None)):
            yield batch
            batch = []
        batch.append(x)
    if batch:
        yield batch


# ----------------------------------------------------------------------------------------
# download: official BERT checkpoints and GLUE data
# ----------------------------------------------------------------------------------------


@cli.command()
@click.argument("name")
@click.argument("task", required=False)
@click.option("--to", required=True, metavar="DIR", help="folder to write into")
def download(name, task, to):
    """Fetch an official BERT checkpoint, or GLUE data.

    \b
    tinydact download bert-base-uncased --to models/bert-base-uncased
    tinydact download google/bert_uncased_L-4_H-256_A-4 --to models/bert-mini
    tinydact download glue SST-2 --to data/glue"""
    from .download import GLUE_TASKS, download_glue, download_model

    if name == "glue":
        if task is None:
            raise TinydactError(f"which GLUE task? tinydact download glue TASK --to DIR ({', '.join(GLUE_TASKS)})")
        for folder in download_glue(task, to, progress=sys.stderr.isatty()):  # no bars in logs
            click.echo(f"wrote {folder}")
        return
    if task is not None:
        raise TinydactError(f"unexpected argument {task!r}: a model is downloaded with tinydact download NAME --to DIR")
    r = download_model(name, to)
    cfg = r["config"]
    converted = ", pytorch_model.bin converted to model.safetensors" if r["weights"] == "pytorch_model.bin" else ""
    click.echo(f"wrote {r['path']}: {cfg.num_hidden_layers} blocks, hidden size {cfg.hidden_size}{converted}")


def main(argv=None):
    cli.main(args=argv, prog_name="tinydact")
