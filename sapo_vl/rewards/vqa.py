"""Visual-QA verifiers: answer normalisation, the standard VQA metrics, multiple choice, and their rewards.

Metrics (each ``metric(pred: str, golds: list[str], **params) -> float`` in the registry :data:`VQA_METRICS`, where a
plug-in adds its own):

- ``"exact"``: normalised exact match (EvalAI's VQA answer processor, :func:`normalize_vqa`), max over golds.
- ``"vqa_soft"``: the VQA v2 accuracy, ``min(1, #annotators agreeing / 3)`` averaged over the leave-one-out subsets
  of the (usually 10) human answers (Antol et al. 2015; Goyal et al. 2017). With one gold it is ``"exact"``.
- ``"numeric"``: the prediction must hold exactly one number, within ``rel_tol`` (relative) of the gold's.
- ``"relaxed"``: a lenient ChartQA relaxed match (after Masry et al. 2022): numbers anywhere in the answer within
  5 % relative error (units, "%", separators, currency and number words read), other answers by normalised exact
  match. ChartQA's own definition is :func:`sapo_vl.evaluation.official.chartqa_relaxed_accuracy`.
- ``"anls"``: Average Normalized Levenshtein Similarity (DocVQA, Biten et al. 2019, eq. 1): ``1 - NL(pred, gold)``
  when ``NL < 0.5``, else 0, max over golds; compared lower-cased with collapsed whitespace, NL over the normalised
  lengths (the DocVQA script's, :func:`sapo_vl.evaluation.official.anls`, keeps 0.5 and uses raw lengths).
- ``"yesno"``: the polarity of the answer ("Yes.", "yes, it is" -> yes); an answer with both or neither is wrong.
- ``"ordered_words"`` / ``"ordered_words_partial"``: a list answer ("red, blue, red") word by word in order: all
  equal, or the fraction in place over the longer list (rewards of the same names).

No metric matches substrings: an empty answer scores 0, and "red green blue" is not "red" (a list-everything answer
must not collect reward). A gold that is only an article ("A", "The") is compared with its article kept
(:func:`answer_form`), so it can be matched. Percentages in ``numeric``/``relaxed``: a number written with ``%``
matches both its value and its value / 100, so "12%" matches 12 and 0.12. These are our verifiers, more lenient
than the benchmarks' own definitions (:mod:`sapo_vl.evaluation.official`), which ``sapo-vl eval`` reports first.

Multiple choice: :func:`extract_choice` reads the chosen letter by fixed priority rules and returns ``None`` when
nothing parses (scored wrong: never a guessed letter).
"""

from __future__ import annotations

import re
import string
from collections.abc import Sequence

from sapo_vl.rewards.text import (
    answer_span,
    as_list,
    clean_answer,
    completion_text,
    fallback_answer,
    strip_think,
)
from sapo_vl.registry import Registry

# --- VQA answer normalisation -------------------------------------------------------------------------------------
# EvalAI's answer processor (EvalAIAnswerProcessor of mmf, which lmms-eval uses), reimplemented exactly: the official
# VQA accuracy (sapo_vl.evaluation.official.vqa_accuracy) uses it too. "official:" marks a line that looks wrong but
# is what EvalAI does.

# EvalAI's contraction table. Every form below, with its apostrophe removed (with one of its apostrophes removed,
# when it has several: "couldnt've", "couldn'tve"), maps to the form. The table's four keys with capitals ("Im",
# "Ive", "Id've", "I'dve") never meet lower-cased text and its two identities ("let's", "she's") change nothing, so
# they are left out; a word that is also a contraction without its apostrophe ("its", "were", "hell") is absent.
_CONTRACTED = """ain't aren't can't could've couldn't couldn't've didn't doesn't don't hadn't hadn't've hasn't haven't
he'd he'd've he's how'd how'll how's isn't it'd it'd've it'll ma'am mightn't mightn't've might've mustn't must've
needn't not've o'clock oughtn't 'ow's'at shan't she'd've should've shouldn't shouldn't've somebody'd've somebody'll
somebody's someone'd someone'd've someone'll someone's something'd something'd've something'll that's there'd
there'd've there're there's they'd they'd've they'll they're they've 'twas wasn't we'd've we've weren't what'll
what're what's what've when's where'd where's where've who'd who'd've who'll who's who've why'll why're why's won't
would've wouldn't wouldn't've y'all y'all'll y'all'd've you'd you'd've you'll you're you've""".split()
CONTRACTIONS = {
    key: form
    for form in _CONTRACTED
    for key in ([form.replace("'", "")] if form.count("'") == 1 else
                [form[:i] + form[i + 1:] for i, c in enumerate(form) if c == "'"])
}
CONTRACTIONS["somebody'd"] = "somebodyd"  # official: this one entry runs backwards (and "somebodyd" is no key)
NUMBER_WORDS = {w: str(i) for i, w in enumerate("zero one two three four five six seven eight nine ten".split())}
NUMBER_WORDS["none"] = "0"

