"""Write tests/vectors/dact.json: DACT test vectors for ports, computed by tinydact/reference.py.

    python tests/vectors/make_vectors.py           # rewrite dact.json
    python tests/vectors/make_vectors.py --check   # exit 1 if dact.json is out of date

Deterministic: inputs come from Python's `random.Random(SEED)` (only `.random()`, whose
sequence Python guarantees across versions) and are short decimals (y entries are k/1000
with every row summing to 1000/1000, h entries are k/1000), so the JSON holds them exactly.
Needs only NumPy: reference.py is loaded by path, without importing the tinydact package.
"""

import importlib.util
import json
import random
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
OUT = HERE / "dact.json"
REFERENCE = HERE.parent.parent / "tinydact" / "reference.py"

VERSION = 2  # 2: the K = 1 and clamp_boundary cases, and `prediction`
SEED = 20200414  # arXiv 2004.12770
NUM_RANDOM = 28
# Every halting decision in the file is clear by at least this much (or is an exact tie), so
# that a float32 port reaches the same halting steps as this float64 reference.
MIN_HALT_GAP = 1e-6

DESCRIPTION = (
    "Test vectors for DACT (Eyzaguirre & Soto, CVPR 2020), one example per case, computed in "
    "float64 by tinydact/reference.py. Recursion: p_0 = 1, a_0 = 0, p_n = h_n p_{n-1}, "
    "a_n = p_{n-1} y_n + (1 - p_{n-1}) a_{n-1}. Loss: -log(max(a_N[label], 1e-8)) + tau * sum_n p_n. "
    "See PORTING.md for the format and the tolerances."
)
FIELDS = {
    "name, note": "what the case is about",
    "N, K, label, tau": "steps, classes, the 0-based true class, the ponder penalty",
    "y": "N x K inputs, row n-1 = y_n (each row sums to 1)",
    "h": "N inputs, entry n-1 = h_n, in [0, 1]",
    "a": "N x K, row n-1 = a_n",
    "p": "N, entry n-1 = p_n (p_0 = 1 not included)",
    "loss": "the loss, a number",
    "dy, dh": "d loss / d y and d loss / d h, shaped like y and h",
    "halting_step": "1-based step after which inference stops, under the paper rule and the tight rule",
    "prediction": "the predicted class, argmax a_n at the halting step (ties go to the first class), per rule",
}


