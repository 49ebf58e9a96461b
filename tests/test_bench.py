"""``fedsim bench``: every suite's quick setting writes its JSON rows with the fields CONTRACT.md names;
a bad suite exits 2 with one line. No timed assertions: numbers only have to be finite and positive."""

import json
import math

import pytest

from fedsim.cli import main

COMMON = {"suite", "device", "platform", "model", "clients_per_round", "batch_size", "dtype"}
FIELDS = {
    "round": COMMON
    | {
        "local_steps", "fedsim_samples_per_s", "central_samples_per_s", "loop_samples_per_s",
        "ratio_vs_central", "ratio_vs_loop", "compile_s", "peak_memory_bytes", "chunk_size",
        "central_scan_samples_per_s", "central_steps_samples_per_s",
        "ratio_vs_fastest_central_same_batch",
    },
    "algorithms": COMMON | {"algorithm", "round_s", "fedavg_round_s", "ratio_vs_fedavg"},
    "pfl": COMMON
    | {
        "num_clients", "rounds_run", "compile_s", "wall_s", "wall_s_full_extrapolated",
        "pfl_research_wall_s", "ratio_vs_pfl", "note",
    },
}  # fmt: skip
POSITIVE = {
    "round": ("fedsim_samples_per_s", "central_samples_per_s", "loop_samples_per_s",
              "ratio_vs_central", "ratio_vs_loop", "compile_s", "central_steps_samples_per_s",
              "ratio_vs_fastest_central_same_batch"),
    "algorithms": ("round_s", "fedavg_round_s", "ratio_vs_fedavg"),
    "pfl": ("compile_s", "train_s", "eval_s", "wall_s", "wall_s_full_extrapolated"),
}  # fmt: skip


@pytest.mark.parametrize("suite", sorted(FIELDS))
def test_quick_suite_writes_contract_fields(suite, tmp_path, capsys):
    out = tmp_path / f"{suite}.json"
    assert main(["bench", "--suite", suite, "--quick", "--out", str(out)]) == 0
    rows = json.loads(out.read_text())
    assert rows and all(FIELDS[suite] <= row.keys() for row in rows)
    assert {row["suite"] for row in rows} == {suite}
    for row in rows:
        for key in POSITIVE[suite]:
            assert math.isfinite(row[key]) and row[key] > 0, (key, row[key])
    if suite == "algorithms":
        assert {row["algorithm"] for row in rows} == {
            "fedavg", "fedprox", "scaffold", "fedltn", "maestro"
        }  # fmt: skip
    if suite == "pfl":
        assert rows[0]["pfl_research_wall_s"] is None and rows[0]["note"]
    assert capsys.readouterr().out.strip().endswith(str(out))


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (["--suite", "speed"], "'speed'"),
        (["--suite", "pfl", "--clients", "10"], "--clients"),
        (["--suite", "round", "--rounds", "0"], "0"),
        ([], "--suite"),
    ],
)
def test_bad_input_exits_2_with_one_line(flags, named, tmp_path, capsys):
    assert main(["bench", *flags, "--out", str(tmp_path / "x.json")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and named in err
    assert not (tmp_path / "x.json").exists()
