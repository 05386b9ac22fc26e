"""SELF-INSTRUCT's text: the prompts of its three model calls (templates/self_instruct_*.txt)
and the parsing of the replies, as the original code parses them (stages/self_instruct.py)."""

from __future__ import annotations

import re

from ..templates import fill, template

# Instance generation: output-first for classification tasks, input-first otherwise.
INSTANCE_TEMPLATES = {True: "self_instruct_instances_output_first",
                      False: "self_instruct_instances_input_first"}
TEMPLATES = ("self_instruct_generate", "self_instruct_classify", *INSTANCE_TEMPLATES.values())

_NUMBERED = re.compile(r"^[ \t]*\d+[ \t]*[.)][ \t]*", re.MULTILINE)
_BLANK_LINE = re.compile(r"\n[ \t]*\n")
_ENDS_BLANK = re.compile(r"\n[ \t]*\n\s*$")
_ANSWER = re.compile(r"^\W*(yes|no)\b", re.IGNORECASE)
_NEXT_TASK = re.compile(r"\n[ \t]*Task[ \t]*\d*[ \t]*:", re.IGNORECASE)
_EXAMPLE = re.compile(r"^[ \t]*Example[ \t]*\d*[ \t]*[:.]?[ \t]*$", re.IGNORECASE | re.MULTILINE)
_INPUT = re.compile(r"^[ \t]*Input[ \t]*:", re.IGNORECASE | re.MULTILINE)
_OUTPUT = re.compile(r"^[ \t]*Output[ \t]*:", re.IGNORECASE | re.MULTILINE)
_LABEL = re.compile(r"^[ \t]*Class[ \t]*label[ \t]*:", re.IGNORECASE | re.MULTILINE)


def generation_messages(instructions: list[str]) -> list[dict]:
    """Step 1: a numbered list of instructions the model is asked to continue."""
    listed = "\n".join(f"{i}. {text.strip()}" for i, text in enumerate(instructions, start=1))
    text = fill(template("self_instruct_generate"), examples=listed,
                next=str(len(instructions) + 1))
    return [{"role": "user", "content": text}]


def classify_messages(instruction: str) -> list[dict]:
    """Step 2: the few-shot question 'is this a classification task?'."""
    text = fill(template("self_instruct_classify"), instruction=instruction.strip())
    return [{"role": "user", "content": text}]


def instance_messages(instruction: str, is_classification: bool) -> list[dict]:
    """Step 3: output-first for classification tasks, input-first otherwise."""
    text = fill(template(INSTANCE_TEMPLATES[is_classification]), instruction=instruction.strip())
    return [{"role": "user", "content": text}]


def parse_instructions(reply: str) -> list[str]:
    """The numbered items of a reply; text before the first number continues the open item.

    That text is a preamble, not an item, when it ends with ':' or a blank line ("Sure! Here
    are more tasks:"). The list ends at its first blank line (the original's stop sequence).
    """
    text = reply.strip()
    first = _NUMBERED.search(text)
    head, body = (text[:first.start()], text[first.start():]) if first else (text, "")
    if first and (head.rstrip().endswith(":") or _ENDS_BLANK.search(head)):
        head = ""
    if _BLANK_LINE.search(head):
        head, body = _BLANK_LINE.split(head, maxsplit=1)[0], ""
    body = _BLANK_LINE.split(body, maxsplit=1)[0]
    items = [" ".join(part.split()) for part in _NUMBERED.split(body)[1:]]
    return ([" ".join(head.split())] if head.strip() else []) + items


def parse_classification(reply: str) -> bool | None:
    """Yes -> True, No -> False, anything else -> None."""
    m = _ANSWER.match(reply)
    return None if m is None else m.group(1).lower() == "yes"


def _clean(text: str) -> str:
    return text.strip().strip('"').strip()


def parse_instances(reply: str, is_classification: bool) -> list[dict]:
    """{input, output} pairs from a reply, as the original code parses them.

    Output-first: each 'Class label:' line is an output, the text after it (its 'Input:') the
    input; no label, no instance. Input-first: each 'Example n' block is split at 'Output:'; a
    block without one is an output that needs no input. Text after a new 'Task:' is ignored.
    """
    text = _NEXT_TASK.split("\n" + reply, maxsplit=1)[0]
    out = []
    if is_classification:
        for chunk in _LABEL.split(text)[1:]:
            label, _, rest = chunk.strip().partition("\n")
            marked = _INPUT.split(rest, maxsplit=1)
            out.append({"input": _clean(marked[-1]), "output": _clean(label)})
        return out
    for chunk in _EXAMPLE.split(text):
        if not chunk.strip():
            continue
        parts = _OUTPUT.split(chunk, maxsplit=1)
        before, output = parts if len(parts) == 2 else ("", chunk)
        # A second example written without its header: the output ends at its 'Input:'.
        output = _INPUT.split(output, maxsplit=1)[0]
        marked = _INPUT.split(before, maxsplit=1)
        out.append({"input": _clean(marked[-1]), "output": _clean(output)})
    return out
