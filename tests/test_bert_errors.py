"""Every way a model directory can be wrong ends in one TinydactError whose one-line message
names the culprit (the path, the key, the shapes), never in a traceback from deep inside."""

import pytest
import torch
from conftest import TINY_BERT, edit_json, edit_tensors, save_plain_bert

from tinydact.bert import Bert, BertConfig
from tinydact.errors import TinydactError

@pytest.fixture
def ckpt(tmp_path):
    """A valid tiny model directory, in the Hugging Face `BertModel` layout."""
    path = save_plain_bert(Bert(BertConfig.from_dict(TINY_BERT)), tmp_path / "ckpt")
    Bert.from_pretrained(path)  # the unmodified directory loads
    return path


def load_error(path) -> str:
    with pytest.raises(TinydactError) as e:
        Bert.from_pretrained(path)
    message = str(e.value)
    assert "\n" not in message
    return message


def test_missing_directory_is_named(tmp_path):
    assert str(tmp_path / "nope") in load_error(tmp_path / "nope")


def test_missing_config_is_named(ckpt):
    (ckpt / "config.json").unlink()
    assert str(ckpt / "config.json") in load_error(ckpt)


def test_unreadable_config_is_named(ckpt):
    (ckpt / "config.json").unlink()
    (ckpt / "config.json").mkdir()
    assert str(ckpt / "config.json") in load_error(ckpt)


def test_invalid_json_config_is_named(ckpt):
    (ckpt / "config.json").write_text('{"hidden_size": 32,')
    message = load_error(ckpt)
    assert "not valid JSON" in message and str(ckpt / "config.json") in message


def test_config_that_is_not_an_object_is_named(ckpt):
    (ckpt / "config.json").write_text("[1, 2]")
    assert str(ckpt / "config.json") in load_error(ckpt)


def test_tanh_gelu_is_rejected_not_run_wrong(ckpt):
    edit_json(ckpt / "config.json", hidden_act="gelu_new")
    assert "'gelu_new'" in load_error(ckpt)


def test_relative_position_embeddings_are_rejected(ckpt):
    edit_json(ckpt / "config.json", position_embedding_type="relative_key")
    assert "'relative_key'" in load_error(ckpt)


def test_hidden_size_not_divisible_by_heads_is_rejected(ckpt):
    edit_json(ckpt / "config.json", num_attention_heads=5)
    message = load_error(ckpt)
    assert "32" in message and "5" in message


def test_missing_weights_file_is_named(ckpt):
    (ckpt / "model.safetensors").unlink()
    message = load_error(ckpt)
    assert "model.safetensors" in message and str(ckpt) in message


def test_random_bytes_are_not_a_safetensors_file(ckpt):
    (ckpt / "model.safetensors").write_bytes(torch.randint(0, 256, (4096,), dtype=torch.uint8).numpy().tobytes())
    message = load_error(ckpt)
    assert "not a valid safetensors file" in message and str(ckpt / "model.safetensors") in message


def test_truncated_safetensors_file_is_named(ckpt):
    data = (ckpt / "model.safetensors").read_bytes()
    (ckpt / "model.safetensors").write_bytes(data[: len(data) // 2])
    assert str(ckpt / "model.safetensors") in load_error(ckpt)


def test_empty_safetensors_file_is_named(ckpt):
    (ckpt / "model.safetensors").write_bytes(b"")
    assert str(ckpt / "model.safetensors") in load_error(ckpt)


def test_pickle_with_code_is_refused_by_weights_only_loading(ckpt):
    (ckpt / "model.safetensors").unlink()
    torch.save({"pooler.dense.weight": torch.zeros(2), "hook": print}, ckpt / "pytorch_model.bin")
    assert str(ckpt / "pytorch_model.bin") in load_error(ckpt)


def test_unexpected_key_is_named(ckpt):
    edit_tensors(ckpt, lambda t: t.update({"encoder.layer.0.attention.self.rotary.weight": torch.zeros(4)}))
    assert "'encoder.layer.0.attention.self.rotary.weight'" in load_error(ckpt)


def test_missing_key_is_named(ckpt):
    edit_tensors(ckpt, lambda t: t.pop("encoder.layer.1.output.LayerNorm.bias"))
    assert "'encoder.layer.1.output.LayerNorm.bias'" in load_error(ckpt)


def test_a_key_given_under_two_official_names_is_named(ckpt):
    edit_tensors(ckpt, lambda t: t.update({"bert.pooler.dense.bias": t["pooler.dense.bias"].clone()}))
    assert "pooler.dense.bias" in load_error(ckpt)


def test_wrong_shape_names_the_key_and_both_shapes(ckpt):
    edit_tensors(ckpt, lambda t: t.update({"embeddings.word_embeddings.weight": torch.zeros(101, 32)}))
    message = load_error(ckpt)
    assert "'embeddings.word_embeddings.weight'" in message and "(101, 32)" in message and "(100, 32)" in message


def test_input_longer_than_max_position_embeddings_is_an_error():
    model = Bert(BertConfig.from_dict(TINY_BERT))
    model(torch.zeros(1, 40, dtype=torch.long))  # exactly the limit is fine
    with pytest.raises(TinydactError, match="41 tokens.*at most 40"):
        model(torch.zeros(1, 41, dtype=torch.long))


def test_pytorch_file_that_is_not_a_dict_is_named(ckpt):
    (ckpt / "model.safetensors").unlink()
    torch.save([torch.zeros(2)], ckpt / "pytorch_model.bin")
    assert str(ckpt / "pytorch_model.bin") in load_error(ckpt)