# EvalAI's punctuation list: no apostrophe, colon or full stop (the VQA API's own list differs: it has "'" and ":").
_PUNCTUATION = (";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?",
                "!")
_DIGIT_COMMA_DIGIT = re.compile(r"(?<=\d),+(?=\d)")
_PERIOD = re.compile(r"\.(?!\d)")  # official: written "(?!<=\d)(\.)(?!\d)", a lookahead typo with no effect
_ARTICLES = ("a", "an", "the")


def vqa_punctuation(text: str) -> str:
    """EvalAI's punctuation step: a mark with a space beside it anywhere in ``text`` (or any mark, when ``text``
    has a digit-comma-digit group) is deleted, else replaced by a space; full stops not before a digit go."""
    out = text
    delete_all = _DIGIT_COMMA_DIGIT.search(text) is not None
    for mark in _PUNCTUATION:
        if f"{mark} " in text or f" {mark}" in text or delete_all:  # official: decided on the input, not on `out`
            out = out.replace(mark, "")
        else:
            out = out.replace(mark, " ")
    return _PERIOD.sub("", out, count=32)  # official: `sub("", s, re.UNICODE)` passes re.UNICODE (32) as count


def vqa_digits_articles(text: str) -> str:
    """EvalAI's word step: lower-case, number words to digits, articles dropped, contractions restored."""
    words = [NUMBER_WORDS.get(w, w) for w in text.lower().split()]
    return " ".join(CONTRACTIONS.get(w, w) for w in words if w not in _ARTICLES)


def normalize_vqa(answer: str) -> str:
    """EvalAI's answer processor: lower-case; drop ``,`` and ``?``; ``'s`` -> `` 's``; newlines and tabs to spaces;
    punctuation (:func:`vqa_punctuation`); number words zero..ten and "none" to digits; articles dropped;
    apostrophe-less contractions restored.

    >>> normalize_vqa("Two dogs."), normalize_vqa("It's red"), normalize_vqa("dont know")
    ('2 dogs', "it 's red", "don't know")
    """
    text = answer.lower().replace(",", "").replace("?", "").replace("'s", " 's").strip()
    text = text.replace("\n", " ").replace("\t", " ").strip()
    return vqa_digits_articles(vqa_punctuation(text))


# --- metrics -------------------------------------------------------------------------------------------------------

def answer_form(text: str) -> str:
    """The form answers are compared in: :func:`normalize_vqa`, except that an answer made only of articles ("A",
    "The.") -- which normalisation empties -- keeps them (lower-cased), so an article-only gold stays matchable
    while an empty answer still matches nothing.

    >>> answer_form("The dog."), answer_form("A."), answer_form("")
    ('dog', 'a', '')
    """
    return normalize_vqa(text) or " ".join(vqa_punctuation(text.lower()).split())


def exact_match(pred: str, golds: Sequence[str]) -> float:
    """1.0 if the prediction's :func:`answer_form` equals any gold's, else 0.0. Empty never matches."""
    p = answer_form(pred)
    return float(bool(p) and any(p == answer_form(g) for g in golds))


def vqa_soft_accuracy(pred: str, golds: Sequence[str]) -> float:
    """VQA v2 accuracy: mean over each held-out annotator of ``min(1, matches among the others / 3)``."""
    if len(golds) < 2:
        return exact_match(pred, golds)
    p = answer_form(pred)
    if not p:
        return 0.0
    hits = [answer_form(g) == p for g in golds]
    total = sum(hits)
    return sum(min(1.0, (total - h) / 3.0) for h in hits) / len(hits)


