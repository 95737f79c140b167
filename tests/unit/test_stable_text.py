"""`StableText`: LocalAgreement-2 over a streaming utterance's interim hypotheses."""

from __future__ import annotations

from stt_sidecar.streaming.transcripts import StableText


def test_words_two_hypotheses_agree_on_become_stable() -> None:
    stable = StableText()
    assert stable.update("the quick") == ("the quick", "")
    assert stable.update("the quick brown") == ("the quick brown", "the quick")
    assert stable.update("the quick brown fox") == ("the quick brown fox", "the quick brown")


def test_agreement_ignores_case_and_punctuation() -> None:
    stable = StableText()
    stable.update("Hello, world")
    assert stable.update("hello world again") == ("hello world again", "hello world")


def test_stable_words_are_never_retracted() -> None:
    stable = StableText()
    stable.update("ask not what")
    stable.update("ask not what your")
    text, agreed = stable.update("as not a word")
    assert agreed.startswith("ask not what")
    assert text == "ask not what word"


def test_disagreement_stops_at_the_first_differing_word() -> None:
    stable = StableText()
    stable.update("one two three")
    assert stable.update("one too three") == ("one too three", "one")


def test_only_two_confident_hypotheses_make_words_stable() -> None:
    # tiny.en's first interims of "Had he married a" agreed on "How do you marry", unsure
    stable = StableText()
    stable.update("How do you", confident=False)
    assert stable.update("How do you marry", confident=False) == ("How do you marry", "")
    assert stable.update("Had he married a", confident=True) == ("Had he married a", "")
    assert stable.update("Had he married a more", confident=True)[1] == "Had he married a"
    # an unsure hypothesis in between holds agreement back until two sure ones agree again
    stable.update("Had he married a more amiable", confident=False)
    assert stable.update("Had he married a more amiable woman")[1] == "Had he married a"
    assert stable.update("Had he married a more amiable woman he")[1] == (
        "Had he married a more amiable woman"
    )
