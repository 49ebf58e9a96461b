"""Builds results/maestro.md and results/maestro.json from the runs of configs/maestro.py.

    python results/maestro_table.py RUNS_DIR

RUNS_DIR holds (names as in the closing note of the Maestro issue): ``dense``, ``maestro-<lambda>``,
``svd-<lambda>`` (fine-tuned truncated SVD of ``dense`` at that Maestro run's parameter count), ``fed``
(federated, three capacity tiers), ``sk-dense``, ``sk-maestro-<lambda>``, ``sk-svd-<lambda>``
(Shakespeare Transformer).
The truncated SVD before fine-tuning is evaluated here, from each SVD run's own config.
"""

import json
import sys
from pathlib import Path

import numpy as np

import fedsim
from fedsim.engine.setup import build_experiment, initial_model
from fedsim.metrics import evaluate, report

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = """Runs (every command `fedsim run --config configs/maestro.py:ARG --workdir runs/NAME`):
`dense` ARG `method=dense`; `maestro-L` ARG `maestro.lambda_gl=L`; `svd-L` ARG
`method=svd,init_from=runs/dense,init_params_budget=<params of maestro-L>,rounds=3`; `fed` ARG
`mode=federated`; `sk-dense` ARG `mode=shakespeare,method=dense`; `sk-maestro-L` ARG
`mode=shakespeare,maestro.lambda_gl=L`; `sk-svd-L` ARG `mode=shakespeare,method=svd,init_from=runs/sk-dense,
init_params_budget=<params of sk-maestro-L>,rounds=10`. "SVD at ... size" rows: the truncated SVD
before any fine-tuning (same fraction of every layer's rank, the largest that fits the budget). MACs
are per example of the deployed model (the dense CNN: 885,632; the dense Transformer: 985,632).
Tables: `python results/maestro_table.py runs`.
"""


def last(run: Path) -> dict:
    return json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])


def truncated_svd(run: Path) -> dict:
    """Accuracy and size of ``init_from`` truncated to ``init_params_budget``, before any training."""
    config = json.loads((run / "config.json").read_text())
    mode = "shakespeare" if config["dataset"] == "shakespeare" else "central"
    arg = (
        f"mode={mode},method=svd,init_from={config['init_from']},"
        f"init_params_budget={config['init_params_budget']}"
    )
    experiment = build_experiment(fedsim.load_config(f"{ROOT}/configs/maestro.py:{arg}"))
    start, data = initial_model(experiment), experiment.data
    predict = evaluate.build_predict_correct(experiment.model, experiment.eval_batch_size)
    return report.server_model_scores(
        np.asarray(predict(start, data.x_test, data.y_test)), data, start
    )


def row(name, params, dense_params, acc, macs=None, wall=None):
    return {
        "method": name,
        "params": int(params),
        "fraction_of_dense": round(params / dense_params, 4),
        "global_acc": round(acc, 4),
        "macs": macs,
        "wall_s": None if wall is None else round(wall, 1),
    }


def comparison(runs: Path, dense: str, maestro: list[str], svd: dict[str, str]) -> list[dict]:
    base = last(runs / dense)
    rows = [row("dense", base["params"], base["params"], base["global_acc"], wall=base["wall_s"])]
    for name in maestro:
        m = last(runs / name)
        rows.append(
            row(name, m["params"], base["params"], m["global_acc"], m["macs_p100"], m["wall_s"])
        )
        svd_run = runs / svd[name]
        if svd_run.joinpath("summary.json").exists():
            t = truncated_svd(svd_run)
            rows.append(row(f"SVD at {name} size", t["params"], base["params"], t["global_acc"]))
            f = last(svd_run)
            label = f"SVD + {f['round']} rounds fine-tuning"
            rows.append(
                row(
                    label, f["params"], base["params"], f["global_acc"], f["macs_p100"], f["wall_s"]
                )
            )
    return rows


def markdown(title: str, rows: list[dict]) -> str:
    lines = [
        f"### {title}",
        "",
        "| method | params | of dense | accuracy | MACs/example | wall s |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        macs = "" if r["macs"] is None else f"{r['macs']:,}"
        wall = "" if r["wall_s"] is None else r["wall_s"]
        lines.append(
            f"| {r['method']} | {r['params']:,} | {r['fraction_of_dense']:.1%} | {r['global_acc']:.4f} | {macs} | {wall} |"
        )
    return "\n".join(lines) + "\n"


def main(runs: Path) -> None:
    maestro = sorted(p.name for p in runs.glob("maestro-*") if (p / "summary.json").exists())
    out = {
        "fashion_mnist_central": comparison(
            runs, "dense", maestro, {m: "svd-" + m.split("-", 1)[1] for m in maestro}
        )
    }
    text = [
        "# Maestro vs truncated SVD vs dense (configs/maestro.py, seed 0, 2-core CPU)",
        "",
        COMMANDS,
    ]
    text.append(
        markdown(
            "Fashion-MNIST, central (20,000 training images, CNN 8/16/128, 10 epochs)",
            out["fashion_mnist_central"],
        )
    )
    sk = sorted(p.name for p in runs.glob("sk-maestro-*") if (p / "summary.json").exists())
    if sk:
        pairs = {m: m.replace("sk-maestro-", "sk-svd-") for m in sk}
        out["shakespeare"] = comparison(runs, "sk-dense", sk, pairs)
        text.append(
            markdown(
                "Shakespeare, federated character Transformer (next-character accuracy)",
                out["shakespeare"],
            )
        )
    if (runs / "fed" / "summary.json").exists():
        m = last(runs / "fed")
        tiers = sorted(
            {k.split("_")[-1] for k in m if k.startswith("acc_p")}, key=lambda t: int(t[1:])
        )
        out["fashion_mnist_federated_tiers"] = [
            {
                "tier": t,
                "global_acc": m[f"acc_{t}"],
                "params": m[f"params_{t}"],
                "model_mb": m[f"model_mb_{t}"],
                "round_mb_per_client": m[f"round_mb_{t}"],
                "macs": m[f"macs_{t}"],
            }
            for t in tiers
        ]
        text += [
            f"### Federated Maestro, 3 capacity tiers (round {m['round']}, personal_acc_mean {m['personal_acc_mean']:.4f})",
            "",
            "| tier | accuracy | params | model MB | MB per client per round (down + up) | MACs/example |",
            "|---|---|---|---|---|---|",
        ]
        for r in out["fashion_mnist_federated_tiers"]:
            text.append(
                f"| {r['tier']} | {r['global_acc']:.4f} | {r['params']:,} | {r['model_mb']:.4f} | "
                f"{r['round_mb_per_client']:.4f} | {r['macs']:,} |"
            )
    (ROOT / "results" / "maestro.json").write_text(json.dumps(out, indent=2) + "\n")
    (ROOT / "results" / "maestro.md").write_text("\n".join(text) + "\n")
    print("\n".join(text))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
