"""ANLS (sapo_vl.evaluation.official.anls): cases derived from Biten et al. 2019 eq. 1 as the DocVQA / InfographicVQA
evaluation script computes it: 1 - min NL over the answers, where NL is the edit distance of the lower-cased,
whitespace-collapsed strings over the longer raw upper-cased length; scores below 0.5 become 0, 0.5 itself stays."""

import pytest

from sapo_vl.evaluation.official import anls

CASES = [
    # exact after lower-casing and whitespace collapsing
    ("hello", ["hello"], 1.0),
    ("Hello", ["hello"], 1.0),
    ("HELLO", ["hello"], 1.0),
    ("hello world", ["Hello  World"], 1.0),
    ("  hello  world ", ["hello world"], 1.0),
    ("tab\tsep", ["tab sep"], 1.0),
    ("line\nbreak", ["line break"], 1.0),
    ("abc", ["ABC "], 1.0),
    ("new york", ["New York", "NYC"], 1.0),
    ("invoice", ["receipt", "invoice"], 1.0),
    ("x", ["a", "x"], 1.0),
    ("A", ["a"], 1.0),
    ("", [""], 1.0),  # two empty strings: NL 0
    ("", ["", "a"], 1.0),
    # partial credit: 1 - distance / longer length
    ("helo", ["hello"], 0.8),
    ("hell", ["hello"], 0.8),
    ("hellp", ["hello"], 0.8),
    ("abc", ["abd"], 1 - 1 / 3),
    ("ab", ["abc"], 1 - 1 / 3),
    ("ny", ["NYC"], 1 - 1 / 3),
    ("helo world", ["hello world"], 1 - 1 / 11),
    ("abcdefgh", ["abcdefxy"], 0.75),
    ("1,000", ["1000"], 0.8),
    ("résumé", ["resume"], 1 - 2 / 6),
    ("kitten", ["sitting"], 1 - 3 / 7),
    ("sitting", ["kitten"], 1 - 3 / 7),
    ("abcde", ["abcdx", "abxyz"], 0.8),  # the nearest answer counts
    ("abcde", ["abxyz", "abcdx"], 0.8),
    ("$1,234.00", ["$1,234"], 1 - 3 / 9),
    ("12 march 2004", ["12 March, 2004"], 1 - 1 / 14),
    ("Dr. Smith", ["dr smith"], 1 - 1 / 9),
    ("ACME Inc", ["acme inc."], 1 - 1 / 9),
    # NL exactly 0.5 keeps 0.5 (the script zeroes only scores below 0.5)
    ("abcd", ["abxy"], 0.5),
    ("abcdef", ["abcxyz"], 0.5),
    ("flaw", ["lawn"], 0.5),
    ("12", ["12.0"], 0.5),
    ("$5", ["5"], 0.5),
    ("5", ["$5"], 0.5),
    ("ab", ["ac"], 0.5),
    ("ab", ["a"], 0.5),
    # below 0.5: zero
    ("abcd", ["axyz"], 0.0),
    ("12", ["12.00"], 0.0),
    ("a", ["b"], 0.0),
    ("ab", ["ba"], 0.0),
    ("abcd", ["dcba"], 0.0),
    ("", ["abc"], 0.0),
    ("abc", [""], 0.0),
    ("Total: 42", ["42"], 0.0),
    ("the answer is 42", ["42"], 0.0),
    ("42 dollars", ["42"], 0.0),
    ("0", ["zero"], 0.0),
    ("yes", ["no"], 0.0),
    # the denominator is the raw length: extra spaces soften the distance
    ("helo   world", ["hello world"], 1 - 1 / 12),
    (" helo world ", ["hello world"], 1 - 1 / 12),
    ("helo world", ["  hello world  "], 1 - 1 / 15),
    ("ab    ", ["ac"], 1 - 1 / 6),
    ("a  b  c  d", ["abcd"], 1 - 3 / 10),
    ("x     y", ["x  z"], 1 - 1 / 7),
    # ... and upper-cased: "ß" is "SS", "ﬁ" is "FI"
    ("ß", ["s"], 0.5),
    ("ﬁle", ["file"], 0.5),
    ("straße", ["strasse"], 1 - 2 / 7),
    ("ßß", ["ss"], 0.5),
]


@pytest.mark.parametrize(("prediction", "answers", "expected"), CASES)
def test_anls(prediction, answers, expected):
    assert anls(prediction, answers) == pytest.approx(expected, abs=1e-12)


def test_the_table_is_large_enough():
    assert len(CASES) >= 60


def test_issue9_official_anls_keeps_half_and_divides_by_raw_lengths():
    """Issue 9: the vqa verifier's ANLS zeroes NL = 0.5 (the paper's rule) and divides by normalised lengths."""
    from sapo_vl.rewards.vqa import anls as verifier_anls

    assert anls("abcd", ["abxy"]) == 0.5 and verifier_anls("abcd", ["abxy"]) == 0.0
    assert anls("helo   world", ["hello world"]) == pytest.approx(1 - 1 / 12)
    assert verifier_anls("helo   world", ["hello world"]) == pytest.approx(1 - 1 / 11)


@pytest.mark.parametrize(("prediction", "answers", "error", "match"), [
    ("x", [], ValueError, "answers needs at least 1"),
    ("x", "x", TypeError, "answers must be a list of str"),
    ("x", ["x", 3], TypeError, r"answers\[1\] must be a str"),
    (None, ["x"], TypeError, "prediction must be a str"),
])
def test_bad_input_is_a_clear_error(prediction, answers, error, match):
    with pytest.raises(error, match=f"anls: {match}"):
        anls(prediction, answers)
