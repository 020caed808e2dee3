"""DACT-BERT checkpoints: a folder with config.json, model.safetensors, vocab.txt (and
tokenizer_config.json), as a Hugging Face BERT directory plus the DACT heads.

The backbone's tensors keep Hugging Face `BertModel` names, so the backbone also loads in
`transformers`; the DACT heads live under `dact_heads.` (`HEAD_PREFIX`); config.json's
`dact` section holds the labels, the task, how the model was trained and a fingerprint of the
vocabulary.

A checkpoint that loads must not answer wrongly, so loading checks what the files can tell:
every weight is a floating-point number (an int8 or bool tensor is refused, not cast); the
special tokens sit at the ids tokenizer_config.json records, and [PAD] at the config's
`pad_token_id`; vocab.txt's bytes have the sha256 `save_checkpoint` recorded (`dact.vocab_sha256`);
for a task of known format (data.FORMATS: SST-2's class 0 is `negative`) the labels are the
task's names in the task's order, and `tinydact eval` refuses data labelled with other names.
What cannot be checked: a checkpoint saved before fingerprints were recorded (such as the
shipped weights/, whose tokenizer_config.json also records no ids) has only its [PAD] id
checked, so a vocab.txt shifted below [PAD] but of the right length goes unnoticed; the order
of labels of an unknown task (`plain` files, e.g. TREC or AG News) is only what training saw,
though `eval` on such files maps labels by name; and weights that are finite floats but wrong
(another model's, or damaged) load as they are.
"""

import json
from pathlib import Path

import torch

from .bert import Bert, BertConfig, bert_state_for_hf, copy_exactly, load_bert_weights, read_checkpoint, read_config
from .dact import HALT_BIAS
from .data import FORMATS
from .errors import TinydactError
from .home import model_dir
from .model import DACTBert
from .runfolder import file_digest, replace_folder
from .options import check_dtype, check_head_input
from .tokenizer import Tokenizer

HEAD_PREFIX = "dact_heads."  # checkpoint keys of the DACT heads; the backbone keeps HF names


