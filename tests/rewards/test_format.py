"""Format rewards: strict and lenient <think>/<answer> structure."""

import pytest

from sapo_vl.rewards.format import (
    format_reward,
    format_reward_lenient,
    is_lenient_format,
    is_strict_format,
    lenient_answer,
    strict_answer,
)


@pytest.mark.parametrize(
    "text",
    [
        "<answer>4</answer>",
        "<think>2+2</think><answer>4</answer>",
        "  <think>\n2+2\n</think>\n\n<answer>\n4\n</answer>\n  ",
        "<think></think><answer>4</answer>",
    ],
)
def test_strict_format_accepts_and_its_answer_is_the_block_content(text):
    assert is_strict_format(text)
    assert strict_answer(text) == "4"


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("4", "no answer block"),
        ("<answer></answer>", "empty answer"),
        ("<answer>   </answer>", "blank answer"),
        ("<answer>4</answer> Hope this helps!", "trailing text"),
        ("Sure! <answer>4</answer>", "leading text"),
        ("<answer>4</answer><answer>5</answer>", "two answer blocks"),
        ("<think>hm<answer>4</answer>", "unclosed think"),
        ("<think>a</think><think>b</think><answer>4</answer>", "two think blocks"),
        ("<answer>4</answer><think>b</think>", "think after the answer"),
        ("<think>a</think> text <answer>4</answer>", "text between blocks"),
        ("<answer>4", "unclosed answer"),
        ("<think>x <answer>3</answer></think><answer>4</answer>", "answer tag inside think"),
        ("</think><answer>4</answer>", "stray closing think tag"),
    ],
)
def test_strict_format_rejects_and_gives_no_answer(text, why):
    assert not is_strict_format(text), why
    assert strict_answer(text) is None, why


def test_strict_format_require_think():
    assert not is_strict_format("<answer>4</answer>", require_think=True)
    assert is_strict_format("<think>x</think><answer>4</answer>", require_think=True)


def test_strict_format_think_opened_in_prompt():
    assert is_strict_format("reasoning...</think>\n<answer>4</answer>", think_in_prompt=True)
    assert not is_strict_format("<think>r</think><answer>4</answer>", think_in_prompt=True)
    assert not is_strict_format("<answer>4</answer>", think_in_prompt=True)
    assert strict_answer("reasoning...</think>\n<answer>4</answer>", think_in_prompt=True) == "4"
    assert strict_answer("reasoning...</think>\n<answer>4</answer>") is None


def test_strict_format_custom_tags():
    text = "<reasoning>x</reasoning><final>4</final>"
    assert is_strict_format(text, think_tags=("<reasoning>", "</reasoning>"), answer_tags=("<final>", "</final>"))
    assert not is_strict_format(text)


def test_lenient_format():
    assert is_lenient_format("Sure. <answer>4</answer> Hope this helps!")
    assert is_lenient_format("<think>a</think>blah<answer>4</answer>")
    assert not is_lenient_format("<think>a <answer>4</answer>")
    assert not is_lenient_format("<answer> </answer>")
    assert not is_lenient_format("4")


def test_lenient_answer_is_the_last_answer_block_after_the_think_block():
    assert lenient_answer("<think><answer>1</answer></think> <answer>2</answer> or <answer> 3 </answer>") == "3"
    assert lenient_answer("<think>a <answer>4</answer>") is None
    assert lenient_answer("<answer> </answer>") is None


def test_format_reward_values_and_trl_kwargs():
    completions = ["<answer>4</answer>", "4", [{"role": "assistant", "content": "<answer>x</answer>"}]]
    assert format_reward(completions, prompts=["p"] * 3, answer=["4"] * 3) == [1.0, 0.0, 1.0]


def test_format_reward_lenient_values():
    assert format_reward_lenient(["ok <answer>4</answer> bye", "<answer></answer>"]) == [1.0, 0.0]
