"""The benchmarks' own metrics, reimplemented from their papers and official scripts, oddities included, so that a
score from ``sapo-vl eval`` can be set beside a published one. The training verifiers (``sapo_vl.rewards``) stay
our own; ``eval/README.md`` says per task how the two differ.

Each definition follows its reference exactly; a comment marked ``official:`` explains a line that looks wrong but
is what the reference does. Sources:

- ChartQA relaxed accuracy: Masry et al. 2022 (arXiv 2203.10244) §5.1 after Methani et al. 2020, as computed by
  ``relaxed_correctness`` in pix2struct's ``metrics.py`` (Lee et al. 2023), the function lmms-eval and Qwen-VL use.
- ANLS: Biten et al. 2019 (arXiv 1907.00490) eq. 1, as the DocVQA / InfographicVQA evaluation script of the RRC
  site computes it (Mathew et al. 2021).
- VQA accuracy: Antol et al. 2015, Goyal et al. 2017: EvalAI's answer processor (``EvalAIAnswerProcessor`` of
  mmf, used by lmms-eval; :func:`sapo_vl.rewards.vqa.normalize_vqa`, which the vqa verifier shares) and the
  leave-one-annotator-out ``min(#matches / 3, 1)`` of the VQA API's ``vqaEval.py``, with lmms-eval's
  ``vqav2_process_results`` ordering of the two.
- MathVista: Lu et al. 2024, ``evaluation/calculate_score.py`` (``normalize_extracted_answer`` + ``safe_equal``).
- MMMU: Yue et al. 2024, ``eval/eval_utils.py`` (``parse_multi_choice_response``, ``parse_open_response``,
  ``eval_multi_choice``, ``eval_open``).
- AIME: the answer is an integer from 0 to 999 (MAA rules); scored by integer equality.

:data:`OFFICIAL` names them for task files (``official: anls``): each entry scores one completion of one record.
"""

from __future__ import annotations

import ast
import random
import re
from collections.abc import Sequence

from sapo_vl.registry import Registry
from sapo_vl.rewards.text import answer_span, strip_think
from sapo_vl.rewards.vqa import levenshtein, normalize_vqa, vqa_digits_articles, vqa_punctuation


