"""The comparison's report: a markdown table and PNG plots (matplotlib, drawn off-screen)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def write_report(report: dict[str, Any], out: Path) -> str:
    """report.md: the side-by-side table, accuracy by length, and the sweep; returns the table text."""
    c = report["config"]
    rows = report["results"]
    lines = [
        f"# longseq compare: {c['task']}",
        "",
        f"{c['layers']} layers, width {c['hidden']}, {c['heads']} heads, MLP {c['ffn']}; "
        f"{c['steps']} steps of batch {c['batch_size']}, lengths {c['min_length']}-{c['max_length']}; "
        f"device {rows[0]['device']}, {rows[0].get('precision', 'fp32')}.",
        "Chance is 10% (ListOps' most frequent class is about 17%).",
        "",
        "| model | test accuracy | train tokens/s | inference ms / batch | peak train MiB | parameters |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        peak = f"{r['peak_train_memory_mib']:.0f}" if r["peak_train_memory_mib"] is not None else "n/a (CPU)"
        lines.append(
            f"| {r['model']} | {100 * r['test_accuracy']:.1f}% | {r['train_tokens_per_s']:,.0f} | "
            f"{r['inference_latency_ms']:.1f} | {peak} | {r['parameters']:,} |"
        )
    table = "\n".join(lines[-(len(rows) + 2) :])
    lines += ["", "## Accuracy by input length (test set, four equal-count buckets)", ""]
    buckets = rows[0]["accuracy_by_length"]
    lines.append("| model | " + " | ".join(f"{b['length'][0]}-{b['length'][1]}" for b in buckets) + " |")
    lines.append("|---" * (len(buckets) + 1) + "|")
    for r in rows:
        lines.append(
            f"| {r['model']} | "
            + " | ".join(f"{100 * b['accuracy']:.1f}%" for b in r["accuracy_by_length"])
            + " |"
        )
    unit = "peak MiB" if rows[0]["device"].startswith("cuda") else "activation MiB"
    lines += ["", f"## One training step (batch 1) against length: ms / {unit}", ""]
    lengths = [s["length"] for s in rows[0]["sweep"]]
    lines.append("| model | " + " | ".join(str(n) for n in lengths) + " |")
    lines.append("|---" * (len(lengths) + 1) + "|")
    for r in rows:
        cells = [f"{s['train_step_ms']:.1f} / {s['memory_mib']:.1f}" for s in r["sweep"]]
        lines.append(f"| {r['model']} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Plots: accuracy_vs_steps.png, accuracy_vs_length.png, speed_vs_length.png, memory_vs_length.png.",
    ]
    text = "\n".join(lines) + "\n"
    tmp = out / ".report.md.tmp"
    tmp.write_text(text)
    tmp.replace(out / "report.md")
    return table


def plots(report: dict[str, Any], out: Path) -> list[Path]:
    """accuracy_vs_steps, accuracy_vs_length, speed_vs_length, memory_vs_length (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["results"]
    written = []

    def save(fig, name: str) -> None:
        path = out / name
        tmp = out / f".{name}.tmp.png"
        fig.tight_layout()
        fig.savefig(tmp, dpi=110)
        plt.close(fig)
        tmp.replace(path)
        written.append(path)

    fig, ax = plt.subplots(figsize=(6, 4))
    for r in rows:
        h = r["eval_history"]
        ax.plot([p["step"] for p in h], [100 * p["accuracy"] for p in h], marker="o", label=r["model"])
    ax.axhline(10, color="grey", linestyle=":", label="chance")
    ax.set(xlabel="training step", ylabel="validation accuracy (%)", title="Accuracy during training")
    ax.legend()
    save(fig, "accuracy_vs_steps.png")

    fig, ax = plt.subplots(figsize=(6, 4))
    for r in rows:
        b = r["accuracy_by_length"]
        ax.plot(
            [sum(x["length"]) / 2 for x in b], [100 * x["accuracy"] for x in b], marker="o", label=r["model"]
        )
    ax.set(
        xlabel="input length (tokens, bucket middle)", ylabel="test accuracy (%)", title="Accuracy by length"
    )
    ax.legend()
    save(fig, "accuracy_vs_length.png")

    for key, name, label in (
        ("train_step_ms", "speed_vs_length.png", "ms per training step (batch 1)"),
        ("memory_mib", "memory_vs_length.png", "MiB (peak on GPU, activations on CPU)"),
    ):
        fig, ax = plt.subplots(figsize=(6, 4))
        for r in rows:
            ax.plot(
                [s["length"] for s in r["sweep"]], [s[key] for s in r["sweep"]], marker="o", label=r["model"]
            )
        ax.set(xscale="log", yscale="log", xlabel="sequence length", ylabel=label, title=label)
        ax.legend()
        save(fig, name)
    return written
