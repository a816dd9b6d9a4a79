"""Answers parsed the way a person reads them: a table of replies in the styles of real model families.

Each row: (style, reply, answer type, options, expected canonical answer, or "FAIL: <part of the reason>").
"""

import re

import pytest

from rationale_distill.generation.parsing import (
    ParseFailure,
    canonical_number,
    find_answer,
    infer_answer_type,
    normalize,
    parse_number,
    same_answer,
)

M = "So the answer is"
ABCD = ["A", "B", "C", "D"]
QUEUES = ["billing", "technical", "account", "sales", "feedback"]

CASES = [
    # --- Distilling Step-by-Step style (our own prompts), with personas and sign-offs -------------------
    ("dss", "3 * 4 = 12. So the answer is 12.", "number", None, "12"),
    ("persona", "Arr, 12 + 8 be 20. So the answer is 20. Yo-ho!", "number", None, "20"),
    ("persona", "Ahoy! So the answer is 20 doubloons, matey.", "number", None, "20"),
    ("sign-off", "We add them. So the answer is 7.\n\nHope this helps!", "number", None, "7"),
    ("sign-off", "So the answer is blue. Let me know if you need anything else!", "text", None, "blue"),
    ("persona", "Mia's kite, arr. So the answer is Blue. Arr, matey!", "text", None, "blue"),
    ("dash", "So the answer is blue - arr!", "text", None, "blue"),
    ("aside", "So the answer is red (I am fairly sure).", "text", None, "red"),
    ("abbrev", "So the answer is Washington, D.C. Cheers.", "text", None, "washington, d.c"),
    ("last marker", "So the answer is 3? No. So the answer is 4.", "number", None, "4"),
    ("marker case", "so THE ANSWER IS 9", "number", None, "9"),
    ("marker colon", "So the answer is: 11", "number", None, "11"),
    ("marker bold", "So the answer is **14**.", "number", None, "14"),
    ("marker empty", "So the answer is", "number", None, "FAIL: nothing after the answer marker"),
    # --- numbers --------------------------------------------------------------------------------------
    ("first number", "So the answer is 25 apples (5 per box).", "number", None, "25"),
    ("leading dot", "So the answer is .5", "number", None, "0.5"),
    ("scientific", "So the answer is 1e3.", "number", None, "1000"),
    ("scientific", "So the answer is 2.5E-3", "number", None, "0.0025"),
    ("fraction", "So the answer is 3/4.", "number", None, "0.75"),
    ("decimal comma", "So the answer is 1,5", "number", None, "1.5"),
    ("thousands", "So the answer is 1,000,000.", "number", None, "1000000"),
    ("currency", "So the answer is $1,234.50.", "number", None, "1234.5"),
    ("currency", "So the answer is €30", "number", None, "30"),
    ("negative", "So the answer is -7", "number", None, "-7"),
    ("unicode minus", "So the answer is \u22123.", "number", None, "-3"),
    ("negative currency", "So the answer is -$5.", "number", None, "-5"),
    ("leading zeros", "So the answer is 007.", "number", None, "7"),
    ("percent", "So the answer is 45%.", "number", None, "45"),
    ("trailing zeros", "So the answer is 3.50", "number", None, "3.5"),
    ("float noise", "So the answer is 0.30000000000000004", "number", None, "0.3"),
    ("plus", "So the answer is +4", "number", None, "4"),
    ("not a number", "So the answer is many.", "number", None, "FAIL: is not a number"),
    # --- GPT-4 / GPT-4o style -------------------------------------------------------------------------
    ("gpt", "To find the total, multiply 3 by 4.\n\n**Answer:** 12", "number", None, "12"),
    ("gpt", "Let's compute step by step:\n1. 6 * 7 = 42\n\nFinal answer: 42", "number", None, "42"),
    ("gpt", "The store has 40 - 15 = 25 left.\n\n**25**", "number", None, "25"),
    ("gpt", "The correct answer is **C**.", "choice", ABCD, "C"),
    ("gpt json", '```json\n{"reasoning": "5 + 5", "answer": 10}\n```', "number", None, "10"),
    # --- Claude style ---------------------------------------------------------------------------------
    ("claude", "Looking at this carefully, 9 * 9 = 81.\n\nThe answer is 81.", "number", None, "81"),
    ("claude", "I need to find which queue owns refunds.\n\nThe answer is billing.", "choice", QUEUES, "billing"),
    ("claude", "Let me work through it.\n\nThe final answer is (B).", "choice", ABCD, "B"),
    # --- Llama / GSM8K style --------------------------------------------------------------------------
    ("gsm8k", "Natalia sold 48/2 = 24 clips in May.\nAltogether she sold 48+24 = 72 clips.\n#### 72", "number", None, "72"),
    ("gsm8k", "She pays 3*$2 = $6.\n#### $6", "number", None, "6"),
    # --- Qwen / DeepSeek / math models ----------------------------------------------------------------
    ("qwen", "The sum is $5+3=8$.\n\nTherefore, the answer is $\\boxed{8}$.", "number", None, "8"),
    ("qwen", "So we get \\boxed{\\frac{3}{4}} hmm, that is \\boxed{0.75}", "number", None, "0.75"),
    ("deepseek-r1", "<think>2+2 is 4, check: yes</think>\nThe answer is 4.", "number", None, "4"),
    ("deepseek-r1", "<think>Mia has the blue kite.</think>\n\n**Answer:** blue", "text", None, "blue"),
    ("boxed text", "Thus \\boxed{\\text{blue}}.", "text", None, "blue"),
    # --- Mistral / Gemma / small models ---------------------------------------------------------------
    ("gemma", "Step 1: 3 boxes x 4 = 12.\nStep 2: 12 - 2 = 10.\n10", "number", None, "10"),
    ("mistral", "Answer: D) Paris", "choice", ABCD, "D"),
    ("small", "42.", "number", None, "42"),
    ("small", "I think it is probably large.", "text", None, "FAIL: no answer marker"),
    ("small", "", "number", None, "FAIL: no answer marker"),
    # --- choices: letters -----------------------------------------------------------------------------
    ("choice", "I think B", "choice", ABCD, "B"),
    ("choice", "So the answer is I think B.", "choice", ABCD, "B"),
    ("choice", "So the answer is (b).", "choice", ABCD, "B"),
    ("choice", "So the answer is B) red.", "choice", ABCD, "B"),
    ("choice", "So the answer is b.", "choice", ABCD, "B"),
    ("choice", "So the answer is Option C, because it is red.", "choice", ABCD, "C"),
    ("choice", "So the answer is **D**.", "choice", ABCD, "D"),
    ("choice", "So the answer is A bit unclear, but C.", "choice", ABCD, "C"),
    ("choice", "So the answer is A.", "choice", ABCD, "A"),
    ("choice", "So the answer is E.", "choice", ABCD, "FAIL: is not one of the options"),
    ("choice", "So the answer is none of them.", "choice", ABCD, "FAIL: is not one of the options"),
    # --- choices: label strings -----------------------------------------------------------------------
    ("labels", "So the answer is billing. Have a great day!", "choice", QUEUES, "billing"),
    ("labels", "So the answer is Technical.", "choice", QUEUES, "technical"),
    ("labels", "So the answer is the **account** queue.", "choice", QUEUES, "account"),
    ("labels", "So the answer is sales, not billing.", "choice", QUEUES, "sales"),
    ("labels", "So the answer is shipping.", "choice", QUEUES, "FAIL: is not one of the options"),
    ("labels last line", "The customer wants a refund.\nbilling", "choice", QUEUES, "billing"),
]