def _text(value: object, name: str, fn: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{fn}: {name} must be a str, got {type(value).__name__} {value!r:.80}")
    return value


def _texts(values: object, name: str, fn: str, minimum: int = 1) -> list[str]:
    if isinstance(values, str) or not isinstance(values, Sequence):
        raise TypeError(f"{fn}: {name} must be a list of str, got {type(values).__name__} {values!r:.80}")
    if len(values) < minimum:
        raise ValueError(f"{fn}: {name} needs at least {minimum} entries, got {len(values)}")
    return [_text(v, f"{name}[{i}]", fn) for i, v in enumerate(values)]


# ------------------------------------------------------------------------------------------------------ ChartQA

def _chartqa_float(text: str) -> float | None:
    try:
        if text.endswith("%"):
            return float(text.rstrip("%")) / 100.0  # official: "12%" is 0.12 (and "12%%" too: rstrip takes all)
        return float(text)  # official: Python's float(): " 12 ", "1e3", "1_000", "nan" parse; "1,000", "$5" do not
    except ValueError:
        return None


def chartqa_relaxed_accuracy(prediction: str, target: str) -> float:
    """ChartQA relaxed accuracy of one answer: 1.0 when both parse as numbers and the prediction is within 5 % of
    the target (relative), else 1.0 only on a case-insensitive exact string match.

    Nothing else is normalised: "Yes." is not "Yes", "12%" is 0.12 (not 12), "1,234" and "$5" are text. A target of 0
    is compared as a string (official: the numeric branch needs a truthy target, so "0.0" does not match "0").

    >>> [chartqa_relaxed_accuracy(p, t) for p, t in [("10.4", "10"), ("12%", "12"), ("No", "no")]]
    [1.0, 0.0, 1.0]
    """
    fn = "chartqa_relaxed_accuracy"
    prediction, target = _text(prediction, "prediction", fn), _text(target, "target", fn)
    pred_value, target_value = _chartqa_float(prediction), _chartqa_float(target)
    if pred_value is not None and target_value:  # official: a target of 0 (falsy) falls to the string comparison
        return float(abs(pred_value - target_value) / abs(target_value) <= 0.05)
    return float(prediction.lower() == target.lower())


# ---------------------------------------------------------------------------------------------------------- ANLS

def anls(prediction: str, answers: list[str]) -> float:
    """ANLS of one question (DocVQA, InfographicVQA): ``1 - min NL`` over the answers, 0 when that is below 0.5.

    ``NL`` is the Levenshtein distance between the lower-cased, whitespace-collapsed strings, divided by the longer
    of the two *raw* strings' upper-cased lengths (official: the denominator skips the normalisation, so extra
    spaces in the prediction lengthen it and soften the distance). A score of exactly 0.5 is kept (official: the
    script zeroes ``< 0.5``; the paper's eq. 1 keeps only ``NL < 0.5``). Two empty strings score 1.

    >>> anls("helo world", ["Hello World"]), anls("abcd", ["abxy"]), anls("abcd", ["wxyz"])
    (0.9090909090909091, 0.5, 0.0)
    """
    prediction = _text(prediction, "prediction", "anls")
    answers = _texts(answers, "answers", "anls")
    predicted = " ".join(prediction.strip().lower().split())
    distances = []
    for answer in answers:
        gold = " ".join(answer.strip().lower().split())
        length = max(len(answer.upper()), len(prediction.upper()))  # official: raw lengths; "ß".upper() is "SS"
        distances.append(0.0 if length == 0 else levenshtein(gold, predicted) / length)
    score = 1 - min(distances)
    return 0.0 if score < 0.5 else score


# ----------------------------------------------------------------------------------------------------------- VQA

def vqa_accuracy(prediction: str, answers: list[str]) -> float:
    """VQA accuracy of one question: for each of the (10) human answers held out in turn, ``min(#others equal to
    the prediction / 3, 1)``; the mean over the held-out ones.

    The prediction goes through EvalAI's answer processor (:func:`sapo_vl.rewards.vqa.normalize_vqa`). The human
    answers are only stripped while they all agree (official: then they are compared as written, so a unanimous
    "Yes" never matches); once they differ, they and the prediction also go through the punctuation and
    digit/article steps. Leave-one-out is by position (VQA answers carry distinct ids). At least two answers are
    required: with one, every prediction scores 0.

    >>> vqa_accuracy("two", ["2"] * 3 + ["3"] * 7), vqa_accuracy("3", ["2"] * 3 + ["3"] * 7)
    (0.9, 1.0)
    """
    prediction = normalize_vqa(_text(prediction, "prediction", "vqa_accuracy"))
    golds = [a.replace("\n", " ").replace("\t", " ").strip() for a in _texts(answers, "answers", "vqa_accuracy", 2)]
    if len(set(golds)) > 1:
        golds = [vqa_digits_articles(vqa_punctuation(g)) for g in golds]
        prediction = vqa_digits_articles(vqa_punctuation(prediction))  # official: processed a second time
    matches = [g == prediction for g in golds]
    return sum(min(1.0, (sum(matches) - m) / 3) for m in matches) / len(golds)


# ----------------------------------------------------------------------------------------------------- MathVista

def mathvista_normalize(extraction: str, choices: list[str], question_type: str, answer_type: str,
                        precision: int | float | None) -> str | None:
    """MathVista's ``normalize_extracted_answer``: the extracted answer in the gold answer's form.

    Multiple choice: the first ``(x)`` gives the letter (any case); a letter in range is its option's text;
    anything else becomes the option nearest by edit distance (official: a guess; an empty answer picks the
    shortest option). Free form: integer -> ``str(int(float(x)))``, float -> ``str(round(float(x), precision))``,
    list -> ``str(x)``, anything unparsable -> ``None``; other answer types pass through.
    """
    if question_type == "multi_choice":
        extraction = extraction.strip()
        letters = re.findall(r"\(([a-zA-Z])\)", extraction)
        if letters:
            extraction = letters[0].upper()
        options = [chr(ord("A") + i) for i in range(len(choices))]
        if extraction in options:
            return choices[options.index(extraction)]
        distances = [levenshtein(extraction, choice) for choice in choices]
        return choices[distances.index(min(distances))]  # official: the first of equally near options
    try:
        if answer_type == "integer":
            return str(int(float(extraction)))
        if answer_type == "float":  # official: an int in the release JSON (a float, NaN when unset, in its Parquet)
            return str(round(float(extraction), None if precision is None else int(precision)))
    except (ValueError, TypeError, OverflowError):
        return None
    return str(extraction)


def mathvista_accuracy(extraction: str, answer: str, *, choices: list[str] | None = None,
                       question_type: str = "free_form", answer_type: str = "text",
                       precision: int | float | None = None) -> float:
    """1.0 when :func:`mathvista_normalize` of the extraction equals the gold ``answer`` string exactly (for
    multiple choice the gold is the option's text). official: the gold is not normalised, so "0.10" is never
    matched by a float answer (``str(round(0.1, 2))`` is "0.1").
    """
    fn = "mathvista_accuracy"
    extraction, answer = _text(extraction, "extraction", fn), _text(answer, "answer", fn)
    if question_type == "multi_choice":
        choices = _texts(choices, "choices", fn)
    return float(mathvista_normalize(extraction, choices or [], question_type, answer_type, precision) == answer)


# ---------------------------------------------------------------------------------------------------------- MMMU

def mmmu_parse_multi_choice(response: str, all_choices: list[str], index2ans: dict[str, str],
                            rng: random.Random | None = None) -> str:
    """MMMU's ``parse_multi_choice_response``: the letter a response chose.

    In order: letters written ``(B)``; else letters standing alone `` B ``; else, for a response of more than 5
    words, options whose text occurs in it. Several candidates: the one that occurs last. None: a random letter
    (official: a guess, drawn from ``random`` seeded with 42 at import; ``rng`` defaults to ``Random(42)``, the
    official script's first draw).
    """
    for mark in (",", ".", "!", "?", ";", ":", "'"):
        response = response.strip(mark)  # official: one mark at a time, so ".," is stripped but ",." only to "."
    response = f" {response} "
    candidates = [c for c in all_choices if f"({c})" in response]
    bracketed, by_letter = bool(candidates), True
    if not candidates:
        candidates = [c for c in all_choices if f" {c} " in response]
    if not candidates and len(response.split()) > 5:
        candidates = [c for c, text in index2ans.items() if text.lower() in response.lower()]
        by_letter = False
    if not candidates:
        return (rng or random.Random(42)).choice(all_choices)
    if len(candidates) == 1:
        return candidates[0]
    if not by_letter:
        positions = [response.lower().rfind(index2ans[c].lower()) for c in candidates]
    else:
        positions = [response.rfind(f"({c})" if bracketed else f" {c} ") for c in candidates]
    return candidates[positions.index(max(positions))]  # official: np.argmax, the first of equal positions


_MMMU_NUMBERS = (
    re.compile(r"-?\b\d{1,3}(?:,\d{3})+\b"),  # with thousands commas
    re.compile(r"-?\d+(?:\.\d+)?[eE][+-]?\d+"),  # scientific
    re.compile(r"-?(?:\d+\.\d+|\.\d+|\d+\b)(?![eE][+-]?\d+)(?![,\d])"),  # plain
)
_MMMU_CUES = ("could be ", "so ", "is ", "thus ", "therefore ", "final ", "answer ", "result ")


def _mmmu_normalize(text: str) -> list:
    text = text.strip()
    try:
        return [round(float(text.replace(",", "")), 2)]  # official: a number, to 2 decimals ("nan", "1e3" count)
    except ValueError:
        text = text.lower()
        return [f" {text}", f"{text} "] if len(text) == 1 else [text]  # official: a 1-char answer needs a space


def _mmmu_key_responses(response: str) -> list[str]:
    response = response.strip().strip(".").lower()
    parts = re.split(r"\.\s(?=[A-Z])|\n", response)  # official: after lower() only the newlines split
    keys = []
    for i, part in enumerate(parts):
        cues = _MMMU_CUES + ("=",) * (i == len(parts) - 1)  # "=" marks an answer in the last part only
        shortest = None
        for cue in cues:
            if cue in part:
                tail = part.split(cue)[-1].strip()
                if not shortest or len(tail) < len(shortest):  # official: an empty tail is replaced by the next
                    shortest = tail
        if shortest and shortest.strip() not in (":", ",", ".", "!", "?", ";", "'"):
            keys.append(shortest)
    return keys or [response]


def mmmu_parse_open(response: str) -> list:
    """MMMU's ``parse_open_response``: the candidate answers of an open response, normalised (numbers as floats
    rounded to 2 decimals, text lower-cased): the tail after the shortest-tailed cue ("is ", "so ", "answer ", ...)
    of each line, and every number in those tails."""
    keys = _mmmu_key_responses(response)
    found = keys + [n for key in keys for pattern in _MMMU_NUMBERS for n in pattern.findall(key)]
    return list({value: None for item in found for value in _mmmu_normalize(item)})


def mmmu_eval_open(gold: str | list[str], predictions: list) -> bool:
    """MMMU's ``eval_open``: a number equal to a gold number, or a gold text contained in a text candidate
    (official: a substring test, so a long candidate that lists several answers matches each of them)."""
    golds = [value for g in (gold if isinstance(gold, list) else [gold]) for value in _mmmu_normalize(g)]
    for pred in predictions:
        if isinstance(pred, str):
            if any(isinstance(g, str) and g in pred for g in golds):
                return True
        elif pred in golds:
            return True
    return False


def mmmu_accuracy(response: str, answer: str | list[str], *, options: list[str] | None = None,
                  rng: random.Random | None = None) -> float:
    """MMMU accuracy of one response: with ``options`` (multiple choice) the parsed letter must equal the gold
    letter; without, :func:`mmmu_parse_open` then :func:`mmmu_eval_open` (``answer`` may list several)."""
    fn = "mmmu_accuracy"
    response = _text(response, "response", fn)
    if options is not None:
        options = _texts(options, "options", fn)
        letters = [chr(ord("A") + i) for i in range(len(options))]
        letter = mmmu_parse_multi_choice(response, letters, dict(zip(letters, options)), rng)
        return float(letter in (answer if isinstance(answer, list) else [answer]))
    golds = _texts(answer, "answer", fn) if isinstance(answer, list) else [_text(answer, "answer", fn)]
    return float(mmmu_eval_open(golds, mmmu_parse_open(response)))


# ---------------------------------------------------------------------------------------------------------- AIME

def aime_accuracy(response: str, answer: str | int) -> float:
    """1.0 when the response is the gold integer (0-999; leading zeros allowed, "$033$" is 33), else 0.0."""
    text = _text(response, "response", "aime_accuracy").strip().strip("$").strip()
    if not re.fullmatch(r"\d{1,3}", str(answer).strip()):
        raise ValueError(f"aime_accuracy: answer must be an integer from 0 to 999, got {answer!r:.80}")
    gold = int(str(answer).strip())
    return float(re.fullmatch(r"\d{1,3}", text) is not None and int(text) == gold)


# ------------------------------------------------------------------------------------- tasks: one record at a time

def official_response(text: str) -> str:
    """What an official scorer reads from a completion: the scripts score the raw reply to a prompt asking for the
    answer alone, ours ask to box it, so this is the answer span (final ``\\boxed{}`` > ``<answer>`` block > answer
    cue) with a ``\\text{}`` wrapper and ``\\%`` unescaped, or the whole reply after the think block when there
    is none ("" when the think block never closes)."""
    body = strip_think(text)
    if body is None:
        return ""
    span = answer_span(body)
    if span is None:
        return body.strip()
    wrapped = re.fullmatch(r"\\(?:text|textbf|mathrm|mathbf)\{(.*)\}", span, re.S)
    return (wrapped.group(1) if wrapped else span).replace("\\%", "%").strip()


def _meta(record: dict, key: str):
    return (record.get("meta") or {}).get(key)


def _gold_option(record: dict) -> str:
    """The text of a multiple-choice record's gold option (the adapters store its letter)."""
    choices = record.get("choices") or []
    letter = record["answer"]
    index = ord(letter) - ord("A") if isinstance(letter, str) and len(letter) == 1 else -1
    if not 0 <= index < len(choices):
        raise ValueError(f"doc {record.get('id')}: gold letter {record['answer']!r} is not one of {len(choices)} "
                         "options")
    return choices[index]


def _mathvista(response: str, record: dict) -> float:
    kind = _meta(record, "question_type") or ("multi_choice" if record.get("choices") else "free_form")
    gold = _gold_option(record) if kind == "multi_choice" else str(record["answer"])
    return mathvista_accuracy(response, gold, choices=record.get("choices"), question_type=kind,
                              answer_type=_meta(record, "answer_type") or "text",
                              precision=_meta(record, "precision"))


def _mmmu_gold(answer: object) -> str | list[str]:
    """A gold written as a list literal ("['24/7', '3.429']") is a list, as in MMMU's answer_dict_val.json."""
    text = str(answer).strip()
    if text.startswith("["):
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            return text
        if isinstance(value, list):
            return [str(v) for v in value]
    return text


def _mmmu(response: str, record: dict) -> float:
    rng = random.Random(f"42/{record.get('id')}/{response}")  # a fixed guess per doc and response, any run order
    options = record.get("choices") if record.get("choices") else None
    return mmmu_accuracy(response, _mmmu_gold(record["answer"]), options=options, rng=rng)


def _golds(record: dict) -> list[str]:
    answer = record["answer"]
    return [str(a) for a in answer] if isinstance(answer, (list, tuple)) else [str(answer)]


# name -> fn(response, record) -> score in [0, 1]; the response is official_response(completion). A task names one
# with `official:`; plug-ins add theirs with OFFICIAL.register(name, fn).
OFFICIAL = Registry("official metric", {
    "relaxed_accuracy": lambda response, record: max(chartqa_relaxed_accuracy(response, g) for g in _golds(record)),
    "anls": lambda response, record: anls(response, _golds(record)),
    "vqa_accuracy": lambda response, record: vqa_accuracy(response, _golds(record)),
    "mathvista_accuracy": _mathvista,
    "mmmu_accuracy": _mmmu,
    "aime_accuracy": lambda response, record: aime_accuracy(response, record["answer"]),
})


def official_scores(name: str, completions: list[str], record: dict) -> list[float] | None:
    """The official metric ``name`` of each completion of ``record`` (``None`` for a record without a gold)."""
    if record.get("answer") is None:
        return None
    scorer = OFFICIAL[name]
    return [float(scorer(official_response(c), record)) for c in completions]
