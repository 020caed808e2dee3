"""Fetching what the rest of tinydact reads: official BERT checkpoints and GLUE data.

This is the only module that touches the network; model code never downloads anything.

    download_model(name, to)   an official BERT (or MPNet, e.g. sentence-transformers/
                               all-mpnet-base-v2) from the Hugging Face Hub (`huggingface_hub`,
                               the optional `download` extra): config.json, vocab.txt,
                               tokenizer_config.json and special_tokens_map.json when the
                               repository has them, and the
                               weights as model.safetensors. A repository that only has the
                               older pytorch_model.bin gets it converted (read with
                               torch.load(weights_only=True), which runs no pickled code).
                               Then the folder must load with `Bert.from_pretrained`.
    download_glue(task, to)    a GLUE task's TSV files, from the archives the GLUE download
                               script used, unzipped into `to` (`to/SST-2/train.tsv`, ...).

Offline, both fail within seconds with one line saying the network could not be reached:
the Hub client would otherwise retry for about half a minute, so a plain TCP connection to
the host is tried first, with a short timeout.
"""

import http.client
import os
import shutil
import socket
import urllib.error
import urllib.request
import zipfile
from pathlib import Path
from urllib.parse import urlparse

from .errors import TinydactError

TIMEOUT = 10.0  # seconds, for connecting and for each read: offline must fail fast

# ----------------------------------------------------------------------------------------
# Official BERT checkpoints (Hugging Face Hub)
# ----------------------------------------------------------------------------------------

REQUIRED_FILES = ("config.json", "vocab.txt")
# absent in e.g. google/bert_uncased_L-4_H-256_A-4; MPNet's name its special tokens (<s> </s> <pad> ...)
OPTIONAL_FILES = ("tokenizer_config.json", "special_tokens_map.json")
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")  # the first one the repository has


def check_reachable(url: str, timeout: float = TIMEOUT) -> None:
    """Open (and close) a TCP connection to `url`'s host, or raise the one-line offline error."""
    parts = urlparse(url)
    host, port = parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as e:  # DNS failure, refused, unreachable, timed out
        raise offline_error(host, e) from None


def offline_error(host: str, reason) -> TinydactError:
    reason = str(getattr(reason, "reason", None) or reason or type(reason).__name__)
    return TinydactError(f"could not reach {host}: the network is unreachable or offline ({reason})".replace("\n", " "))


def _hub():
    """The `huggingface_hub` module, its errors and constants, or a clear error without it."""
    # read by huggingface_hub when it is imported: no long waits for a server that never answers
    os.environ.setdefault("HF_HUB_ETAG_TIMEOUT", str(int(TIMEOUT)))
    os.environ.setdefault("HF_HUB_DOWNLOAD_TIMEOUT", str(int(TIMEOUT)))
    try:
        import huggingface_hub
        from huggingface_hub import constants, errors
    except ImportError:
        raise TinydactError(
            "downloading models needs the huggingface_hub package: pip install 'tinydact[download]'"
        ) from None
    return huggingface_hub, errors, constants


def _fetch(hub, errors, host: str, name: str, filename: str, to: Path) -> Path | None:
    """One file of the repository `name` into `to`; None when the repository has no such file."""
    try:
        return Path(hub.hf_hub_download(name, filename, local_dir=to))
    except errors.LocalEntryNotFoundError as e:  # the Hub could not be reached, nothing cached
        raise offline_error(host, e) from None
    except errors.RepositoryNotFoundError:  # also a gated or private repository
        raise TinydactError(f"no model {name!r} on the Hugging Face Hub (or it is private or gated)") from None
    except errors.EntryNotFoundError:  # a LocalEntryNotFoundError is one too: caught above
        return None
    except errors.HfHubHTTPError as e:
        raise TinydactError(f"the Hugging Face Hub refused {name}/{filename}: {e}".replace("\n", " ")) from None
    except OSError as e:  # e.g. the connection broke during the transfer, or the disk is full
        raise TinydactError(f"downloading {name}/{filename} failed: {e}".replace("\n", " ")) from None