_NUMBER = re.compile(
    r"(?<![\w.])[-+−]?[$€£]?(?:\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?(?:[eE][-+]?\d+)?|\.\d+)(\s*%)?(?![\d.]*\d)"
)


def extract_numbers(text: str) -> list[tuple[float, bool]]:
    """Every number in ``text`` as ``(value, written_with_percent)``; thousands separators, a currency sign,
    a unicode minus and the number words zero..ten are understood.

    >>> extract_numbers("about 1,234.5 or -3%")
    [(1234.5, False), (-3.0, True)]
    """
    words = [NUMBER_WORDS.get(w.lower(), w) for w in re.split(r"(\s+)", text)]
    out = []
    for m in _NUMBER.finditer("".join(words)):
        token = m.group(0).replace(",", "").replace("−", "-").replace("%", "").strip()
        token = token.replace("$", "").replace("€", "").replace("£", "")
        try:
            out.append((float(token), m.group(1) is not None))
        except ValueError:
            continue
    return out


def _candidates(value: float, percent: bool) -> tuple[float, ...]:
    return (value, value / 100.0) if percent else (value,)


def _close(a: float, b: float, rel_tol: float) -> bool:
    if b == 0.0:
        return abs(a) <= 1e-12
    return abs(a - b) <= rel_tol * abs(b)


def _numeric_or_exact(pred: str, gold: str, rel_tol: float) -> float:
    gold_numbers = extract_numbers(gold)
    if len(gold_numbers) != 1 or not re.fullmatch(r"[\s\d.,%$€£+\-−eE]*", gold.strip()):
        return exact_match(pred, [gold])  # a non-numeric gold
    pred_numbers = extract_numbers(pred)
    if len(pred_numbers) != 1:  # no number, or hedging over several
        return 0.0
    ps, gs = _candidates(*pred_numbers[0]), _candidates(*gold_numbers[0])
    return float(any(_close(p, g, rel_tol) for p in ps for g in gs))


def numeric_match(pred: str, golds: Sequence[str], rel_tol: float = 1e-4) -> float:
    """1.0 if the prediction's single number is within ``rel_tol`` (relative) of a gold number; a gold that is
    not a plain number is compared by normalised exact match."""
    return max((_numeric_or_exact(pred, g, rel_tol) for g in golds), default=0.0)


def relaxed_accuracy(pred: str, golds: Sequence[str], tolerance: float = 0.05) -> float:
    """A lenient ChartQA relaxed match: 5 % relative tolerance for numeric golds, normalised exact match otherwise.

    >>> relaxed_accuracy("10.4", ["10"]), relaxed_accuracy("10.6", ["10"])
    (1.0, 0.0)
    """
    return numeric_match(pred, golds, rel_tol=tolerance)


def levenshtein(a: str, b: str) -> int:
    """Edit distance (insertions, deletions, substitutions, unit costs)."""
    if len(a) < len(b):
        a, b = b, a
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def anls(pred: str, golds: Sequence[str], threshold: float = 0.5) -> float:
    """ANLS for one question: max over golds of ``1 - NL`` if ``NL < threshold`` else 0, where ``NL`` is the
    Levenshtein distance over the longer length (DocVQA; Biten et al. 2019, eq. 1).

    >>> round(anls("helo world", ["hello world"]), 4)
    0.9091
    """
    p = " ".join(pred.strip().lower().split())
    best = 0.0
    for gold in golds:
        g = " ".join(gold.strip().lower().split())
        longest = max(len(p), len(g))
        if longest == 0:
            continue
        if abs(len(p) - len(g)) / longest >= threshold:  # the length gap alone already fails the threshold
            continue
        nl = levenshtein(p, g) / longest
        if nl < threshold:
            best = max(best, 1.0 - nl)
    return best


def yes_no(text: str) -> str | None:
    """``"yes"`` / ``"no"`` if exactly one of the two words occurs in the answer, else ``None``.

    >>> yes_no("Yes, it is."), yes_no("No."), yes_no("yes or no") is None
    ('yes', 'no', True)
    """
    words = set(re.findall(r"[a-z]+", text.lower()))
    found = words & {"yes", "no"}
    return found.pop() if len(found) == 1 else None


