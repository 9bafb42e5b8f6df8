"""ChartQA relaxed accuracy (sapo_vl.evaluation.official): cases derived from its definition (Masry et al. 2022 §5.1;
pix2struct's relaxed_correctness): within 5 % of a numeric target, else a case-insensitive exact string match."""

import pytest

from sapo_vl.evaluation.official import chartqa_relaxed_accuracy

CASES = [
    # numbers: |pred - target| / |target| <= 0.05
    ("10", "10", 1.0),
    ("10.5", "10", 1.0),  # exactly 5 %
    ("9.5", "10", 1.0),
    ("10.51", "10", 0.0),
    ("9.49", "10", 0.0),
    ("105", "100", 1.0),
    ("95", "100", 1.0),
    ("94.9", "100", 0.0),
    ("-10", "-10.4", 1.0),
    ("10", "-10", 0.0),
    ("2.0", "2", 1.0),
    ("2", "2.0", 1.0),
    ("3", "3.15", 1.0),
    ("3", "3.16", 0.0),
    ("1000000", "1050000", 1.0),
    ("0.52", "0.5", 1.0),
    ("1.05", "1", 0.0),  # 1.05 - 1 is 0.050000000000000044 in floating point: just over
    ("1e3", "1000", 1.0),
    ("1000", "1e3", 1.0),
    ("1_000", "1000", 1.0),  # Python's float() reads underscores
    (" 12 ", "12", 1.0),  # ... and surrounding spaces
    ("12", " 12 ", 1.0),
    ("٣", "3", 1.0),  # ... and other scripts' digits
    # a target of 0 is falsy: the string comparison decides
    ("0", "0", 1.0),
    ("0.0", "0", 0.0),
    ("-0", "0", 0.0),
    ("0.01", "0", 0.0),
    # percentages: a trailing "%" divides by 100
    ("12%", "12", 0.0),
    ("12%", "0.12", 1.0),
    ("12", "12%", 0.0),
    ("0.12", "12%", 1.0),
    ("12%", "12%", 1.0),
    ("50%", "0.5", 1.0),
    ("50 %", "0.5", 1.0),
    ("50%%", "0.5", 1.0),
    ("10.0%", "0.1", 1.0),
    ("%", "%", 1.0),
    # not numbers to float(): compared as text
    ("1,234", "1234", 0.0),
    ("1234", "1,234", 0.0),
    ("1,234", "1,234", 1.0),
    ("$5", "5", 0.0),
    ("5", "$5", 0.0),
    ("five", "5", 0.0),
    ("1/2", "0.5", 0.0),
    ("½", "0.5", 0.0),
    ("0x10", "16", 0.0),
    ("16", "0x10", 0.0),
    # non-finite numbers never fall within 5 %
    ("nan", "10", 0.0),
    ("10", "nan", 0.0),
    ("inf", "inf", 0.0),
    ("Infinity", "inf", 0.0),
    # text: lower-cased, nothing else
    ("Yes.", "Yes", 0.0),
    ("yes", "Yes", 1.0),
    ("YES", "yes", 1.0),
    ("Yes ", "Yes", 0.0),
    ("Germany", "germany", 1.0),
    ("Germany ", "germany", 0.0),
    ("United States", "united states", 1.0),
    ("United  States", "united states", 0.0),
    ("A", "a", 1.0),  # an article-only gold is an ordinary string here
    ("The", "the", 1.0),
    ("None", "none", 1.0),
    ("", "", 1.0),
    ("", "0", 0.0),
    ("0", "", 0.0),
    ("Germany France", "germany", 0.0),
]


@pytest.mark.parametrize(("prediction", "target", "expected"), CASES)
def test_relaxed_accuracy(prediction, target, expected):
    assert chartqa_relaxed_accuracy(prediction, target) == expected


def test_the_table_is_large_enough():
    assert len(CASES) >= 60


def test_issue9_official_chartqa_is_stricter_than_the_vqa_verifier():
    """Issue 9: the vqa verifier's relaxed match accepts these; the official definition does not."""
    from sapo_vl.rewards.vqa import relaxed_accuracy

    for prediction, target in [("12%", "12"), ("1,234", "1234"), ("$5", "5"), ("five", "5"), ("Yes.", "Yes")]:
        assert relaxed_accuracy(prediction, [target]) == 1.0
        assert chartqa_relaxed_accuracy(prediction, target) == 0.0


@pytest.mark.parametrize(("prediction", "target", "name"), [(12, "12", "prediction"), ("12", None, "target")])
def test_a_non_string_is_a_clear_error(prediction, target, name):
    with pytest.raises(TypeError, match=f"chartqa_relaxed_accuracy: {name} must be a str"):
        chartqa_relaxed_accuracy(prediction, target)