def load_reference():
    spec = importlib.util.spec_from_file_location("tinydact_reference", REFERENCE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


ref = load_reference()


# ----------------------------------------------------------------------------------------
# Inputs
# ----------------------------------------------------------------------------------------


def randint(rng, lo, hi):
    """An int in [lo, hi], from rng.random() only."""
    return lo + int(rng.random() * (hi - lo + 1))


def answer_row(rng, K, style, top=0):
    """One y_n as K integers summing to 1000 (divided by 1000 later)."""
    if style == "sharp":  # class `top` gets 900..1000
        counts = [0] * K
        counts[top] = randint(rng, 900, 1000)
    elif style == "flat":  # every class near 1000 / K
        counts = [1000 // K + randint(rng, -20, 20) for _ in range(K)]
    else:  # "random"
        counts = [randint(rng, 0, 1000) for _ in range(K)]
    # spread the rest (or remove the excess) over the classes, cycling from a random one
    rest, k = 1000 - sum(counts), randint(rng, 0, K - 1)
    while rest != 0:
        step = 1 if rest > 0 else -1
        if counts[k] + step >= 0 and (style != "sharp" or k != top or step > 0):
            counts[k] += step
            rest -= step
        k = (k + 1) % K
    return counts


def random_case(rng, i):
    N, K = randint(rng, 1, 8), randint(rng, 2, 5)
    answers = ["sharp", "flat", "random", "consistent"][randint(rng, 0, 3)]
    halting = ["uniform", "near 1", "near 0", "collapse"][randint(rng, 0, 3)]
    top = randint(rng, 0, K - 1)
    if answers == "consistent":  # the same class sharp in most steps
        y = [answer_row(rng, K, "sharp" if rng.random() < 0.8 else "random", top) for _ in range(N)]
    else:
        y = [answer_row(rng, K, answers, randint(rng, 0, K - 1)) for _ in range(N)]
    if halting == "uniform":
        h = [randint(rng, 0, 1000) for _ in range(N)]
    elif halting == "near 1":
        h = [randint(rng, 950, 1000) for _ in range(N)]
    elif halting == "near 0":
        h = [randint(rng, 0, 50) for _ in range(N)]
    else:  # near 1 until a random step, where it collapses, then anything
        m = randint(rng, 0, N - 1)
        h = []
        for n in range(N):
            lo, hi = (950, 1000) if n < m else (0, 5) if n == m else (0, 1000)
            h.append(randint(rng, lo, hi))
    tau = [0.0, 0.001, 0.01, 0.1, 0.5][randint(rng, 0, 4)]
    label = randint(rng, 0, K - 1)
    note = f"random: {answers} answers, h {halting}"
    return f"random_{i:02d}", note, y, h, label, tau


def designed_cases(rng):
    """(name, note, y counts, h counts, label, tau[, scale]): the edge cases of docs/dact.md §1–3."""

    def rows(N, K, style, top=0):
        return [answer_row(rng, K, style, top) for _ in range(N)]

    def hs(N, lo, hi):
        return [randint(rng, lo, hi) for _ in range(N)]

    dominant = [[960, 15, 25]] * 6
    return [
        ("h_all_one", "h = 1 everywhere: p_n = 1, a_n = y_n, a_N = y_N", rows(4, 2, "random"), [1000] * 4, 1, 0.01),
        ("h1_zero", "h_1 = 0: p_n = 0 for n >= 1, a_n = y_1 for all n", rows(4, 3, "random"), [0] + hs(3, 0, 1000), 2, 0.01),
        ("h_zero_midway", "h_3 = 0: the answer freezes at a_3", rows(5, 3, "random"), hs(2, 500, 1000) + [0] + hs(2, 0, 1000), 0, 0.01),
        ("h_exact_0_and_1", "h only 0 or 1", rows(6, 2, "random"), [1000, 1000, 0, 1000, 0, 1000], 1, 0.1),
        ("tie_all_classes", "y uniform over 4 classes: an exact tie never halts before N", [[250] * 4] * 5, hs(5, 0, 100), 1, 0.01),
        ("tie_top_two", "classes 0 and 1 tied at the top in every step", [[400, 400, 200]] * 5, hs(5, 0, 100), 0, 0.01),
        ("tie_top_two_p_zero", "a tie frozen by h_1 = 0 (p = 0): still no early halt", [[200, 400, 400]] * 4, [0, 500, 500, 500], 2, 0.01),
        ("dominant_low_h", "one class dominant and h small: halts early", dominant, [200, 100, 100, 100, 100, 100], 0, 0.01),
        ("dominant_high_h", "one class dominant but h near 1: p stays large, no early halt", dominant, hs(6, 950, 999), 0, 0.01),
        ("dominant_wrong_label", "one class dominant, the label is another class", dominant, [300, 50, 50, 50, 50, 50], 1, 0.05),
        ("single_step_K2", "N = 1: a_1 = y_1, halts at step 1", rows(1, 2, "random"), hs(1, 0, 1000), 0, 0.01),
        ("single_step_K4", "N = 1 with 4 classes", rows(1, 4, "random"), hs(1, 0, 1000), 3, 0.1),
        ("onehot_same_class", "y exactly one-hot on the same class", [[0, 1000, 0]] * 5, hs(5, 0, 300), 1, 0.01),
        ("onehot_switching", "y exactly one-hot, the class changes", [[1000, 0], [0, 1000], [1000, 0], [0, 1000]], hs(4, 300, 800), 0, 0.01),
        ("clamp_active", "a_N[label] = 0 < 1e-8: task term is -log(1e-8) and passes no gradient", [[0, 600, 400]] * 3, hs(3, 100, 900), 0, 0.1),
        ("tau_zero", "no ponder penalty", rows(5, 3, "random"), hs(5, 0, 1000), 2, 0.0),
        ("large_tau_K5", "tau = 0.5, five classes", rows(6, 5, "random"), hs(6, 0, 1000), 4, 0.5),
        ("twelve_steps_init", "N = 12 with h near sigmoid(3) = 0.953, the initial halting bias", rows(12, 2, "random"), hs(12, 940, 965), 1, 0.001),
        # fixed inputs from here on (no draws from rng, so the random cases stay as they were)
        ("one_class_K1", "K = 1: y_n = a_n = (1), the loss is the ponder term alone, inference stops after step 1",
         [[1000]] * 4, [900, 800, 700, 600], 0, 0.1),
        ("clamp_boundary", "a_N[label] is exactly 1e-8 (h = 1 before the last step, so a_N = y_N exactly): the clamp "
         "passes the gradient at equality, dy[N-1][label] = -1e8; y is given as floats, not k/1000",
         [[0.6, 0.4], [0.3, 0.7], [1 - 1e-8, 1e-8]], [1.0, 1.0, 0.5], 1, 0.01, 1),
    ]


# ----------------------------------------------------------------------------------------
# Expected outputs
# ----------------------------------------------------------------------------------------


def halt_gaps_ok(a, p):
    """Every decision before the last step is clear by MIN_HALT_GAP, or is an exact tie."""
    N, K = a.shape
    if K == 1:
        return True
    for n in range(1, N):
        second, top = np.sort(a[n - 1])[-2:]
        for rule in ref.RULES:
            left, right = ref.halting_test(a[n - 1], p[n - 1], N - n, rule)
            if abs(left - right) < MIN_HALT_GAP and top != second:
                return False
    return True


def clamp_clear(a_label):
    """a_N[label] is 0, exactly 1e-8 (the clamp_boundary case, where a float32 port gets
    float32(1e-8) on both sides too), or well away from the clamp at 1e-8."""
    return a_label == 0 or a_label == ref.A_MIN or a_label > 1e-6


def make_case(name, note, y_counts, h_counts, label, tau, scale=1000):
    """One case from inputs given as counts of 1/scale (scale 1: the inputs themselves)."""
    y = np.array(y_counts, dtype=np.float64) / scale
    h = np.array(h_counts, dtype=np.float64) / scale
    a, p = ref.forward(y, h)
    dy, dh = ref.backward(y, h, label, tau)
    dy, dh = dy + 0.0, dh + 0.0  # −0.0 + 0.0 = 0.0: write zeros without a sign
    case = dict(name=name, note=note, N=len(h), K=y.shape[1], label=label, tau=tau, y=y.tolist(), h=h.tolist())
    case.update(a=a.tolist(), p=p.tolist(), loss=ref.loss(y, h, label, tau), dy=dy.tolist(), dh=dh.tolist())
    case["halting_step"] = {rule: ref.halting_step(y, h, rule) for rule in ref.RULES}
    # argmax a_n at the halting step; np.argmax gives ties to the first class
    case["prediction"] = {rule: int(np.argmax(a[step - 1])) for rule, step in case["halting_step"].items()}
    usable = halt_gaps_ok(a, p) and clamp_clear(a[-1, label])
    return case, usable


def build_vectors():
    rng = random.Random(SEED)
    cases = []
    for spec in designed_cases(rng):
        case, usable = make_case(*spec)
        assert usable, f"designed case {case['name']} has a borderline halting decision or clamp"
        cases.append(case)
    i = 0
    while i < NUM_RANDOM:  # draw until NUM_RANDOM usable random cases
        case, usable = make_case(*random_case(rng, i))
        if usable:
            cases.append(case)
            i += 1
    return dict(version=VERSION, description=DESCRIPTION, seed=SEED, fields=FIELDS, cases=cases)


def to_json_text(vectors) -> str:
    """Pretty but compact: one line per top-level field and per field of each case."""

    def dump(value):
        return json.dumps(value, separators=(", ", ": "), ensure_ascii=False)

    lines = ["{"]
    for key, value in vectors.items():
        if key != "cases":
            lines.append(f"  {dump(key)}: {dump(value)},")
    lines.append('  "cases": [')
    for i, case in enumerate(vectors["cases"]):
        fields = [f"    {dump(k)}: {dump(v)}" for k, v in case.items()]
        lines.append("   {\n" + ",\n".join(fields) + "\n   }" + ("," if i < len(vectors["cases"]) - 1 else ""))
    lines.append("  ]")
    lines.append("}")
    return "\n".join(lines) + "\n"


def main(argv):
    text = to_json_text(build_vectors())
    if "--check" in argv:
        if OUT.read_text() != text:
            print(f"{OUT} is out of date: run python {Path(__file__).name}")
            return 1
        print(f"{OUT} is up to date")
        return 0
    OUT.write_text(text)
    print(f"wrote {OUT} ({len(text)} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
