"""The report's PNG charts (matplotlib, Agg), on fixed scales: rates 0-1, scores 0-5, score gains
at least -1..1, so that a change of 0.005 cannot fill a plot; M0 and M1 are on every per-model
chart as the baselines."""

from __future__ import annotations

from pathlib import Path

from ..core.io import atomic_file

CHARTS = ("movement.png", "reward_gain.png", "win_rate.png", "judge_agreement.png",
          "scores.png", "self_reward.png", "length.png", "judge_hist.png")


def draw_charts(its: list[dict], models: list[dict], out_dir: Path) -> list[str]:
    """Write every chart in CHARTS (a "no data yet" panel where there is nothing to draw)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written: list[str] = []
    iters = [r["iteration"] for r in its]
    names = [f"M{m['index']}" for m in models]
    xs = list(range(len(models)))

    def save(fig, name: str) -> None:
        fig.tight_layout()
        with atomic_file(out_dir / name, "wb") as fh:
            fig.savefig(fh, format="png", dpi=110)
        plt.close(fig)
        written.append(name)

    def axes(title: str, ylabel: str, ylim: tuple[float, float], by_model: bool):
        fig, ax = plt.subplots(figsize=(6, 3.6))
        ax.set(title=title, ylabel=ylabel, ylim=ylim,
               xlabel="model" if by_model else "iteration (M_t → M_t+1)")
        if by_model and models:
            ax.set_xticks(xs, names)
        elif iters:
            ax.set_xticks(iters)
        ax.grid(alpha=0.3)
        return fig, ax

    def series(ax, xs, rows, key, label, lo=None, hi=None, **kw) -> bool:
        pts = [(xi, r[key], r.get(lo) if lo else None, r.get(hi) if hi else None)
               for xi, r in zip(xs, rows) if r.get(key) is not None]
        if not pts:
            return False
        px, py = [p[0] for p in pts], [p[1] for p in pts]
        if lo and all(p[2] is not None and p[3] is not None for p in pts):
            err = [[p[1] - p[2] for p in pts], [p[3] - p[1] for p in pts]]
            ax.errorbar(px, py, yerr=err, marker="o", capsize=3, label=label, **kw)
        else:
            ax.plot(px, py, marker="o", label=label, **kw)
        return True

    def finish(fig, ax, name: str, drawn: bool) -> None:
        if drawn:
            ax.legend(fontsize=8, loc="best")
        else:
            ax.text(0.5, 0.5, "no data yet", ha="center", va="center", transform=ax.transAxes)
        save(fig, name)

    fig, ax = axes("Did the model move? (share, 0-1)", "share", (0, 1.05), False)
    drawn = series(ax, iters, its, "weights_changed", "weights changed by the save")
    drawn |= series(ax, iters, its, "answers_changed", "greedy answers changed")
    finish(fig, ax, "movement.png", drawn)

    gains = [v for r in its for v in (r["reward_gain_ci_low"], r["reward_gain_ci_high"],
                                      r["fixed_judge_gain"]) if v is not None]
    span = max([1.0] + [abs(v) * 1.1 for v in gains])
    fig, ax = axes("Reward gain of M_t+1 over M_t (score points)", "score gain", (-span, span),
                   False)
    ax.axhline(0, color="grey", lw=1)
    drawn = series(ax, iters, its, "reward_gain", "frozen judge M_t (95 % CI)",
                   "reward_gain_ci_low", "reward_gain_ci_high")
    drawn |= series(ax, iters, its, "fixed_judge_gain", "fixed judge")
    finish(fig, ax, "reward_gain.png", drawn)

    fig, ax = axes("Head-to-head win rate of M_t+1 (both orders)", "win rate", (0, 1), False)
    ax.axhline(0.5, color="grey", lw=1)
    drawn = series(ax, iters, its, "win_rate_vs_prev", "vs M_t (95 % CI)",
                   "win_rate_vs_prev_ci_low", "win_rate_vs_prev_ci_high")
    drawn |= series(ax, iters, its, "win_rate_vs_sft", "vs M1")
    drawn |= series(ax, iters, its, "first_slot_rate", "judge's first-slot rate", ls="--")
    finish(fig, ax, "win_rate.png", drawn)

    fig, ax = axes("Each model as a judge (rates 0-1)", "rate / correlation", (-0.2, 1.05),
                   True)
    ax.axhline(0.5, color="grey", lw=1, ls=":")
    drawn = series(ax, xs, models, "judge_pairwise_accuracy", "EFT pairwise accuracy (95 % CI)",
                   "judge_pairwise_accuracy_ci_low", "judge_pairwise_accuracy_ci_high")
    drawn |= series(ax, xs, models, "relevance_accuracy", "relevance (95 % CI)",
                    "relevance_ci_low", "relevance_ci_high")
    drawn |= series(ax, xs, models, "judge_spearman", "Spearman vs human scores")
    finish(fig, ax, "judge_agreement.png", drawn)

    fig, ax = axes("Answers scored by judges (0-5)", "score", (0, 5), True)
    drawn = series(ax, xs, models, "fixed_judge_score", "fixed judge, pointwise (95 % CI)",
                   "fixed_judge_ci_low", "fixed_judge_ci_high")
    drawn |= series(ax, xs, models, "self_score", "the model judging itself")
    finish(fig, ax, "scores.png", drawn)

    fig, ax = axes("Mean self-judged score of sampled answers", "score", (0, 5), False)
    drawn = series(ax, iters, its, "mean_self_reward", "mean self-reward")
    finish(fig, ax, "self_reward.png", drawn)

    top = max([10.0] + [r[k] * 1.2 for r in models for k in ("mean_words", "mean_tokens")
                        if r.get(k) is not None])
    fig, ax = axes("Answer length on held-out prompts", "length", (0, top), True)
    drawn = series(ax, xs, models, "mean_words", "mean words")
    drawn |= series(ax, xs, models, "median_words", "median words")
    drawn |= series(ax, xs, models, "mean_tokens", "mean tokens")
    finish(fig, ax, "length.png", drawn)

    hists = [r for r in its if any(h is not None for h in r["hist"])]
    fig, axs = plt.subplots(1, max(1, len(hists)), figsize=(3 * max(1, len(hists)) + 1, 3),
                            sharey=True, squeeze=False)
    for ax, r in zip(axs[0], hists):
        ax.bar(range(6), [h or 0 for h in r["hist"]])
        ax.set(title=f"iteration {r['iteration']}", xlabel="self-judged score", xticks=range(6))
    if not hists:
        axs[0][0].set_title("self-judged score histogram")
        axs[0][0].text(0.5, 0.5, "no data yet", ha="center", va="center",
                       transform=axs[0][0].transAxes)
    axs[0][0].set_ylabel("responses")
    save(fig, "judge_hist.png")
    return written
