"""tinydact: a minimal, from-scratch, educational implementation of DACT-BERT.

    import tinydact
    clf = tinydact.load()                     # the model shipped in weights/ (or load(DIR))
    clf(["a gripping, beautiful film"])       # label, confidence, probs, blocks run

The method: docs/dact.md. The pieces: bert.py (the encoder), dact.py (the DACT math),
model.py (DACT-BERT, early exit), train.py, evaluate.py, baselines.py, api.py, cli.py.
"""

__version__ = "0.1.0"

__all__ = ["Classifier", "load"]


def __getattr__(name):
    """`tinydact.load` and `tinydact.Classifier`, imported on first use: importing the package
    (as the command line does for `--help`) does not import torch."""
    if name in __all__:
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'tinydact' has no attribute {name!r}")
