"""The vectors ports are checked against (PORTING.md): tests/vectors/model.json is what the
shipped model and tokenizer give now, and dact.json's per-rule predictions are argmax a_n at
the halting step with ties going to the first class. (The JavaScript port itself is tested by
`node --test ports/js`, and in a browser by ports/js/browser_check.py; .ci/run runs both.)"""

import json

import numpy as np
import torch

from tinydact import reference
from tinydact.dact import can_halt, dact_update
from tinydact.tokenizer import Tokenizer

from conftest import VECTORS, load_vector_script, same_content, shipped_weights


def model_vectors() -> dict:
    return json.loads((VECTORS / "model.json").read_text(encoding="utf-8"))


def test_model_vectors_match_the_shipped_model():
    """model.json is regenerated from weights/ here and compared: regenerate the file
    (python tests/vectors/make_model_vectors.py) whenever weights/ changes."""
    make = load_vector_script("make_model_vectors")
    fresh = json.loads(make.to_json_text(make.build_vectors()))
    stored = model_vectors()
    assert stored["weights_sha256"] == fresh["weights_sha256"], "weights/ changed: run python tests/vectors/make_model_vectors.py"
    # float32 kernels may differ in the last bits between CPUs; a change of weights moves far more
    same_content(fresh, stored, rel=1e-5, abs=1e-5)


def test_model_vectors_cover_what_the_issue_asks():
    v = model_vectors()
    inputs = v["inputs"]
    assert len(inputs) == 4 and sum(x["batch"] == "batch_1" for x in inputs) == 2
    batch = [x for x in inputs if x["batch"] == "batch_1"]
    assert 0 in batch[0]["attention_mask"] and 0 not in batch[1]["attention_mask"]  # different lengths, padded
    assert any("pair" in x and 1 in x["token_type_ids"] for x in inputs)
    for x in inputs:
        assert len(x["cls"]) == len(x["y"]) == len(x["h"]) == len(x["p"]) == len(x["a"]) == v["num_blocks"]
    exits = {(x["halting"]["paper"]["blocks"], x["halting"]["tight"]["blocks"]) for x in inputs}
    assert any(p != t for p, t in exits) and any(p < v["num_blocks"] for p, _ in exits)  # early, and the rules differ
    assert {x["halting"]["paper"]["label"] for x in inputs} == {0, 1}


def test_python_tokenizer_gives_the_vector_ids():
    tok = Tokenizer.from_pretrained(shipped_weights())
    v = model_vectors()
    for case in v["tokenizer_cases"]:
        enc = tok(case["text"], case.get("pair"), max_length=case.get("max_length"))
        assert enc.input_ids[0].tolist() == case["input_ids"], case["text"]
        assert enc.token_type_ids[0].tolist() == case["token_type_ids"], case["text"]
    for x in v["inputs"]:
        n = sum(x["attention_mask"])
        enc = tok(x["text"], x.get("pair"))
        assert enc.input_ids[0].tolist() == x["input_ids"][:n] and x["input_ids"][n:] == [0] * (len(x["input_ids"]) - n)
        assert enc.token_type_ids[0].tolist() == x["token_type_ids"][:n]


def test_dact_vectors_predictions_are_argmax_at_the_halting_step_ties_first():
    cases = json.loads((VECTORS / "dact.json").read_text())["cases"]
    for case in cases:
        y, h = np.array(case["y"]), np.array(case["h"])
        a, p = reference.forward(y, h)
        N = case["N"]
        for rule in ("paper", "tight"):
            step = case["halting_step"][rule]
            assert case["prediction"][rule] == int(np.argmax(a[step - 1])), (case["name"], rule)
            # the batched torch path (what DACTBert.predict runs) stops at the same step, same class
            a_n, p_n = torch.zeros(1, case["K"], dtype=torch.float64), torch.ones(1, dtype=torch.float64)
            for n in range(1, N + 1):
                a_n, p_n = dact_update(a_n, p_n, torch.tensor(y[n - 1 : n]), torch.tensor(h[n - 1 : n]))
                if can_halt(a_n, p_n, N - n, rule)[0]:
                    break
            assert (n, int(a_n.argmax(-1))) == (step, case["prediction"][rule]), (case["name"], rule)
    by_name = {c["name"]: c for c in cases}
    # ties go to the first class: classes 1 and 2 tie at the top, the prediction is 1
    assert by_name["tie_top_two_p_zero"]["prediction"] == {"paper": 1, "tight": 1}
    # K = 1 stops after step 1; at exactly the clamp 1e-8 the gradient passes: −p_{N−1} / 1e-8
    k1 = by_name["one_class_K1"]
    assert k1["K"] == 1 and k1["halting_step"] == {"paper": 1, "tight": 1}
    edge = by_name["clamp_boundary"]
    assert edge["a"][-1][edge["label"]] == 1e-8 and edge["dy"][-1][edge["label"]] == -1e8
