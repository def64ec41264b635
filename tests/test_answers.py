"""The shared answer parser: tables of real-world answer shapes, and properties that must hold for any input."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from med_r1.answers import (
    choice_letter,
    extract_answer,
    is_correct,
    medr1_eval_answer,
    medr1_eval_correct,
    parse_choice,
    token_f1,
    yes_no,
)
from med_r1.prompts import medr1_eval_rule

OPTIONS = ["CT", "MRI", "X-ray", "Ultrasound"]


@pytest.mark.parametrize(
    "completion, letter",
    [
        ("<answer>B</answer>", "B"),
        ("<answer> b </answer>", "B"),
        ("<answer>(B)</answer>", "B"),
        ("<answer>B.</answer>", "B"),
        ("<answer>B) MRI</answer>", "B"),
        ("<answer>\nB\n</answer>", "B"),  # multi-line: Med-R1's regex misses it
        ("<think>A or B?</think><answer>MRI</answer>", "B"),  # option text instead of the letter
        ("<think>maybe A</think>\n<answer>The answer is B</answer>", "B"),
        ("<answer>A</answer> then <answer>C</answer>", None),  # tags that disagree name nothing
        ("<answer>C</answer> so <answer>C) X-ray</answer>", "C"),  # tags that agree count once
        ("<answer><answer>A</answer></answer>", "A"),  # nested
        ("<answer><answer>(A)</answer>", "A"),  # nested, the outer one never closed
        ("<answer>A", "A"),  # cut off after the answer
        ("<think>I put it in <answer>...</answer> tags</think><answer>D</answer>", "D"),  # quoted in the reasoning
        ("<think>so <answer>B</answer></think>", "B"),  # answered inside the reasoning only
        ("I think the answer is C.", "C"),  # untagged
        ("<think>...</think> D", "D"),
        ("<answer>E</answer>", None),  # beyond the options
        ("<answer>A lesion</answer>", None),  # 'A' as an article is not a letter
        ("<answer></answer>", None),
        ("", None),
        ("<answer>it is an ultrasound image</answer>", "D"),
        ("So the answer is $\\boxed{B}$.", "B"),  # untagged: the box, as R1-style and harness prompts ask
        ("<think>A?</think>\\boxed{\\text{C}}", "C"),
        ("\\boxed{A} or maybe \\boxed{D}", None),  # boxes that disagree name nothing
        ("<answer>A</answer> \\boxed{B}", "A"),  # a tag wins over a box
    ],
)
def test_parse_choice(completion, letter):
    assert choice_letter(extract_answer(completion), OPTIONS) == letter


def test_yes_no_options_and_closed_answers():
    assert parse_choice("Yes.", ["No, it's normal.", "Yes"]) == "B"
    assert yes_no("No, it is normal") == "no" and yes_no("maybe") is None
    assert is_correct("<answer>yes</answer>", "Yes", answer_type="closed") is True
    assert is_correct("<answer>no</answer>", "yes", answer_type="closed") is False
    assert is_correct("<answer>unsure</answer>", "yes", answer_type="closed") is None


def test_extract_reports_whether_tagged():
    assert extract_answer("<answer>A</answer>").tagged
    assert not extract_answer("<answer>A").tagged and extract_answer("<answer>A").text == "A"


def test_token_f1():
    assert token_f1("the left lung", "left lung") == 1.0
    assert token_f1("right lung", "left lung") == 0.5
    assert token_f1("", "x") == 0.0


@settings(max_examples=300, deadline=None)
@given(st.text(), st.lists(st.text(min_size=1, max_size=20), min_size=0, max_size=5))
def test_parser_never_raises(text, options):
    letter = parse_choice(extract_answer(text).text, options)
    assert letter is None or letter in "ABCDEFGHIJ"[: max(len(options), 0) or 10]


option_text = st.text(alphabet=st.characters(categories=["L", "N", "Zs"]), min_size=3, max_size=20).filter(str.strip)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(option_text, min_size=2, max_size=5, unique_by=lambda s: " ".join(s.split()).casefold()),
    st.data(),
)
def test_any_correctly_formatted_gold_answer_is_correct(options, data):
    index = data.draw(st.integers(0, len(options) - 1))
    letter = "ABCDE"[index]
    shape = data.draw(st.sampled_from(["{L}", "({L})", "{L}.", "{L}) {T}", " {l} ", "\n{L}\n"]))
    answer = shape.format(L=letter, l=letter.lower(), T=options[index])
    thought = data.draw(st.text(alphabet=st.characters(blacklist_characters="<>"), max_size=40))
    completion = f"<think>{thought}</think><answer>{answer}</answer>"
    assert is_correct(completion, letter, options) is True


HEDGES = ["tumor", "cyst", "x-ray", "y"]


@pytest.mark.parametrize(
    "completion, letter",
    [
        ("<think>Looking at the image, option A seems unlikely because the lesion", None),  # cut-off reasoning
        ("<think>the answer is a cyst, so", None),
        ("<answer>The answer is a cyst</answer>", "B"),  # 'a' is an article, the option text decides
        ("<answer>A or B</answer>", None),
        ("<answer>B or A</answer>", None),  # the order never matters
        ("<answer>B or C</answer>", None),
        ("<answer>C or B</answer>", None),
        ("<answer>B and C</answer>", None),
        ("<answer>D or A</answer>", None),
        ("<answer>either A or B</answer>", None),
        ("<answer>either B or A</answer>", None),
        ("<answer>A/B</answer>", None),
        ("<answer>B/A</answer>", None),
        ("<answer>A, B</answer>", None),
        ("<answer>B, A</answer>", None),
        ("<answer>(B) or (C)</answer>", None),
        ("<answer>B. or C.</answer>", None),
        ("<answer>The answer is B or C</answer>", None),
        ("<answer>B or C?</answer>", None),
        ("<answer>A or A or B</answer>", None),
        ("<answer>The answer is either A or B</answer>", None),
        ("<answer>A. B. C. D.</answer>", None),
        ("<answer>A) tumor B) cyst</answer>", None),
        ("<answer>Not A</answer>", None),
        ("<answer>B, not A</answer>", None),
        ("<answer>tumor or cyst</answer>", None),
        ("<answer>B because the wall is thin</answer>", "B"),
        ("<answer>B) cyst</answer>", "B"),
        ("<answer>I choose (B) for its thin wall</answer>", "B"),
    ],
)
def test_hedged_or_negated_answers_name_no_letter(completion, letter):
    assert choice_letter(extract_answer(completion), HEDGES) == letter


@pytest.mark.parametrize(
    "completion, letter",
    [
        ("<answer>MRI or CT</answer>", None),  # a two-letter option text counts as a named option too
        ("<answer>CT or MRI</answer>", None),
        ("<answer>an MRI, not a CT</answer>", None),
        ("<answer>CT</answer>", "A"),
        ("<answer>It is a CT scan</answer>", "A"),
        ("<answer>MRI</answer>", "B"),
    ],
)
def test_hedges_between_short_option_texts_name_no_letter(completion, letter):
    assert choice_letter(extract_answer(completion), ["CT", "MRI", "X-Ray", "Ultrasound"]) == letter


def test_an_option_whose_text_joins_letters_is_no_hedge():
    options = ["Hepatitis A or B", "HIV"]
    assert parse_choice("Hepatitis A or B", options) == "A"
    assert parse_choice("The answer is Hepatitis A or B", options) == "A"
    assert parse_choice("B and I am sure", ["CT", "MRI"]) == "B"  # 'I' names no option of two


CONNECTORS = [" or ", " and ", "/", ", ", " / ", " & ", ", or "]


@settings(max_examples=300, deadline=None)
@given(st.integers(2, 5), st.data())
def test_a_hedge_between_two_options_is_never_credited(n_options, data):
    options = ["CT", "MRI", "X-ray", "Ultrasound", "PET"][:n_options]
    first, second = data.draw(st.lists(st.sampled_from("ABCDE"[:n_options]), min_size=2, max_size=2, unique=True))
    joined = first + data.draw(st.sampled_from(CONNECTORS)) + second
    shape = data.draw(st.sampled_from(["{}", "either {}", "The answer is {}", "({})", "{}?", "I think {}."]))
    wrap = data.draw(st.sampled_from(["<answer>{}</answer>", "<think>x</think><answer>{}</answer>", "{}"]))
    completion = wrap.format(shape.format(joined))
    assert choice_letter(extract_answer(completion), options) is None
    for gold in (first, second):  # whichever is right, the hedge is not
        assert not is_correct(completion, gold, options)


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 4), st.sampled_from(["{L}", "({L})", "{L}.", "{L}) {T}", " {l} "]), st.integers(0, 3))
def test_nested_answer_tags_read_the_innermost(depth, shape, index):
    letter = "ABCD"[index]
    inner = shape.format(L=letter, l=letter.lower(), T=OPTIONS[index])
    completion = "<think>x</think>" + "<answer>" * depth + inner + "</answer>" * depth
    assert is_correct(completion, letter, OPTIONS) is True


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(["{L}", "({L})", "{L}.", "{L}) {T}", "{T}"]), min_size=2, max_size=4), st.data())
def test_several_answer_tags_count_once_when_they_agree_and_never_when_they_disagree(shapes, data):
    index = data.draw(st.integers(0, 3))
    tags = ["<answer>" + shape.format(L="ABCD"[index], T=OPTIONS[index]) + "</answer>" for shape in shapes]
    agreeing = "<think>x</think>" + " ".join(tags)
    assert is_correct(agreeing, "ABCD"[index], OPTIONS) is True
    other = data.draw(st.integers(0, 3).filter(lambda i: i != index))
    at = data.draw(st.integers(0, len(tags)))
    disagreeing = " ".join(tags[:at] + [f"<answer>{'ABCD'[other]}</answer>"] + tags[at:])
    for gold in ("ABCD"[index], "ABCD"[other]):
        assert is_correct(disagreeing, gold, OPTIONS) is None  # unparseable: no credit, whichever is right


def test_option_texts_that_look_like_letters():
    assert parse_choice("E. coli", ["E. coli", "S. aureus", "C. difficile", "K. pneumoniae", "P. aeruginosa"]) == "A"
    assert parse_choice("C. difficile", ["C. difficile", "E. coli"]) == "A"
    assert parse_choice("Hepatitis B", ["Hepatitis B virus", "HIV"]) is None  # a letter inside a word is no answer


def test_closed_answers_that_are_not_yes_or_no():
    assert is_correct("<answer>Lung</answer>", "lung", answer_type="closed") is True  # SLAKE 'heart or lung?'
    assert is_correct("<answer>heart</answer>", "Lung", answer_type="closed") is False
    assert is_correct("<answer>No idea</answer>", "no", answer_type="closed") is None


MEDR1_EVAL_CASES = [
    # output, counted correct (gold B) by Med-R1's scripts reading with "tag", "raw", "tag_if_answer"
    ("<think>x</think><answer>B</answer>", True, False, True),
    ("<answer> B </answer>", True, False, True),
    ("<answer>\nB\n</answer>", True, False, True),  # \s spans the newlines
    ("<answer>B) MRI</answer>", False, False, False),  # one word only
    ("<answer>(B)</answer>", False, False, False),
    ("<answer>b</answer>", False, False, False),  # case-sensitive
    ("<answer>B</answer><answer>A</answer>", True, False, True),  # the first match
    ("<answer>A</answer><answer>B</answer>", False, False, False),
    ("<answer><answer>B</answer></answer>", True, False, True),
    ("<answer>B or C</answer>", False, False, False),
    ("B", False, True, True),  # no tag: only the raw scripts count it
    ("B ", False, False, False),  # the raw output is compared as is, not stripped
    ("The answer is B", False, False, False),
    ("", False, False, False),
]


@pytest.mark.parametrize("output, tag, raw, tag_if_answer", MEDR1_EVAL_CASES)
def test_medr1_eval_scorer(output, tag, raw, tag_if_answer):
    for rule, expected in (("tag", tag), ("raw", raw), ("tag_if_answer", tag_if_answer)):
        assert medr1_eval_correct(output, "B", rule) is expected, rule
        assert medr1_eval_correct(output, "<answer> B </answer>", rule) is expected  # Med-R1's gold string too


def test_which_medr1_script_scores_which_prompt():
    assert (
        medr1_eval_rule("medr1_eval_think", "qwen2_vl") == medr1_eval_rule("medr1_eval_think", "qwen2_5_vl") == "tag"
    )
    assert medr1_eval_rule("medr1_eval_nothink", "qwen2_vl") == "raw"  # test_qwen2vl_vqa_nothink.py
    assert medr1_eval_rule("medr1_eval_nothink", "qwen2_5_vl") == "tag_if_answer"  # test_qwen2_5vl_vqa_nothink.py
    assert medr1_eval_rule("medr1_zeroshot", "qwen2_5_vl") == "raw"  # the zero-shot script: raw output
    assert medr1_eval_rule("open_think") == medr1_eval_rule("{Question} Answer.") == "tag"
    assert medr1_eval_answer("<answer>C</answer>", "raw") == "<answer>C</answer>"
    with pytest.raises(ValueError, match="unknown Med-R1 scoring rule"):
        medr1_eval_answer("B", "strip")