def yes_no_match(pred: str, golds: Sequence[str]) -> float:
    """1.0 if the prediction's polarity equals a gold's."""
    polarity = yes_no(pred)
    return float(polarity is not None and any(polarity == yes_no(g) for g in golds))


def ordered_words_match(pred: str, golds: Sequence[str], partial: bool = False) -> float:
    """The answer's words (:func:`answer_form`: commas and case dropped) against a gold's, in order: 1.0 when the
    lists are equal, else 0.0; with ``partial``, the fraction of positions that agree over the longer list (a
    missing or an extra word costs). Max over golds."""
    words = answer_form(pred).split()
    scores = []
    for gold in golds:
        target = answer_form(gold).split()
        agree = sum(a == b for a, b in zip(words, target)) / max(len(words), len(target), 1)
        scores.append(agree if partial else float(words == target))
    return max(scores)


VQA_METRICS = Registry("VQA metric", {
    "exact": exact_match,
    "vqa_soft": vqa_soft_accuracy,
    "numeric": numeric_match,
    "relaxed": relaxed_accuracy,
    "anls": anls,
    "yesno": yes_no_match,
    "ordered_words": ordered_words_match,
    "ordered_words_partial": lambda pred, golds: ordered_words_match(pred, golds, partial=True),
})


# --- multiple choice -----------------------------------------------------------------------------------------------

_WRAPPERS = re.compile(r"^\\(?:text|textbf|mathrm|mathbf)\{(.*)\}$", re.DOTALL)
_CUE = re.compile(r"(?:answer|option|choice)[*_]*(?:\s+is)?[*_]*\s*[:：]?[*_ \t]*", re.IGNORECASE)
# After a cue: a bracketed letter (any case); an upper-case letter followed by punctuation or the end of the line;
# or, except for "A" and "I" (which are also words), an upper-case letter followed by a space ("is B because").
_CUED_LETTER = re.compile(
    r"\*{0,2}(?:[(\[]([A-Za-z])[)\]]|([A-Z])(?=\*{0,2}(?:[.,:;)!]|[ \t]*(?:\n|$)))|([B-HJ-Z])(?=\s))"
)
# After a cued letter: another letter joined by "and" / "or" / "," / "/" ("B and C", "A or B"): no single choice.
_HEDGE = re.compile(r"[)\]*_]*\s*(?:,|/|&|\band\b|\bor\b)\s*\*{0,2}[(\[]?[A-Z]\b(?!')")
_LEADING_MARKER = re.compile(r"^\s*\*{0,2}(?:[(\[]([A-Z])[)\]]|([A-Z])(?:[.:)]|\s+[-–]\s))")
_BRACKETED = re.compile(r"[(\[]([A-Z])[)\]]")


def _bare_letter(span: str) -> str | None:
    """The letter if ``span`` is nothing but one letter, with optional markdown, brackets, ``\\text{}`` and a
    trailing ``.``/``:``/``)``."""
    s = span.strip().strip("*_$ ").strip()
    m = _WRAPPERS.match(s)
    if m:
        s = m.group(1).strip()
    s = s.rstrip(".:)").lstrip("(").strip()
    if s.startswith("[") and s.endswith("]"):
        s = s[1:-1].strip()
    return s if len(s) == 1 and s.isalpha() else None


def _option_text_match(scope: str, choices: Sequence[str], letters: str) -> str | None:
    normalized = [normalize_vqa(str(c)) for c in choices]
    for candidate in (scope, fallback_answer(scope)):
        if not candidate:
            continue
        c = normalize_vqa(candidate)
        hits = [i for i, n in enumerate(normalized) if n and n == c]
        if len(hits) == 1 and hits[0] < len(letters):
            return letters[hits[0]]
    return None


