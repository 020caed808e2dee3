"""`tinydact download`: official BERT checkpoints from the Hugging Face Hub and GLUE data.

No test here needs the network: the network layer is replaced at its boundary
(`huggingface_hub.hf_hub_download`, `urllib.request.urlopen`) by functions that copy files
made in tmp_path. The offline behaviour is checked for real, on a machine that cannot reach
the hosts: it must fail within seconds, with one line (skipped where the network is up)."""

import io
import json
import shutil
import socket
import sys
import threading
import time
import urllib.error
import urllib.request
import zipfile
from types import SimpleNamespace

import huggingface_hub
import pytest
import torch
from conftest import TINY_BERT, assert_error, invoke
from huggingface_hub.errors import EntryNotFoundError, RepositoryNotFoundError
from safetensors.torch import save_file

from tinydact import download as dl
from tinydact.bert import Bert, BertConfig, bert_state_for_hf
from tinydact.data import read_examples
from tinydact.errors import TinydactError

TINY = {**TINY_BERT, "vocab_size": 30}  # the 30 tokens of VOCAB
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(25)]


# ----------------------------------------------------------------------------------------
# Models: a fake Hub serving tiny random BERTs from tmp_path
# ----------------------------------------------------------------------------------------


def hf_repo(path, weights="safetensors", tokenizer_config=True):
    """A tiny random BERT in the Hugging Face layout, as a Hub repository holds it. Returns
    the model's tensors (under `bert.` names, as Google's pre-training checkpoints have)."""
    torch.manual_seed(0)
    model = Bert(BertConfig.from_dict(TINY))
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps(model.config.to_dict()))
    (path / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    if tokenizer_config:
        (path / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": True}))
    tensors = {"bert." + k: v.clone() for k, v in bert_state_for_hf(model).items()}
    if weights == "safetensors":
        save_file(tensors, path / "model.safetensors")
    else:  # the older format, with a tied output embedding sharing storage with the input one
        tensors["cls.predictions.decoder.weight"] = tensors["bert.embeddings.word_embeddings.weight"]
        torch.save(tensors, path / "pytorch_model.bin")
    return tensors


def hub_error(cls, message):
    """An instance of a huggingface_hub error class without an HTTP response behind it."""
    e = cls.__new__(cls)
    Exception.__init__(e, message)
    return e


@pytest.fixture
def fake_hub(tmp_path, monkeypatch):
    """`hf_hub_download` serving the folders of tmp_path/hub/<owner>/<name>; the reachability
    probe always succeeds. Returns .root (the hub folder) and .calls (repo, file) requested."""
    root = tmp_path / "hub"
    calls = []

    def hf_hub_download(repo_id, filename, *, local_dir, **kw):
        calls.append((repo_id, filename))
        repo = root / repo_id
        if not repo.is_dir():
            raise hub_error(RepositoryNotFoundError, f"404 {repo_id}")
        if not (repo / filename).is_file():
            raise hub_error(EntryNotFoundError, f"404 {repo_id}/{filename}")
        dest = local_dir / filename
        shutil.copyfile(repo / filename, dest)
        return str(dest)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", hf_hub_download)
    monkeypatch.setattr(dl, "check_reachable", lambda url, timeout=None: None)
    return SimpleNamespace(root=root, calls=calls)


def test_model_with_safetensors(fake_hub, tmp_path):
    tensors = hf_repo(fake_hub.root / "bert-base-uncased")
    r = dl.download_model("bert-base-uncased", tmp_path / "out")
    assert r["weights"] == "model.safetensors"
    for name in ("config.json", "vocab.txt", "tokenizer_config.json", "model.safetensors"):
        assert (tmp_path / "out" / name).is_file()
    assert ("bert-base-uncased", "pytorch_model.bin") not in fake_hub.calls  # safetensors first
    model = Bert.from_pretrained(tmp_path / "out")
    assert torch.equal(model.embeddings.word.weight, tensors["bert.embeddings.word_embeddings.weight"])


def test_model_with_only_pytorch_bin_is_converted(fake_hub, tmp_path):
    tensors = hf_repo(fake_hub.root / "google" / "bert_uncased_L-2_H-32_A-4", weights="bin", tokenizer_config=False)
    code, out, err, exc = invoke("download", "google/bert_uncased_L-2_H-32_A-4", "--to", tmp_path / "out")
    assert code == 0, (out, err, exc)
    assert "converted to model.safetensors" in out and "2 blocks" in out
    out_dir = tmp_path / "out"
    assert (out_dir / "model.safetensors").is_file() and not (out_dir / "pytorch_model.bin").exists()
    assert not (out_dir / "tokenizer_config.json").exists()  # optional, and this repository has none
    model = Bert.from_pretrained(out_dir)
    assert torch.equal(model.blocks[1].mlp.fc.weight, tensors["bert.encoder.layer.1.intermediate.dense.weight"])


def test_unknown_model(fake_hub, tmp_path):
    assert_error(invoke("download", "nobody/nothing", "--to", tmp_path / "out"), "no model 'nobody/nothing'")


def test_repository_without_weights(fake_hub, tmp_path):
    hf_repo(fake_hub.root / "bert-base-uncased")
    (fake_hub.root / "bert-base-uncased" / "model.safetensors").unlink()
    assert_error(invoke("download", "bert-base-uncased", "--to", tmp_path / "out"), "neither model.safetensors")


def test_not_a_bert(fake_hub, tmp_path):
    hf_repo(fake_hub.root / "someone" / "gpt")
    save_file({"transformer.h.0.attn.weight": torch.zeros(2, 2)}, fake_hub.root / "someone" / "gpt" / "model.safetensors")
    assert_error(invoke("download", "someone/gpt", "--to", tmp_path / "out"), "does not load as a BERT encoder")


def test_without_huggingface_hub(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # `import huggingface_hub` now fails
    assert_error(invoke("download", "bert-base-uncased", "--to", tmp_path / "out"), "pip install 'tinydact[download]'")


# ----------------------------------------------------------------------------------------
# GLUE: a fake urlopen serving archives built in tmp_path
# ----------------------------------------------------------------------------------------

SST2_DEV = "sentence\tlabel\ngood film \t1\nbad film \t0\n"
MSR_HEADER = "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String"
MSR_TRAIN = [MSR_HEADER, "1\t10\t11\tA cat sat .\tA cat was sitting .", "0\t20\t21\tIt rains .\tThe sun shines .",
             "1\t30\t31\tHe left .\tHe went away ."]  # fmt: skip
MSR_TEST = [MSR_HEADER, "1\t40\t41\tShe won .\tShe was the winner .", "0\t50\t51\tUp .\tDown ."]


class Response(io.BytesIO):
    def __init__(self, data):
        super().__init__(data)
        self.headers = {"Content-Length": str(len(data))}


def zip_bytes(files: dict) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, text in files.items():
            z.writestr(name, text)
    return buf.getvalue()


@pytest.fixture
def fake_web(monkeypatch):
    """urlopen serving a dict {url: bytes} (404 for anything else); returns the dict."""
    site = {}

    def urlopen(url, timeout=None):
        assert timeout is not None and timeout <= 30, "every request needs a short timeout"
        if url not in site:
            raise urllib.error.HTTPError(url, 404, "Not Found", {}, None)
        if isinstance(site[url], Exception):
            raise site[url]
        return Response(site[url])

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    return site


def test_glue_archive_is_unzipped(fake_web, tmp_path):
    fake_web[dl.GLUE_URL + "SST-2.zip"] = zip_bytes({"SST-2/dev.tsv": SST2_DEV, "SST-2/train.tsv": SST2_DEV})
    code, out, err, exc = invoke("download", "glue", "SST-2", "--to", tmp_path / "glue")
    assert code == 0, (out, err, exc)
    assert out.strip() == f"wrote {tmp_path / 'glue' / 'SST-2'}"
    assert sorted(p.name for p in (tmp_path / "glue").iterdir()) == ["SST-2"]  # the archive is gone
    examples, task, names = read_examples(tmp_path / "glue" / "SST-2" / "dev.tsv")
    assert task == "sst2" and [e.label for e in examples] == [1, 0]


def test_glue_task_names():
    assert dl.glue_task("SST-2") == dl.glue_task("sst2") == "sst2"
    assert dl.glue_task("STS-B") == "stsb" and dl.glue_task("MNLI") == "mnli"
    assert set(dl.GLUE_TASKS) >= {"sst2", "cola", "rte", "mrpc", "qnli", "qqp", "mnli"}


def test_mrpc_is_built_from_the_corpus(fake_web, tmp_path):
    fake_web[dl.MRPC_FILES["train"]] = ("\n".join(MSR_TRAIN) + "\n").encode()
    fake_web[dl.MRPC_FILES["test"]] = ("\n".join(MSR_TEST) + "\n").encode()
    fake_web[dl.MRPC_FILES["dev_ids"]] = b"20\t21\n"
    assert dl.download_glue("MRPC", tmp_path / "glue") == [tmp_path / "glue" / "MRPC"]
    mrpc = tmp_path / "glue" / "MRPC"
    assert sorted(p.name for p in (tmp_path / "glue").iterdir()) == ["MRPC"]
    train, task, _ = read_examples(mrpc / "train.tsv")
    dev, _, _ = read_examples(mrpc / "dev.tsv")
    assert task == "mrpc" and [e.text_a for e in train] == ["A cat sat .", "He left ."]
    assert [(e.text_a, e.text_b, e.label) for e in dev] == [("It rains .", "The sun shines .", 0)]
    test = (mrpc / "test.tsv").read_text().splitlines()
    assert test[0] == "index\t#1 ID\t#2 ID\t#1 String\t#2 String" and test[2] == "1\t50\t51\tUp .\tDown ."


@pytest.mark.parametrize(
    "served, fragment",
    [
        (None, "answered 404"),
        (b"this is not a zip", "not a valid zip"),
        (zip_bytes({"../evil.tsv": "x"}), "unsafe member"),
        (urllib.error.URLError(socket.timeout("timed out")), "could not reach dl.fbaipublicfiles.com"),
        (urllib.error.URLError(socket.gaierror(-2, "Name or service not known")), "network is unreachable"),
    ],
)
def test_glue_errors(fake_web, tmp_path, served, fragment):
    if served is not None:
        fake_web[dl.GLUE_URL + "RTE.zip"] = served
    assert_error(invoke("download", "glue", "RTE", "--to", tmp_path / "glue"), fragment)
    assert not (tmp_path / "evil.tsv").exists()
    assert [p.name for p in (tmp_path / "glue").iterdir()] == []  # no archive or partial file left


def test_glue_usage_errors(tmp_path):
    assert_error(invoke("download", "glue", "--to", tmp_path), "which GLUE task")
    assert_error(invoke("download", "glue", "SQuAD", "--to", tmp_path), "unknown GLUE task 'SQuAD'")
    assert_error(invoke("download", "bert-base-uncased", "extra", "--to", tmp_path), "unexpected argument")


# ----------------------------------------------------------------------------------------
# Offline, for real
# ----------------------------------------------------------------------------------------


def skip_if_online(host):
    try:
        socket.create_connection((host, 443), timeout=3).close()
    except OSError:
        return
    pytest.skip(f"{host} is reachable: the offline error cannot be checked here")


def run_bounded(fn, seconds):
    """fn() in a thread; skip (rather than hang) when it takes longer than `seconds`."""
    box = {}

    def target():
        start = time.perf_counter()
        try:
            fn()
        except BaseException as e:
            box["error"] = e
        box["seconds"] = time.perf_counter() - start

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(seconds)
    if t.is_alive():
        pytest.skip(f"the request was still waiting after {seconds} s (a resolver that hangs)")
    return box


OFFLINE = {"glue": ("dl.fbaipublicfiles.com", lambda to: dl.download_glue("SST-2", to)),
           "model": ("huggingface.co", lambda to: dl.download_model("bert-base-uncased", to))}


@pytest.mark.parametrize("what", OFFLINE)
def test_offline_fails_fast(tmp_path, what):
    host, fetch = OFFLINE[what]
    skip_if_online(host)
    box = run_bounded(lambda: fetch(tmp_path), 20)
    assert isinstance(box.get("error"), TinydactError), box
    assert f"could not reach {host}" in str(box["error"]) and "\n" not in str(box["error"])
    assert box["seconds"] < 15
