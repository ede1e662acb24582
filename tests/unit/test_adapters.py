"""Adapters: exact pairs from hand-written rows of each source format, and every skip reason."""

from __future__ import annotations

from typing import Any

import pytest

from ser.data.adapters import ADAPTERS, RowError, adapt_rows
from ser.data.schema import LoadReport, PreferencePair


def run(rows: list[Any], adapter: str, **options: Any) -> tuple[list[PreferencePair], LoadReport]:
    report = LoadReport(source="src")
    return adapt_rows(rows, adapter, report, **options), report


def issues(report: LoadReport) -> list[tuple[int, str, str | None]]:
    return [(issue.row, issue.reason, issue.field) for issue in report.issues]


def chat(*turns: tuple[str, str]) -> list[dict[str, str]]:
    return [{"role": role, "content": content} for role, content in turns]


# ---- hh_rlhf ----

HH_PROMPT = "\n\nHuman: Hi there\n\nAssistant: Hello!\n\nHuman: Can you help?\n\nAssistant:"


def test_hh_rlhf_splits_transcripts_at_last_shared_assistant_turn() -> None:
    row = {"chosen": HH_PROMPT + " Sure, gladly. ", "rejected": HH_PROMPT + " No."}
    pairs, report = run([row], "hh_rlhf")
    assert pairs == [
        PreferencePair(
            id="src-0",
            prompt="Human: Hi there\n\nAssistant: Hello!\n\nHuman: Can you help?\n\nAssistant:",
            chosen="Sure, gladly.",
            rejected="No.",
        )
    ]
    assert (report.rows_read, report.pairs_kept, report.issues) == (1, 1, [])


def test_hh_rlhf_extra_turn_inside_a_response_stays_in_that_response() -> None:
    # HH quirk: a response that itself contains "\n\nAssistant:" must not move the prompt's end.
    chosen = HH_PROMPT + " Yes.\n\nHuman: Thanks\n\nAssistant: Welcome."
    pairs, _ = run([{"chosen": chosen, "rejected": HH_PROMPT + " Nope."}], "hh_rlhf")
    assert pairs[0].prompt == HH_PROMPT.lstrip("\n")
    assert pairs[0].chosen == "Yes.\n\nHuman: Thanks\n\nAssistant: Welcome."
    assert pairs[0].rejected == "Nope."


def test_hh_rlhf_accepts_converted_rows() -> None:
    row = {"id": "hh-1", "prompt": "Human: Hi\n\nAssistant:", "chosen": "Hello", "rejected": "Go away"}
    pairs, _ = run([row], "hh_rlhf")
    assert pairs == [PreferencePair("hh-1", "Human: Hi\n\nAssistant:", "Hello", "Go away")]


def test_hh_rlhf_without_assistant_turn_is_bad_transcript() -> None:
    _, report = run([{"chosen": "Human: Hi", "rejected": "Human: Hey"}], "hh_rlhf")
    assert issues(report) == [(0, "bad_transcript", "chosen")]


# ---- ultrafeedback ----


def test_ultrafeedback_h4_chat_lists_with_prompt() -> None:
    row = {
        "prompt": "What is 2+2?",
        "prompt_id": "abc",
        "chosen": chat(("user", "What is 2+2?"), ("assistant", "4")),
        "rejected": chat(("user", "What is 2+2?"), ("assistant", "5")),
        "score_chosen": 9.0,
        "score_rejected": 2,
    }
    pairs, _ = run([row], "ultrafeedback")
    assert pairs == [PreferencePair("src-0", "What is 2+2?", "4", "5", 9.0, 2.0)]


def test_ultrafeedback_trl_lib_keeps_the_system_message_and_every_earlier_turn() -> None:
    head = (("system", "Be brief."), ("user", "Hi"), ("assistant", "Hey"), ("user", "Joke?"))
    row = {"chosen": chat(*head, ("assistant", "No.")), "rejected": chat(*head, ("assistant", "A pun.")),
           "score_chosen": 7.0, "score_rejected": 6.5}
    pairs, _ = run([row], "ultrafeedback")
    prompt = "System: Be brief.\n\nUser: Hi\n\nAssistant: Hey\n\nUser: Joke?"
    assert pairs == [PreferencePair("src-0", prompt, "No.", "A pun.", 7.0, 6.5)]
    assert pairs[0].conversation == {"prompt": chat(*head), "chosen": chat(("assistant", "No.")),
                                     "rejected": chat(("assistant", "A pun."))}