def extract_choice(text: str, choices: Sequence[str] | None = None, letters: str | None = None) -> str | None:
    """The option letter a completion chose, or ``None`` when nothing parses (score that as wrong).

    Scope: the last ``\\boxed{}`` if any, else the last ``<answer>`` block, else the text after the think block
    (an unclosed think block -> ``None``). Within the scope, the first rule that applies wins:

    1. the scope is a lone letter: ``B``, ``(B)``, ``B.``, ``**B**``, ``\\text{B}`` (any case);
    2. the last cue "answer/option/choice (is|:) X", markdown allowed ("**Answer:** D", "**Answer**: (D)"): X
       bracketed (any case), an upper-case letter followed by punctuation or the end of the line, or a letter
       other than "A"/"I" followed by a space ("the answer is B because ..."); "the answer is A cat" is not a
       letter answer, and "B and C" / "B, C" / "B or C" is none;
    3. the last line that is a lone upper-case letter;
    4. the scope opens with a marker ``(B) ...``, ``B. ...``, ``B) ...``, ``B: ...`` and no other bracketed letter
       occurs ("A cat" has no marker; "(A) or (B)" is ambiguous);
    5. with ``choices``: the scope, or the text after an answer cue, equals exactly one option's text
       (VQA-normalised).

    Only letters in ``letters`` count (default: one per choice, else ``A``-``J``).

    >>> extract_choice("<think>maybe A</think>The answer is (B).")
    'B'
    >>> extract_choice("A cat is on the mat.") is None
    True
    >>> extract_choice("a dog", choices=["a cat", "a dog"])
    'B'
    """
    if letters is None:
        letters = string.ascii_uppercase[: len(choices)] if choices else "ABCDEFGHIJ"
    body = strip_think(text)
    if body is None:
        return None
    scope = answer_span(body, fallback=False) or body.strip()

    def valid(letter: str | None) -> str | None:
        return letter.upper() if letter and letter.upper() in letters else None

    found = valid(_bare_letter(scope))
    if found is None:
        cued = [m for cue in _CUE.finditer(scope) if (m := _CUED_LETTER.match(scope, cue.end()))]
        if cued and not _HEDGE.match(scope, cued[-1].end()):
            found = valid(next(g for g in cued[-1].groups() if g))
    if found is None:
        lines = [letter for line in scope.splitlines() if (letter := _bare_letter(line)) and letter.isupper()]
        found = valid(lines[-1]) if lines else None
    if found is None:
        m = _LEADING_MARKER.match(scope)
        if m:
            letter = m.group(1) or m.group(2)
            others = {x for x in _BRACKETED.findall(scope) if x != letter}
            found = None if others else valid(letter)
    if found is None and choices:
        found = _option_text_match(scope, choices, letters)
    return found


def _gold_letters(gold: object, choices: Sequence[str] | None, letters: str, i: int) -> set[str]:
    """The accepted letters of sample ``i``: from a letter, a 0-based index, an option's text, or a list of those."""
    if isinstance(gold, (list, tuple)):
        return set().union(*(_gold_letters(g, choices, letters, i) for g in gold)) if gold else set()
    if isinstance(gold, int) and not isinstance(gold, bool):
        if 0 <= gold < len(letters):
            return {letters[gold]}
        raise ValueError(f"mcq_reward: answer of sample {i} is index {gold}, outside the {len(letters)} options")
    if isinstance(gold, str):
        letter = _bare_letter(gold)
        if letter and letter.upper() in letters:
            return {letter.upper()}
        if choices:
            match = _option_text_match(gold, choices, letters)
            if match:
                return {match}
    raise ValueError(
        f"mcq_reward: answer of sample {i} must be an option letter in {letters!r}, an option index, or the text "
        f"of exactly one option; got {gold!r:.100}"
    )


def mcq_reward(
    completions: list,
    answer: list | None = None,
    choices: list | None = None,
    *,
    letters: str | None = None,
    **kwargs,
) -> list[float | None]:
    """Multiple-choice reward: 1.0 if the chosen letter (:func:`extract_choice`) is the gold one, else 0.0.

    Columns: ``answer`` (a letter, a 0-based index, an option's text, or a list of those when several options are
    right; ``None`` -> reward ``None``) and optional
    ``choices`` (the option texts per sample). A completion with no parsable choice scores 0.0.

    >>> mcq_reward(["The answer is (B).", "A", "I am not sure"], answer=["B", "B", "A"])
    [1.0, 0.0, 0.0]
    """
    if answer is None:
        raise ValueError("mcq_reward needs the dataset column 'answer' (gold letters), which was not passed")
    n = len(completions)
    answers = as_list(answer, n, "answer", "mcq_reward")
    options = as_list(choices, n, "choices", "mcq_reward") if choices is not None else [None] * n
    rewards: list[float | None] = []
    for i, (completion, gold, opts) in enumerate(zip(completions, answers, options)):
        if gold is None:
            rewards.append(None)
            continue
        if opts is not None and (isinstance(opts, str) or not isinstance(opts, Sequence)):
            raise TypeError(f"mcq_reward: choices of sample {i} must be a list of option texts, got {opts!r:.100}")
        sample_letters = letters or (string.ascii_uppercase[: len(opts)] if opts else "ABCDEFGHIJ")
        targets = _gold_letters(gold, opts, sample_letters, i)
        if not targets:
            raise ValueError(f"mcq_reward: answer of sample {i} is an empty list")
        chosen = extract_choice(completion_text(completion, index=i), opts, sample_letters)
        rewards.append(float(chosen in targets))
    return rewards


