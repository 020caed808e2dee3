"""tinydact: a minimal, from-scratch, educational implementation of DACT-BERT."""

__version__ = "0.1.0"
