"""The names the whole project agrees on, each listed once, and the one check of each.

Halting rules, what the DACT heads read, dtypes, methods: the library, the command line and
the benchmarks all take their choices from here. No torch in this file: `tinydact --help`
builds its options from it without importing torch (seconds saved on every help call).
"""

from .errors import TinydactError

RULES = ("paper", "tight")  # the halting rules (docs/dact.md §3): the paper's bound, or the tight one

# What each DACT head reads after its block (our choices): the [CLS] state (the default), the
# same through a LayerNorm of the head's own, or the mean of the block's token states.
HEAD_INPUTS = ("cls", "cls-norm", "mean")

# Compute dtypes by name. float16 runs on CUDA only; training takes float32 or bfloat16 (autocast).
DTYPES = ("float32", "bfloat16", "float16")
TRAIN_DTYPES = ("float32", "bfloat16")

# The early-exit methods: DACT and the baselines of docs/dact.md §6 (baselines.py).
METHODS = ("dact", "static", "deebert", "pabee")


def check_choice(value, choices: tuple, what: str):
    """`value` if it is one of `choices`, else a `TinydactError` naming `what` and the choices."""
    if value not in choices:
        raise TinydactError(f"{what} must be one of {', '.join(choices)}, got {value!r}")
    return value


def check_rule(rule):
    return check_choice(rule, RULES, "the halting rule")


def check_head_input(head_input):
    return check_choice(head_input, HEAD_INPUTS, "the head input")


def check_dtype(name, choices: tuple = DTYPES):
    return check_choice(name, choices, "the dtype")


def check_method(method):
    return check_choice(method, METHODS, "the method")