def download_model(name: str, to) -> dict:
    """Download the official BERT `name` (e.g. "bert-base-uncased") into the folder `to` and
    check that it loads. Returns {"path", "weights" (the file fetched), "config"}."""
    from safetensors.torch import save_file

    from .bert import Bert, read_checkpoint
    from .runfolder import atomic_write

    hub, errors, constants = _hub()
    endpoint = constants.ENDPOINT  # https://huggingface.co unless HF_ENDPOINT says otherwise
    host = urlparse(endpoint).hostname
    to = Path(to)
    to.mkdir(parents=True, exist_ok=True)
    if not constants.HF_HUB_OFFLINE:  # with HF_HUB_OFFLINE=1 only files already in `to` are used
        check_reachable(endpoint)
    for filename in REQUIRED_FILES:
        if _fetch(hub, errors, host, name, filename, to) is None:
            raise TinydactError(f"{name} has no {filename}: not a BERT checkpoint in the Hugging Face layout")
    for filename in OPTIONAL_FILES:
        _fetch(hub, errors, host, name, filename, to)
    weights = next((f for f in WEIGHT_FILES if _fetch(hub, errors, host, name, f, to) is not None), None)
    if weights is None:
        raise TinydactError(f"{name} has neither {' nor '.join(WEIGHT_FILES)}")
    if weights == "pytorch_model.bin":
        (to / "model.safetensors").unlink(missing_ok=True)  # a stale one would be read instead
        # read_checkpoint loads it with torch.load(weights_only=True); clone, so that tensors
        # sharing storage (tied embeddings) become separate, which safetensors requires
        tensors = {k: v.detach().clone().contiguous() for k, v in read_checkpoint(to).items()}
        atomic_write(to / "model.safetensors", lambda p: save_file(tensors, str(p)))
        (to / "pytorch_model.bin").unlink()
    try:
        model = Bert.from_pretrained(to)
    except TinydactError as e:
        raise TinydactError(f"{name} was downloaded to {to} but does not load as a BERT encoder: {e}") from None
    return {"path": str(to), "weights": weights, "config": model.config}


# ----------------------------------------------------------------------------------------
# GLUE data
# ----------------------------------------------------------------------------------------

GLUE_URL = "https://dl.fbaipublicfiles.com/glue/data/"
# task -> the archive the GLUE download script fetched (it unzips into the folder named after the colon)
GLUE_ARCHIVES = {
    "cola": "CoLA.zip",  # CoLA/
    "sst2": "SST-2.zip",  # SST-2/
    "qqp": "QQP-clean.zip",  # QQP/
    "stsb": "STS-B.zip",  # STS-B/
    "mnli": "MNLI.zip",  # MNLI/
    "qnli": "QNLIv2.zip",  # QNLI/
    "rte": "RTE.zip",  # RTE/
    "wnli": "WNLI.zip",  # WNLI/
}
# MRPC is not redistributed as an archive: the script built it from the SentEval copy of the
# corpus and the list of pairs GLUE holds out as its dev set.
MRPC_FILES = {
    "train": "https://dl.fbaipublicfiles.com/senteval/senteval_data/msr_paraphrase_train.txt",
    "test": "https://dl.fbaipublicfiles.com/senteval/senteval_data/msr_paraphrase_test.txt",
    "dev_ids": GLUE_URL + "mrpc_dev_ids.tsv",
}
GLUE_TASKS = tuple(sorted([*GLUE_ARCHIVES, "mrpc"]))


def glue_task(name: str) -> str:
    """"SST-2", "sst2", "STS-B", "MNLI" ... -> the key used here ("sst2", "stsb", "mnli")."""
    task = name.lower().replace("-", "").replace("_", "")
    if task not in GLUE_TASKS:
        raise TinydactError(f"unknown GLUE task {name!r}; known: {', '.join(GLUE_TASKS)}")
    return task