@pytest.mark.parametrize("style,reply,answer_type,options,expected", CASES, ids=[f"{i}-{c[0]}" for i, c in enumerate(CASES)])
def test_replies_of_real_model_families(style, reply, answer_type, options, expected):
    if expected.startswith("FAIL: "):
        with pytest.raises(ParseFailure, match=expected[6:]):
            find_answer(reply, M, answer_type, options)
        return
    rationale, raw, answer = find_answer(reply, M, answer_type, options)
    assert answer == expected
    assert raw in reply or raw.replace(" ", "") in reply  # the answer as written is a piece of the reply
    assert not re.search(r"(?i)(answer\W*|####\s*|\\boxed\W*)$", rationale)  # no answer label left dangling


def test_the_table_is_big_and_varied():
    assert len(CASES) >= 60
    assert len({c[0] for c in CASES}) >= 20


def test_rationale_is_the_text_before_the_answer():
    rationale, raw, answer = find_answer("Arr, 12 + 8 be 20. So the answer is 20. Yo-ho!", M, "number")
    assert (rationale, raw, answer) == ("Arr, 12 + 8 be 20.", "20", "20")
    rationale, _, _ = find_answer("Natalia sold 24 clips.\n#### 72", M, "number")
    assert rationale == "Natalia sold 24 clips."
    rationale, _, answer = find_answer("<think>Mia has the blue kite.</think>\n\n**Answer:** blue", M, "text")
    assert rationale == "Mia has the blue kite." and answer == "blue"


@pytest.mark.parametrize(
    "text,value",
    [("1,000", 1000.0), ("1,5", 1.5), ("3/4", 0.75), (".5", 0.5), ("1e3", 1000.0), ("50%", 50.0), ("$-5", -5.0),
     ("007", 7.0), ("-$1,200.25", -1200.25), ("no digits", None), ("1/0", None)],
)  # fmt: skip
def test_parse_number(text, value):
    assert parse_number(text) == value


def test_numbers_vote_by_canonical_string_and_compare_by_value():
    assert {normalize(x, "number") for x in ("10", "10.0", "$10", "10.", "1e1", "10.000")} == {"10"}
    assert canonical_number(1 / 3) == "0.333333333333"
    assert same_answer("0.333333333333", normalize("0.3333333333333", "number"), "number")
    assert same_answer("1000", "1000.0000001", "number")
    assert not same_answer("1000", "1001", "number")
    assert not same_answer("blue", "Blue ", "text") and same_answer("blue", "blue", "text")


def test_answer_type_is_inferred_from_gold_labels():
    assert infer_answer_type([1, "2", "3.5", "1,000"])[0] == "number"
    kind, options, why = infer_answer_type(["billing", "sales", "billing", "Sales", "account", "billing"])
    assert kind == "choice" and options == ["account", "billing", "sales"] and "6 gold labels take 3 values" in why
    assert infer_answer_type(["b", "A", "a", "B"])[:2] == ("choice", ["A", "B"])
    assert infer_answer_type([f"answer {i}" for i in range(30)])[0] == "text"
    assert infer_answer_type([None, None]) == ("text", None, "no gold labels")