def save_checkpoint(model: DACTBert, tokenizer, path, labels, task: str, dtype=torch.float32, extra: dict | None = None):
    """Save a model directory. Backbone tensors keep Hugging Face `BertModel` names (so the
    backbone also loads in `transformers`); the DACT heads live under `dact_heads.`."""
    from safetensors.torch import save_file

    path = Path(path)
    tensors = dict(bert_state_for_hf(model.bert))
    tensors.update({HEAD_PREFIX + k: v for k, v in model.heads.state_dict().items()})
    # copies: a shared classifier is saved under every head's keys (safetensors refuses tensors
    # that share memory), so every reader of the file sees one classifier per block as before
    tensors = {k: v.detach().to("cpu", dtype, copy=True).contiguous() for k, v in tensors.items()}
    config = model.bert.config.to_dict()
    config["dact"] = {"num_labels": model.num_labels, "labels": list(labels), "task": task, **(extra or {})}
    if model.head_input != "cls":  # checkpoints without the key read the [CLS] state
        config["dact"]["head_input"] = model.head_input
    if model.shared_classifier:  # loading ties the copies again, so further training keeps them one
        config["dact"]["shared_classifier"] = True

    def write(folder: Path):
        folder.mkdir(parents=True)
        tokenizer.save(folder)
        config["dact"]["vocab_sha256"] = vocab_fingerprint(folder)
        save_file(tensors, str(folder / "model.safetensors"))
        (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n")

    replace_folder(path, write)


def read_dact_config(path) -> dict:
    """The `dact` section of a checkpoint's config.json ({} for a plain BERT directory)."""
    return read_config(path).get("dact", {})


def load_checkpoint(path, attention: str = "sdpa"):
    """Load a DACT-BERT directory written by `save_checkpoint`. Returns (model, meta) with meta
    the config's `dact` section. Every tensor is accounted for, as in the encoder loader."""
    path = model_dir(path)
    config = read_config(path)
    meta = config.get("dact", {})
    if not meta:
        raise TinydactError(f"{path} is a plain BERT checkpoint, not a DACT-BERT one (no 'dact' section in config.json)")
    labels = check_labels(meta, path / "config.json")
    try:
        head_input = check_head_input(meta.get("head_input", "cls"))  # checkpoints without the key read [CLS]
    except TinydactError as e:
        raise TinydactError(f"{path / 'config.json'}: {e}") from None
    shared = meta.get("shared_classifier", False)
    if not isinstance(shared, bool):
        raise TinydactError(f"{path / 'config.json'}: the 'dact' section's shared_classifier must be true or false")
    model = DACTBert(Bert(BertConfig.from_dict(config), attention), len(labels), head_input=head_input, shared_classifier=shared)
    tensors = read_checkpoint(path)
    source = str(path / "model.safetensors")
    broken = next((k for k, v in tensors.items() if v.is_floating_point() and not torch.isfinite(v).all()), None)
    if broken is not None:
        raise TinydactError(f"{source}: tensor {broken!r} holds values that are not finite numbers (a diverged training?)")
    heads = {k[len(HEAD_PREFIX) :]: v for k, v in tensors.items() if k.startswith(HEAD_PREFIX)}
    load_bert_weights(model.bert, {k: v for k, v in tensors.items() if not k.startswith(HEAD_PREFIX)}, source)
    copy_exactly(model.heads, heads, source, shown=lambda name: HEAD_PREFIX + name)
    if shared:  # every key was copied into the one classifier: the copies must have been equal
        check_shared(heads, source)
    return model.eval(), meta


def check_shared(heads: dict, source: str) -> None:
    """The copies of a shared classifier (`<n>.answer.*` of every head n) must be equal: tied
    again, only one of them would be kept."""
    for key, tensor in heads.items():
        _, name = key.split(".", 1)  # "3.answer.weight": head 3's
        if name.startswith("answer.") and not torch.equal(tensor, heads[f"0.{name}"]):
            raise TinydactError(f"{source}: config.json says the heads share one classifier, but {HEAD_PREFIX + key!r} "
                                "differs from the first head's")


def check_labels(meta, config_file: Path) -> list:
    """The label names of a checkpoint's `dact` section: distinct, as many as `num_labels`, and
    for a task of known format (data.FORMATS) the task's names in its order, since the file
    says 0 and 1 and only the order gives them meaning (swapped names flip every answer)."""
    labels = meta.get("labels") if isinstance(meta, dict) else None
    if (not isinstance(labels, list) or len(labels) != meta.get("num_labels") or len(labels) < 2
            or not all(isinstance(x, str) and x for x in labels) or len(set(labels)) != len(labels)):
        raise TinydactError(f"{config_file}: the 'dact' section needs num_labels >= 2 and as many distinct label names")
    task = meta.get("task")
    if not isinstance(task, (str, type(None))):
        raise TinydactError(f"{config_file}: the 'dact' section's task must be a string")
    names = FORMATS[task].names if task in FORMATS else None
    if names is not None and labels != list(names):
        raise TinydactError(f"{config_file}: task {task}'s labels are {list(names)} in this order (class 0 first), "
                            f"the 'dact' section says {labels}")
    return labels


def checked_tokenizer(path, model: DACTBert, fingerprint) -> Tokenizer:
    """The tokenizer of the checkpoint (or plain BERT) at `path`, checked against `model`: as
    many tokens as its embedding, [PAD] at its pad_token_id, and for a checkpoint that records
    one (`dact.vocab_sha256`), the vocab.txt it was saved with."""
    tokenizer = Tokenizer.from_pretrained(path)
    tokenizer.check_fits(model.bert.config.vocab_size, model.bert.config.pad_token_id, str(path))
    check_vocab(model_dir(path), fingerprint)
    return tokenizer


def vocab_fingerprint(folder: Path) -> str:
    """The sha256 of vocab.txt's bytes (what `sha256sum vocab.txt` prints)."""
    return file_digest(folder / "vocab.txt")


def check_vocab(path: Path, fingerprint) -> None:
    """vocab.txt must be the file the model was saved with: a line added, removed or changed
    keeps its length but shifts token ids. No fingerprint (an older checkpoint): not checked."""
    if fingerprint is None:
        return
    if not isinstance(fingerprint, str) or len(fingerprint) != 64:
        raise TinydactError(f"{path / 'config.json'}: the 'dact' section's vocab_sha256 must be a sha256 in hex")
    if not (path / "vocab.txt").is_file():
        raise TinydactError(f"{path} has no vocab.txt")
    if vocab_fingerprint(path) != fingerprint:
        raise TinydactError(f"{path / 'vocab.txt'} is not the vocabulary this model was saved with (its sha256 differs "
                            "from config.json's dact.vocab_sha256): token ids would not match; restore the original file")


def backbone_dtype(name: str, device: torch.device) -> torch.dtype:
    """The dtype the backbone computes in at inference, by name (options.DTYPES): float32,
    bfloat16 (fast where the CPU has AVX512-BF16 or AMX, and on GPUs), or float16 (CUDA only)."""
    check_dtype(name)
    if name == "float16" and device.type != "cuda":
        raise TinydactError("float16 runs on CUDA only; on a CPU use bfloat16 (or float32)")
    return getattr(torch, name)  # torch.float32, torch.bfloat16, torch.float16


def new_from_bert(path, num_labels: int, halt_bias: float = HALT_BIAS, attention: str = "sdpa", head_input: str = "cls",
                  shared_classifier: bool = False) -> DACTBert:
    """A DACT-BERT whose backbone is a pretrained BERT directory and whose heads are new."""
    return DACTBert(Bert.from_pretrained(path, attention), num_labels, halt_bias, head_input, shared_classifier)
