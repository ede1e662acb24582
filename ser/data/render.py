"""How a (prompt, response) becomes the text the RM reads.

Two ways, chosen once per run by `data.chat_template` (auto | true | false) and saved with the export:
- the RM tokenizer's chat template, fed the whole conversation (system and earlier turns included);
- the text template `data.template` (the official scripts' "Question: {prompt}\\n\\nAnswer: {response}"),
  fed the flattened prompt: a lone user message as it is, several messages as "Role: content" turns.

`jinja_template` writes the text template as a chat template, so an exported RM whose tokenizer had none
renders conversations exactly as training did in any transformers or TRL code (`apply_chat_template`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ser.data.schema import PreferencePair
from ser.data.tokens import DEFAULT_TEMPLATE, render

Messages = Sequence[Mapping[str, str]]
CHAT_CHOICES = ("auto", True, False)


def wants_chat(setting: Any, tokenizer: Any) -> bool:
    """`data.chat_template`: auto uses the tokenizer's chat template when it has one; true requires it."""
    has = bool(getattr(tokenizer, "chat_template", None))
    if setting in (True, "true"):
        if not has:
            raise ValueError("data.chat_template=true, but the RM tokenizer has no chat template: "
                             "use data.chat_template=auto or false (the text template data.template)")
        return True
    return has if setting in ("auto", None) else False


@dataclass
class Renderer:
    tokenizer: Any
    template: str = DEFAULT_TEMPLATE
    chat: bool = False

    def text(self, prompt: str, response: str, prompt_messages: Messages | None = None) -> str:
        if not self.chat:
            return render(self.template, prompt, response)
        messages = [*(prompt_messages or [{"role": "user", "content": prompt}]), {"role": "assistant", "content": response}]
        return self.tokenizer.apply_chat_template([dict(m) for m in messages], tokenize=False)

    def side(self, pair: PreferencePair, which: str) -> str:
        """The text of the pair's chosen or rejected side."""
        conv = pair.conversation
        return self.text(pair.prompt, getattr(pair, which), conv["prompt"] if conv else None)

    @property
    def adds_special_tokens(self) -> bool:
        """A chat template writes the model's special tokens itself; the text template leaves them to the tokenizer."""
        return not self.chat


def _literal(text: str) -> str:
    return "{{ " + repr(text) + " }}" if text else ""


def jinja_template(template: str) -> str:
    """`data.template` as a chat template: the last assistant message is {response}, the messages before
    it, flattened as `flatten` does, are {prompt}."""
    head, _, rest = template.partition("{prompt}")
    middle, _, tail = rest.partition("{response}")
    return ("{%- set ns = namespace(prompt='', answer='') -%}"
            "{%- set n = messages|length -%}"
            "{%- if n > 0 and messages[-1]['role'] == 'assistant' -%}{%- set ns.answer = messages[-1]['content'] -%}"
            "{%- set n = n - 1 -%}{%- endif -%}"
            "{%- if n == 1 and messages[0]['role'] == 'user' -%}{%- set ns.prompt = messages[0]['content'] -%}"
            "{%- else -%}{%- for m in messages[:n] -%}"
            "{%- set ns.prompt = ns.prompt + ('\\n\\n' if not loop.first else '') + m['role']|capitalize + ': ' + m['content'] -%}"
            "{%- endfor -%}{%- endif -%}"
            f"{_literal(head)}{{{{ ns.prompt }}}}{_literal(middle)}{{{{ ns.answer }}}}{_literal(tail)}")