# --- free-form VQA reward ------------------------------------------------------------------------------------------

def extract_vqa_answer(text: str) -> str | None:
    """The answer span of a free-form VQA completion: last ``\\boxed{}`` > last ``<answer>`` block > answer cue >
    the whole text after the think block; ``\\text{}`` unwrapped. ``None`` if the think block never closes.

    >>> extract_vqa_answer("<think>it looks red</think>Red.")
    'Red'
    """
    body = strip_think(text)
    if body is None:
        return None
    span = answer_span(body) or clean_answer(body)
    if span is None:
        return None
    m = _WRAPPERS.match(span)
    return m.group(1).strip() if m else span


def vqa_reward(
    completions: list,
    answer: list | None = None,
    vqa_metric: str | list | None = None,
    *,
    metric_kwargs: dict | None = None,
    **kwargs,
) -> list[float | None]:
    """Free-form VQA reward through one of :data:`VQA_METRICS` (default ``"exact"``).

    Columns: ``answer`` (a string or a list of acceptable strings / human answers; ``None`` -> reward ``None``)
    and optional ``vqa_metric``: one metric name for all samples, or a per-sample column (``None`` entries mean
    ``"exact"``). ``metric_kwargs`` are passed to every metric call (e.g. ``{"threshold": 0.5}`` for ANLS).

    >>> vqa_reward(["<answer>Two</answer>", "red green blue", "7.2"], answer=["2", "red", "7"],
    ...            vqa_metric=["exact", "exact", "relaxed"])
    [1.0, 0.0, 1.0]
    """
    if answer is None:
        raise ValueError("vqa_reward needs the dataset column 'answer' (gold answers), which was not passed")
    n = len(completions)
    answers = as_list(answer, n, "answer", "vqa_reward")
    if vqa_metric is None or isinstance(vqa_metric, str):
        metrics = [vqa_metric] * n
    else:
        metrics = as_list(vqa_metric, n, "vqa_metric", "vqa_reward")
    rewards: list[float | None] = []
    for i, (completion, gold, metric) in enumerate(zip(completions, answers, metrics)):
        if gold is None:
            rewards.append(None)
            continue
        golds = [str(g) for g in gold] if isinstance(gold, (list, tuple)) else [str(gold)]
        fn = VQA_METRICS[VQA_METRICS.check("exact" if metric is None else metric, f"vqa_reward: sample {i}")]
        pred = extract_vqa_answer(completion_text(completion, index=i))
        rewards.append(0.0 if not pred else float(fn(pred, golds, **(metric_kwargs or {}))))
    return rewards


def ordered_words_reward(completions: list, answer: list | None = None, **kwargs) -> list[float | None]:
    """Every word of the gold answer in order, nothing else (a list answer such as ``synthetic_shapes_colors``'s):
    :func:`vqa_reward` with the metric ``"ordered_words"``, 1.0 or 0.0.

    >>> ordered_words_reward(["Red, blue, red.", "red, red, blue"], answer=["red, blue, red"] * 2)
    [1.0, 0.0]
    """
    return vqa_reward(completions, answer, "ordered_words")


def ordered_words_partial_reward(completions: list, answer: list | None = None, **kwargs) -> list[float | None]:
    """Partial credit for a list answer: the fraction of the gold's words in their place, over the longer list
    (:func:`vqa_reward` with the metric ``"ordered_words_partial"``).

    >>> ordered_words_partial_reward(["red, red, blue", "red, blue, red, red"], answer=["red, blue, red"] * 2)
    [0.3333333333333333, 0.75]
    """
    return vqa_reward(completions, answer, "ordered_words_partial")
