"""metrics/iterN/dpo.json counts what TRL trains on: pairs kept, dropped for length, truncated."""

import json
import logging

from selfreward.config.params import BaseParams, DpoParams, Params
from selfreward.stages.dpo import run_dpo


def pair(prompt: str, chosen: str, rejected: str) -> dict:
    return {"prompt": [{"role": "user", "content": prompt}],
            "chosen": [{"role": "assistant", "content": chosen}],
            "rejected": [{"role": "assistant", "content": rejected}]}


def test_pairs_dropped_and_truncated_by_max_length_are_counted(tmp_path, tiny_model, caplog):
    """Before, `pairs` counted the rows of pairs.jsonl, also those TRL then dropped or cut."""
    rows = [pair("Name a colour.", "Blue.", "no"),
            pair("Give a fruit.", "An apple.", "rock"),
            pair("word " * 120, "Fine.", "Bad."),  # the prompt alone exceeds max_length: dropped
            pair("Count.", "one two three " * 40, "four")]  # chosen cut at max_length
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps(row) + "\n" for row in rows))
    params = DpoParams(learning_rate=1e-3, final_learning_rate=1e-3, max_steps=1, batch_size=2,
                       max_length=64)
    caplog.set_level(logging.WARNING)
    metrics = run_dpo(params=Params(dpo=params, base=BaseParams(dtype="float32")),
                      model_dir=tiny_model, pairs_path=str(pairs), out_dir=tmp_path / "m2",
                      metrics_path=tmp_path / "dpo.json")
    assert (metrics["pairs"], metrics["pairs_kept"], metrics["pairs_dropped_for_length"],
            metrics["pairs_truncated"]) == (4, 3, 1, 1)
    assert json.loads((tmp_path / "dpo.json").read_text())["pairs_kept"] == 3
    assert "1 dropped" in caplog.text and "1 truncated" in caplog.text