def test_a_conversation_whose_sides_share_no_prompt_is_counted() -> None:
    row = {"chosen": chat(("system", "Be brief."), ("user", "Hi"), ("assistant", "No.")),
           "rejected": chat(("user", "Hi"), ("assistant", "A pun."))}
    pairs, report = run([row], "ultrafeedback")
    assert pairs == [] and issues(report) == [(0, "bad_transcript", "chosen")]


def test_ultrafeedback_plain_strings_keep_id_and_scores() -> None:
    row = {"id": "uf-1", "prompt": "Q", "chosen": "good", "rejected": "bad", "score_chosen": 8, "score_rejected": 3}
    pairs, _ = run([row], "ultrafeedback")
    assert pairs == [PreferencePair("uf-1", "Q", "good", "bad", 8.0, 3.0)]


def test_ultrafeedback_bad_chats() -> None:
    rows = [
        {"chosen": chat(("user", "Q")), "rejected": chat(("user", "Q"), ("assistant", "A"))},
        {"prompt": "Q", "chosen": [{"role": "assistant", "content": 3}], "rejected": "A"},
        {"chosen": chat(("assistant", "A")), "rejected": chat(("assistant", "B"))},
        {"prompt": "Q", "chosen": [], "rejected": "A"},
    ]
    _, report = run(rows, "ultrafeedback")
    assert issues(report) == [
        (0, "bad_transcript", "chosen"),
        (1, "wrong_type", "chosen[0].content"),
        (2, "bad_transcript", "chosen"),  # no user turn to build the prompt from
        (3, "bad_transcript", "chosen"),
    ]


def uf_row(i: int, chosen: float, rejected: float) -> dict[str, Any]:
    texts = {"prompt": "Q", "chosen": f"a{i}", "rejected": f"b{i}"}
    return {"id": f"u{i}", **texts, "score_chosen": chosen, "score_rejected": rejected}


def test_ultrafeedback_ties_are_counted_and_kept_by_default() -> None:
    pairs, report = run([uf_row(0, 5, 5), uf_row(1, 6, 2), uf_row(2, 3.0, 3)], "ultrafeedback")
    assert [p.id for p in pairs] == ["u0", "u1", "u2"]
    assert report.notes["tie_scores"] == 2
    assert report.issues == []


def test_ultrafeedback_drop_ties_skips_them() -> None:
    pairs, report = run([uf_row(0, 5, 5), uf_row(1, 6, 2)], "ultrafeedback", drop_ties=True)
    assert [p.id for p in pairs] == ["u1"]
    assert issues(report) == [(0, "tie_scores", "score_chosen")]
    assert report.notes["tie_scores"] == 0


# ---- stack_exchange ----


def se_row(qid: int, scores: list[int]) -> dict[str, Any]:
    answers = [
        {"answer_id": 10 + i, "pm_score": s, "selected": False, "text": f"answer {i}", "author": "x"}
        for i, s in enumerate(scores)
    ]
    return {"qid": qid, "question": f"question {qid}?", "answers": answers}


def test_stack_exchange_pairs_answers_with_different_scores() -> None:
    pairs, report = run([se_row(7, [1, 3, 1, 0])], "stack_exchange")
    assert [(p.id, p.chosen, p.rejected, p.score_chosen, p.score_rejected) for p in pairs] == [
        ("se-7-11-10", "answer 1", "answer 0", 3.0, 1.0),
        ("se-7-10-13", "answer 0", "answer 3", 1.0, 0.0),
        ("se-7-11-12", "answer 1", "answer 2", 3.0, 1.0),
        ("se-7-11-13", "answer 1", "answer 3", 3.0, 0.0),
        ("se-7-12-13", "answer 2", "answer 3", 1.0, 0.0),
    ]
    assert {p.prompt for p in pairs} == {"question 7?"}
    assert (report.rows_read, report.pairs_kept) == (1, 5)


