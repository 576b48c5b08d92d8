"""VQA accuracy: the VQAv2 soft accuracy with the official answer normalisation, exact match, and breakdowns.

Soft accuracy, as the official evaluation computes it: for each of the ten human answers, leave it out and count
the other nine that equal the prediction; min(count / 3, 1) is that subset's score, and the question's accuracy is
the mean over the ten subsets. So 3 matching annotators give (3 * 2/3 + 7 * 1) / 10 = 0.9 and 4 or more give 1.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Sequence

from vlm.data.sample import Sample, final_answer

# The official evaluation's contraction table ("key>value"), its oddities included ("somebody'd" -> "somebodyd";
# the capitalised keys never match after lowercasing): any difference would move published numbers.
_CONTRACTIONS = dict(
    pair.split(">")
    for pair in """
    aint>ain't arent>aren't cant>can't couldve>could've couldnt>couldn't couldn'tve>couldn't've
    couldnt've>couldn't've didnt>didn't doesnt>doesn't dont>don't hadnt>hadn't hadnt've>hadn't've
    hadn'tve>hadn't've hasnt>hasn't havent>haven't hed>he'd hed've>he'd've he'dve>he'd've hes>he's howd>how'd
    howll>how'll hows>how's Id've>I'd've I'dve>I'd've Im>I'm Ive>I've isnt>isn't itd>it'd itd've>it'd've
    it'dve>it'd've itll>it'll let's>let's maam>ma'am mightnt>mightn't mightnt've>mightn't've
    mightn'tve>mightn't've mightve>might've mustnt>mustn't mustve>must've neednt>needn't notve>not've
    oclock>o'clock oughtnt>oughtn't ow's'at>'ow's'at 'ows'at>'ow's'at 'ow'sat>'ow's'at shant>shan't
    shed've>she'd've she'dve>she'd've she's>she's shouldve>should've shouldnt>shouldn't
    shouldnt've>shouldn't've shouldn'tve>shouldn't've somebody'd>somebodyd somebodyd've>somebody'd've
    somebody'dve>somebody'd've somebodyll>somebody'll somebodys>somebody's someoned>someone'd
    someoned've>someone'd've someone'dve>someone'd've someonell>someone'll someones>someone's
    somethingd>something'd somethingd've>something'd've something'dve>something'd've somethingll>something'll
    thats>that's thered>there'd thered've>there'd've there'dve>there'd've therere>there're theres>there's
    theyd>they'd theyd've>they'd've they'dve>they'd've theyll>they'll theyre>they're theyve>they've twas>'twas
    wasnt>wasn't wed've>we'd've we'dve>we'd've weve>we've werent>weren't whatll>what'll whatre>what're
    whats>what's whatve>what've whens>when's whered>where'd wheres>where's whereve>where've whod>who'd
    whod've>who'd've who'dve>who'd've wholl>who'll whos>who's whove>who've whyll>why'll whyre>why're whys>why's
    wont>won't wouldve>would've wouldnt>wouldn't wouldnt've>wouldn't've wouldn'tve>wouldn't've yall>y'all
    yall'll>y'all'll y'allll>y'all'll yall'd've>y'all'd've y'alld've>y'all'd've y'all'dve>y'all'd've
    youd>you'd youd've>you'd've you'dve>you'd've youll>you'll youre>you're youve>you've
    """.split()
)
_NUMBERS = {
    "none": "0",
    "zero": "0",
    "one": "1",
    "two": "2",
    "three": "3",
    "four": "4",
    "five": "5",
    "six": "6",
    "seven": "7",
    "eight": "8",
    "nine": "9",
    "ten": "10",
}
_ARTICLES = {"a", "an", "the"}
_PUNCTUATION = ';/[]"{}()=+\\_-><@`,?!'  # the official list, one mark per character (no period: see below)
# The official pattern, kept as it is: "(?!<=" was meant as a look-behind but is a look-ahead, so it strips every
# period not followed by a digit ("3.5" keeps its point, "ave." loses it).
_PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)")
_COMMA_STRIP = re.compile(r"(\d)(,)(\d)")  # a thousands separator anywhere: marks are then deleted, not spaced


def process_punctuation(text: str) -> str:
    """The official punctuation step: a mark next to a space (or any mark, in text with a digit-comma-digit) is
    deleted; a mark inside a word becomes a space ("black/white" -> "black white"); periods are stripped."""
    out = text
    for mark in _PUNCTUATION:
        # The official code tests the input text, not the text it is rewriting; kept for equal numbers.
        if mark + " " in text or " " + mark in text or _COMMA_STRIP.search(text) is not None:
            out = out.replace(mark, "")
        else:
            out = out.replace(mark, " ")
    return _PERIOD_STRIP.sub("", out)


def process_digits_and_articles(text: str) -> str:
    """Lowercase, number words to digits, articles dropped, contractions given their apostrophes."""
    words = [_NUMBERS.get(word, word) for word in text.lower().split()]
    return " ".join(_CONTRACTIONS.get(word, word) for word in words if word not in _ARTICLES)


def normalize_answer(answer: str) -> str:
    """The official normalisation of a predicted answer: "Two dogs." -> "2 dogs", "the Cat" -> "cat"."""
    return process_digits_and_articles(process_punctuation(answer.replace("\n", " ").replace("\t", " ").strip()))


def vqa_soft_accuracy(prediction: str, answers: Sequence[str]) -> float:
    """The VQAv2 accuracy of one predicted answer against the annotators' answers.

    As in the official evaluation the prediction is normalised fully, while the annotators' answers (normalised
    when the data set was made) only go through the punctuation step, and only when they disagree. With fewer
    than ten answers the same leave-one-out rule runs over the subsets there are; a single answer is plain exact
    match of normalised strings (leaving it out would leave nothing to match)."""
    if not answers:
        raise ValueError("soft accuracy needs at least one human answer; got an empty list")
    predicted = normalize_answer(prediction)
    if len(answers) == 1:
        return exact_match(prediction, answers[0])
    humans = [process_punctuation(a) for a in answers] if len(set(answers)) > 1 else list(answers)
    matches = [human == predicted for human in humans]
    total = sum(matches)
    # Leaving out answer i leaves total - matches[i] matching answers among the others.
    return sum(min(1.0, (total - match) / 3.0) for match in matches) / len(matches)


def exact_match(prediction: str, answer: str) -> float:
    """easy-VQA's metric: the normalised prediction must equal the one right answer, normalised the same way."""
    return float(normalize_answer(prediction) == normalize_answer(answer))