def fetch_url(url: str, dest: Path, progress: bool = False) -> Path:
    """Stream `url` into the file `dest` (through a temporary file beside it)."""
    host = urlparse(url).hostname
    part = dest.with_name(f".{dest.name}.part")
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT) as response, open(part, "wb") as f:
            total = int(response.headers.get("Content-Length") or 0) or None
            bar = None
            if progress:
                from tqdm import tqdm

                bar = tqdm(total=total, unit="B", unit_scale=True, desc=dest.name)
            while chunk := response.read(1 << 20):
                f.write(chunk)
                if bar is not None:
                    bar.update(len(chunk))
            if bar is not None:
                bar.close()
    except urllib.error.HTTPError as e:  # the server answered, with an error
        part.unlink(missing_ok=True)
        raise TinydactError(f"{url}: the server answered {e.code} {e.reason}") from None
    except (urllib.error.URLError, TimeoutError, ConnectionError, http.client.HTTPException) as e:
        # no DNS, no route, refused, timed out, cut off mid-transfer
        part.unlink(missing_ok=True)
        raise offline_error(host, e) from None
    except OSError as e:  # writing: no permission, disk full
        part.unlink(missing_ok=True)
        raise TinydactError(f"cannot write {dest}: {e.strerror or e}") from None
    os.replace(part, dest)
    return dest


def unzip(archive: Path, to: Path) -> list:
    """Extract `archive` into `to`; returns the top-level names it holds (e.g. ["SST-2"])."""
    try:
        with zipfile.ZipFile(archive) as z:
            names = [n for n in z.namelist() if not n.startswith("__MACOSX/")]
            for n in names:  # zipfile also neutralises these; refuse them outright
                if n.startswith("/") or ".." in Path(n).parts:
                    raise TinydactError(f"{archive}: refusing the unsafe member name {n!r}")
            z.extractall(to, members=names)
    except zipfile.BadZipFile as e:
        raise TinydactError(f"{archive}: not a valid zip archive ({e})") from None
    return sorted({Path(n).parts[0] for n in names})


def build_mrpc(train: Path, test: Path, dev_ids: Path, out: Path) -> None:
    """GLUE's MRPC split: the pairs listed in dev_ids (#1 ID <TAB> #2 ID) move from the
    corpus's training file to dev.tsv; test.tsv gets an index column instead of the label."""
    out.mkdir(parents=True, exist_ok=True)

    def ids(cells):  # (#1 ID, #2 ID)
        return tuple(c.strip() for c in cells)

    held_out = {ids(line.split("\t")[:2]) for line in dev_ids.read_text(encoding="utf-8-sig").splitlines() if line.strip()}
    lines = train.read_text(encoding="utf-8-sig").splitlines()
    header, rows = lines[0], [line for line in lines[1:] if line.strip()]  # Quality #1 ID #2 ID #1 String #2 String
    dev = [r for r in rows if ids(r.split("\t")[1:3]) in held_out]
    kept = [r for r in rows if ids(r.split("\t")[1:3]) not in held_out]
    (out / "train.tsv").write_text("\n".join([header, *kept]) + "\n", encoding="utf-8")
    (out / "dev.tsv").write_text("\n".join([header, *dev]) + "\n", encoding="utf-8")
    test_rows = [r.split("\t") for r in test.read_text(encoding="utf-8-sig").splitlines()[1:] if r.strip()]
    test_lines = ["index\t#1 ID\t#2 ID\t#1 String\t#2 String"]  # the label column gives way to an index
    test_lines += ["\t".join([str(i), *r[1:]]) for i, r in enumerate(test_rows)]
    (out / "test.tsv").write_text("\n".join(test_lines) + "\n", encoding="utf-8")


def download_glue(task: str, to, progress: bool = False) -> list:
    """Download a GLUE task's TSVs into the folder `to`. Returns the folders written."""
    task = glue_task(task)
    to = Path(to)
    to.mkdir(parents=True, exist_ok=True)
    if task == "mrpc":
        tmp = to / ".mrpc-download"
        tmp.mkdir(exist_ok=True)
        try:
            files = {k: fetch_url(url, tmp / Path(urlparse(url).path).name, progress) for k, url in MRPC_FILES.items()}
            build_mrpc(files["train"], files["test"], files["dev_ids"], to / "MRPC")
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return [to / "MRPC"]
    archive = fetch_url(GLUE_URL + GLUE_ARCHIVES[task], to / GLUE_ARCHIVES[task], progress)
    try:
        folders = unzip(archive, to)
    finally:
        archive.unlink(missing_ok=True)
    return [to / f for f in folders]