def test_stack_exchange_cap_is_a_seeded_sample() -> None:
    all_pairs, _ = run([se_row(1, [5, 4, 3, 2, 1, 0])], "stack_exchange", max_pairs_per_question=15)
    capped, _ = run([se_row(1, [5, 4, 3, 2, 1, 0])], "stack_exchange", max_pairs_per_question=4, seed=3)
    again, _ = run([se_row(1, [5, 4, 3, 2, 1, 0])], "stack_exchange", max_pairs_per_question=4, seed=3)
    assert len(all_pairs) == 15 and len(capped) == 4
    assert capped == again
    assert set(capped) <= set(all_pairs)
    # order follows the full list, so the sample is stable to read
    assert [all_pairs.index(p) for p in capped] == sorted(all_pairs.index(p) for p in capped)
    default_cap, _ = run([se_row(1, list(range(8)))], "stack_exchange")  # 28 candidate pairs
    assert len(default_cap) == 10


def test_stack_exchange_rows_without_a_pair_are_counted() -> None:
    _, report = run([se_row(1, [2]), se_row(2, [1, 1])], "stack_exchange")
    assert issues(report) == [(0, "no_pairs", None), (1, "no_pairs", None)]


def test_stack_exchange_bad_answers_and_options() -> None:
    row = se_row(1, [2, 1])
    del row["answers"][1]["pm_score"]
    _, report = run([row], "stack_exchange")
    assert issues(report) == [(0, "missing_field", "answers[1].pm_score")]
    with pytest.raises(ValueError, match="max_pairs_per_question"):
        run([se_row(1, [2, 1])], "stack_exchange", max_pairs_per_question=0)


def test_stack_exchange_accepts_paired_rows() -> None:
    row = {"id": "se-beer-2-1-3", "prompt": "Q", "chosen": "A", "rejected": "B", "score_chosen": 5, "score_rejected": 3}
    pairs, _ = run([row], "stack_exchange")
    assert pairs == [PreferencePair("se-beer-2-1-3", "Q", "A", "B", 5.0, 3.0)]


# ---- summarize ----


def tldr_row(choice: int, confidence: int | None = 7) -> dict[str, Any]:
    row = {
        "info": {"id": "t3_x", "post": "My cat ate my homework.", "title": "Help", "subreddit": "cats"},
        "summaries": [{"text": " Cat ate homework.", "policy": "a"}, {"text": " I like cats. ", "policy": "b"}],
        "choice": choice,
        "batch": "batch7",
    }
    if confidence is not None:
        row["extra"] = {"confidence": confidence}
    return row


def test_summarize_raw_comparisons() -> None:
    pairs, _ = run([tldr_row(0), tldr_row(1)], "summarize")
    prompt = "SUBREDDIT: r/cats\nTITLE: Help\nPOST: My cat ate my homework.\nTL;DR:"
    assert pairs == [
        PreferencePair("tldr-batch7-0", prompt, "Cat ate homework.", "I like cats."),
        PreferencePair("tldr-batch7-1", prompt, "I like cats.", "Cat ate homework."),
    ]


def test_summarize_min_confidence_and_bad_choice() -> None:
    bad_choice = tldr_row(2)
    rows = [tldr_row(0, 2), tldr_row(0, 8), tldr_row(0, None), bad_choice]
    pairs, report = run(rows, "summarize", min_confidence=4)
    assert [p.id for p in pairs] == ["tldr-batch7-1"]
    assert issues(report) == [
        (0, "low_confidence", "confidence"),
        (2, "low_confidence", "confidence"),
        (3, "wrong_type", "choice"),
    ]


def test_summarize_accepts_converted_rows() -> None:
    prompt = "SUBREDDIT: r/a\nTITLE: t\nPOST: p\nTL;DR:"
    row = {"id": "tldr-batch13-0", "prompt": prompt, "chosen": "x", "rejected": "y", "confidence": 3}
    pairs, report = run([row, dict(row, id="tldr-batch13-1", confidence=9)], "summarize", min_confidence=5)
    assert pairs == [PreferencePair("tldr-batch13-1", row["prompt"], "x", "y")]
    assert issues(report) == [(0, "low_confidence", "confidence")]


# ---- generic ----


