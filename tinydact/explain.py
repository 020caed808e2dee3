"""`classify --explain` as text: a legend, then per sentence one line per block run with the
DACT module's outputs and both sides of the halting test (docs/dact.md, section 3)."""


def _num(x: float) -> str:
    """Four decimals, or scientific notation where four decimals would hide the value."""
    return f"{x:.4f}" if x == 0 or 1e-3 <= abs(x) < 1e4 else f"{x:.2e}"


def legend(labels, N: int, rule: str, halt: bool) -> str:
    """What the columns of `table` mean: the recursion and the halting test in words."""
    upper = "a_n[c'] + p_n·d" if rule == "paper" else "1 − (1 − a_n[c'])·(1 − p_n)^d"
    return (
        f"After block n the DACT module gives y_n, the block's own answer over ({', '.join(labels)}),\n"
        "and h_n, its halting value; p_n = h_n·p_{n-1} and a_n = p_{n-1}·y_n + (1 − p_{n-1})·a_{n-1}\n"
        f"(p_0 = 1, a_0 = 0). With d = N − n blocks left (N = {N}), whatever they output, the top class\n"
        f"c* of a_n can fall at most to a_n[c*]·(1 − p_n)^d and the runner-up c' can rise at most to\n"
        f"{upper} ({rule} rule): when the first is larger, the answer can no longer change\n"
        "and the example stops" + (" (here --no-halt runs every block anyway)." if not halt else ".")
    )


def table(steps, rule: str, halt: bool) -> list:
    """One aligned line per block run, from the step records of `Classifier(..., explain=True)`:
    y_n, h_n, p_n, a_n, the two sides of the halting test and the decision."""
    upper = "a_n[c']+p_n·d" if rule == "paper" else "1−(1−a_n[c'])(1−p_n)^d"
    rows = [["n", "y_n", "h_n", "p_n", "a_n", "a_n[c*]·(1−p_n)^d", "", upper, "d", "decision"]]
    for s in steps:
        verdict = "last block: stop" if s["d"] == 0 else "go on" if not s["passes_test"] else "stop" if halt else "would stop (--no-halt: go on)"
        lower, upper = s["top_lower_bound"], s["runner_up_upper_bound"]
        rows.append([str(s["n"]), " ".join(f"{v:.4f}" for v in s["y_n"]), _num(s["h_n"]), _num(s["p_n"]),
                     " ".join(f"{v:.4f}" for v in s["a_n"]), _num(lower), ">" if s["passes_test"] else "≤", _num(upper),
                     str(s["d"]), verdict])
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
    return ["    " + "  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in rows]