def question_type(sample: Sample) -> str:
    """The VQAv2 annotation's question type; for data sets without one, the question's first two words ("what
    color", "is there", "how many"): enough to separate the kinds of question of the built-in sets and easy-VQA."""
    if sample.meta.get("question_type"):
        return str(sample.meta["question_type"])
    return " ".join(re.findall(r"[a-z0-9']+", (sample.question or "").lower())[:2]) or "none"


def vqa_metrics(predictions: Sequence[str], samples: Sequence[Sample]) -> dict:
    """Accuracy over all questions ("overall"), by answer type (meta["answer_type"], else "all"), by question
    type (see `question_type`), by yes/no case where the data set tells it (meta["yes_no_case"]: easy-VQA's
    "has the asked color"...), and each question's score ("per_question", in the order of `samples`). A sample's
    answers are its references (its target if it has none); a prediction is scored by its `final_answer`. "metric"
    says which rule scored: soft accuracy, or exact match when every question has a single answer (easy-VQA)."""
    if len(predictions) != len(samples):
        raise ValueError(f"need one prediction per question; got {len(predictions)} for {len(samples)} questions")
    if not samples:
        raise ValueError("no questions to score")
    if any(s.question is None for s in samples):
        raise ValueError("vqa_metrics scores questions; a caption sample (question=None) was given")
    answers = [list(s.references) or [s.target] for s in samples]
    scores = [vqa_soft_accuracy(final_answer(p), a) for p, a in zip(predictions, answers)]
    result: dict = {
        "metric": "exact_match" if all(len(a) == 1 for a in answers) else "vqa_soft_accuracy",
        "overall": sum(scores) / len(scores),
        "questions": len(scores),
    }
    for name, kinds in (
        ("per_answer_type", [str(s.meta.get("answer_type") or "all") for s in samples]),
        ("per_question_type", [question_type(s) for s in samples]),
        ("per_yes_no_case", [s.meta.get("yes_no_case") for s in samples]),
    ):
        groups: dict[str, list[float]] = defaultdict(list)
        for score, kind in zip(scores, kinds):
            if kind is not None:
                groups[kind].append(score)
        if groups:
            result[name] = {kind: sum(v) / len(v) for kind, v in sorted(groups.items())}
    result["per_question"] = scores
    return result
