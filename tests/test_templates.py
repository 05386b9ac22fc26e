"""Templates: one-pass filling, and a user's own judge / pairwise template file."""

from __future__ import annotations

import pytest

from selfreward.config.errors import UserError
from selfreward.judge.pairwise import pairwise_messages, pairwise_template
from selfreward.judge.rubric import judge_messages, judge_template
from selfreward.templates import fill, user_template


def test_fill_never_rescans_inserted_text():
    text = fill("Q: {prompt}\nA: {response}", prompt="What is {response}?", response="{prompt}")
    assert text == "Q: What is {response}?\nA: {prompt}"


def test_pairwise_prompt_keeps_placeholder_text_in_answers_verbatim():
    content = pairwise_messages("Explain {response_2}.", "I use {prompt}", "B")[0]["content"]
    assert "Explain {response_2}." in content and "I use {prompt}" in content
    assert content.count("Explain {response_2}.") == 1 and content.count("I use {prompt}") == 1


def test_a_users_pairwise_template_is_used_and_checked(tmp_path):
    own = tmp_path / "pairwise.txt"
    own.write_text("Which is better for {prompt}? 1: {response_1} 2: {response_2}")
    text = pairwise_template(str(own))
    assert pairwise_messages("q", "a", "b", text)[0]["content"] == "Which is better for q? 1: a 2: b"
    bad = tmp_path / "bad.txt"
    bad.write_text("Judge {prompt}: {response_1}")
    with pytest.raises(UserError) as err:
        pairwise_template(str(bad))
    assert "{response_2}" in str(err.value) and "eval.pairwise_template" in err.value.format_message()
    with pytest.raises(UserError, match="not found"):
        pairwise_template(str(tmp_path / "missing.txt"))


def test_a_users_judge_template(tmp_path):
    own = tmp_path / "rubric.txt"
    own.write_text("Rate {response} for {prompt}.")
    user_template.cache_clear()
    rubric = judge_template(str(own))
    assert judge_messages("q", "a", rubric)[0]["content"] == "Rate a for q."
    own.write_bytes(b"Rate {response} for {prompt} \xff.")
    user_template.cache_clear()
    with pytest.raises(UserError, match="invalid UTF-8"):
        judge_template(str(own))