def test_generic_field_map_and_derived_ids() -> None:
    rows = [
        {"question": "Q1", "good": "A", "bad": "B", "s1": "2.5", "s2": ""},  # csv-style strings
        {"question": "Q2", "good": "C", "bad": "D"},
    ]
    field_map = {"prompt": "question", "chosen": "good", "rejected": "bad", "score_chosen": "s1", "score_rejected": "s2"}
    pairs, _ = run(rows, "generic", field_map=field_map, id_prefix="mydata")
    assert pairs == [
        PreferencePair("mydata-0", "Q1", "A", "B", 2.5, None),
        PreferencePair("mydata-1", "Q2", "C", "D"),
    ]
    with pytest.raises(ValueError, match="field_map"):
        run(rows, "generic", field_map={"answer": "good"})


# ---- checks common to every adapter ----


def test_each_bad_row_is_counted_with_row_and_field() -> None:
    good = {"id": "g", "prompt": "P", "chosen": "C", "rejected": "R"}
    rows = [
        good,
        {"id": "a", "prompt": "P", "rejected": "R"},
        {"id": "b", "prompt": "P", "chosen": None, "rejected": "R"},
        {"id": "c", "prompt": 42, "chosen": "C", "rejected": "R"},
        {"id": "d", "prompt": "P", "chosen": ["C"], "rejected": "R"},
        {"id": "e", "prompt": " \n", "chosen": "C", "rejected": "R"},
        {"id": "f", "prompt": "P", "chosen": "C", "rejected": ""},
        {"id": "h", "prompt": "P", "chosen": " same ", "rejected": "same"},
        dict(good, chosen="C2"),
        {"id": "i", "prompt": "P", "chosen": "C", "rejected": "R", "score_chosen": "high"},
        {"id": ["j"], "prompt": "P", "chosen": "C", "rejected": "R"},
        ["not", "an", "object"],
        RowError("malformed_json", None, "line 13"),
    ]
    pairs, report = run(rows, "generic")
    assert [p.id for p in pairs] == ["g"]
    assert issues(report) == [
        (1, "missing_field", "chosen"),
        (2, "missing_field", "chosen"),
        (3, "wrong_type", "prompt"),
        (4, "wrong_type", "chosen[0]"),  # a list: read as a conversation, whose first message is no message
        (5, "empty_text", "prompt"),
        (6, "empty_text", "rejected"),
        (7, "identical_pair", "rejected"),
        (8, "duplicate_id", "id"),
        (9, "wrong_type", "score_chosen"),
        (10, "wrong_type", "id"),
        (11, "wrong_type", "row"),
        (12, "malformed_json", None),
    ]
    assert (report.rows_read, report.pairs_kept) == (13, 1)
    assert report.counts["wrong_type"] == 5
    assert report.issues[7].detail == "g"


@pytest.mark.parametrize("adapter", sorted(ADAPTERS))
def test_no_adapter_raises_on_junk_rows(adapter: str) -> None:
    junk = [{}, {"chosen": 1, "rejected": 2}, {"answers": "x", "info": 3, "summaries": None}, {"prompt": []}]
    pairs, report = run(junk, adapter)
    assert pairs == [] and len(report.issues) == len(junk)


def test_duplicate_ids_are_checked_across_calls_with_seen_ids() -> None:
    seen: set[str] = set()
    row = {"id": "x", "prompt": "P", "chosen": "C", "rejected": "R"}
    first, _ = run([row], "generic", seen_ids=seen)
    second, report = run([row], "generic", seen_ids=seen)
    assert len(first) == 1 and second == []
    assert issues(report) == [(0, "duplicate_id", "id")]


def test_limit_stops_reading_once_enough_pairs_are_kept() -> None:
    pairs, report = run([se_row(1, [3, 2, 1]), se_row(2, [1, 0])], "stack_exchange", limit=2)
    assert [p.id for p in pairs] == ["se-1-10-11", "se-1-10-12"]
    assert (report.rows_read, report.pairs_kept) == (1, 2)


def test_unknown_adapter_or_option_is_a_config_error() -> None:
    with pytest.raises(ValueError, match="known adapters: generic, hh_rlhf, stack_exchange, summarize, ultrafeedback"):
        run([], "nope")
    with pytest.raises(ValueError, match="min_confidance"):
        run([], "summarize", min_confidance=3)
