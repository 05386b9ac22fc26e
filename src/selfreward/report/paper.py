"""Figures published in Self-Rewarding Language Models (Yuan et al., 2024), for comparison."""

# Table 1: AlpacaEval 2.0 win rate vs GPT-4 Turbo, in %
PAPER_WIN_RATE = {"M1": 9.94, "M2": 15.38, "M3": 20.44}
