"""TRL's preference formats: standard (text) or conversational ({role, content} lists), with an explicit
`prompt` or an implicit one (the shared start of `chosen` and `rejected`); what TRL accepts, this accepts."""

from __future__ import annotations

from collections.abc import Mapping

from ser.data.fields import SCHEMA_FIELDS, RowContext, RowError, list_field, number_field, row_id, text_field, wrong_type
from ser.data.schema import PreferencePair, flatten

def _messages(row: Mapping, key: str) -> list[dict[str, str]]:
    messages = list_field(row, key)
    if not messages:
        raise RowError("bad_transcript", key, "empty message list")
    out = []
    for i, message in enumerate(messages):
        where = f"{key}[{i}]"
        if not isinstance(message, Mapping):
            raise wrong_type(where, "a {role, content} message", message)
        out.append({"role": text_field(message, "role", f"{where}.role"), "content": text_field(message, "content", f"{where}.content")})
    return out


PREFERENCE_FORMATS = ("auto", "standard", "conversational")


def _completion(messages: list[dict[str, str]], key: str) -> str:
    """A conversational completion: one assistant message (what the RM scores)."""
    if len(messages) != 1 or messages[0]["role"] != "assistant":
        roles = [m["role"] for m in messages]
        raise RowError("bad_transcript", key, f"the completion after the shared prompt must be one assistant message, got {roles}")
    return messages[0]["content"]


def trl_pair(row: Mapping, ctx: RowContext, preference_format: str = "auto",
             columns: Mapping[str, str] | None = None) -> PreferencePair:
    """A row in any of TRL's preference formats: standard (text) or conversational ({role, content} lists),
    with an explicit `prompt` or an implicit one (the shared start of `chosen` and `rejected`).

    Conversations keep every message (system and earlier turns) for a chat template; the prompt is
    found with TRL's own `maybe_extract_prompt`, so what TRL accepts, this accepts.
    """
    from trl.data_utils import extract_prompt, maybe_extract_prompt

    col = {name: name for name in SCHEMA_FIELDS} | dict(columns or {})
    values = {k: row.get(col[k]) for k in ("prompt", "chosen", "rejected")}
    if values["prompt"] is not None and not isinstance(values["prompt"], (str, list)):
        raise wrong_type(col["prompt"], "text or a list of messages", values["prompt"])
    for key in ("chosen", "rejected"):
        if values[key] is None:
            raise RowError("missing_field", col[key])
    conversational = isinstance(values["chosen"], list) or isinstance(values["rejected"], list)
    if preference_format != "auto" and preference_format != ("conversational" if conversational else "standard"):
        raise RowError("wrong_format", col["chosen"], f"a {'conversational' if conversational else 'standard'} row "
                                                      f"in a source named format={preference_format}")
    scores = {"score_chosen": number_field(row, col["score_chosen"]), "score_rejected": number_field(row, col["score_rejected"])}
    if not conversational:
        chosen, rejected = text_field(row, col["chosen"]), text_field(row, col["rejected"])
        if values["prompt"] is None:  # implicit prompt: the shared start of both texts
            if not chosen.strip() or not rejected.strip():
                raise RowError("empty_text", col["chosen"] if not chosen.strip() else col["rejected"])
            parts = extract_prompt({"chosen": chosen, "rejected": rejected})
            return PreferencePair(row_id(row, ctx, col["id"]), parts["prompt"].strip(), parts["chosen"].strip(),
                                  parts["rejected"].strip(), **scores)
        return PreferencePair(row_id(row, ctx, col["id"]), text_field(row, col["prompt"]), chosen, rejected, **scores)
    example = {"chosen": _messages(row, col["chosen"]), "rejected": _messages(row, col["rejected"])}
    if values["prompt"] is not None:
        example["prompt"] = values["prompt"] if isinstance(values["prompt"], str) else _messages(row, col["prompt"])
    parts = maybe_extract_prompt(example)
    prompt = parts["prompt"]
    if isinstance(prompt, str):  # a text prompt beside conversational completions
        prompt = [{"role": "user", "content": prompt}]
    if not prompt:
        raise RowError("bad_transcript", col["chosen"], "chosen and rejected share no prompt messages")
    conversation = {"prompt": list(prompt), "chosen": list(parts["chosen"]), "rejected": list(parts["rejected"])}
    return PreferencePair(row_id(row, ctx, col["id"]), flatten(conversation["prompt"]),
                          _completion(conversation["chosen"], col["chosen"]),
                          _completion(conversation["rejected"], col["rejected"]), **scores, conversation=conversation)
