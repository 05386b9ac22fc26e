"""Prompt-quality rules, run after the Self-Instruct filters (data/filters.py) by `prompts` and
`self-instruct`: is a generated text a request someone would answer? docs/prompts.md defines
each rule; tests/data/prompt_labels.jsonl measures them.

- template_leak: the few-shot template shows through: "Task n:", "In this task", "new task",
  an empty field label ("Answer:" with nothing after it), numbered stubs or list markers with no
  content.
- self_talk: the model talks about itself: "I am (a|an|the|your) … assistant/AI/chatbot/model",
  "As an AI …", refusals and apologies ("I'm sorry", "I cannot", "I am not able").
- missing_material: a request about material it does not contain: "this passage", "the
  following text", "the code above", "the article" … with nothing quoted, no text after a colon
  and no second line.
- few_content_words: fewer than `min_content_words` words outside a small stop-word list.
- not_request: neither a question nor an instruction: no sentence opens with an interrogative,
  an auxiliary or an imperative verb (after an optional "please"), it has no request phrase
  ("I need", "help me", "how to", "tips for" …) and it does not end with "?".
"""

from __future__ import annotations

import re

QUALITY_RULES = ("template_leak", "self_talk", "missing_material", "few_content_words",
                 "not_request")

_I = re.IGNORECASE


def _wordset(text: str) -> frozenset[str]:
    return frozenset(text.split())


_WORD = re.compile(r"[a-z]+(?:'[a-z]+)?|\d+(?:[.,]\d+)*")  # numbers are words too

_LABELS = (r"task|tasks|user|assistant|instruction|input|output|answer|question|response|"
           r"example|step|solution|prompt")
_LEAK = [
    re.compile(r"\btask\s*\d*\s*:", _I),                       # "Task:", "Task 2:"
    re.compile(r"\bin this task\b", _I),
    re.compile(r"\b(?:new|next|another)\s+(?:task|topic)s?\b", _I),
    re.compile(r"\bthe\s+task\s+is\b", _I),
    # a field label with nothing after it but the end or another label
    re.compile(rf"\b(?:{_LABELS})\s*\d*\s*:\s*(?:$|(?={_LABELS})\b)", _I),
]
# What is left of a numbered stub or a bare list once markers and labels are removed: nothing.
_MARKERS = re.compile(rf"(?:\b\d+\s*[.):]|[-*•#>]+|\b(?:{_LABELS})\b\s*\d*\s*:?)", _I)

_SELF = [
    re.compile(r"\b(?:i am|i'm|i was)\s+(?:not\s+)?(?:just\s+)?(?:a|an|the|your)\s+"
               r"(?:[\w-]+\s+){0,3}?(?:assistant|ai|chatbot|chat\s*bot|bot|language\s+model|"
               r"model)\b", _I),
    re.compile(r"(?:^|[.!?]\s+)as\s+an?\s+(?:ai|assistant|language\s+model|chatbot)\b", _I),
    # refusals and offers open a sentence: "What if I cannot sleep?" is a request
    re.compile(r"(?:^|[.!?]\s+)(?:i'm sorry|i am sorry|i apologi[sz]e|i cannot|i can't|"
               r"i can not|i am not able|i'm not able|i am unable|i'm unable|i can help you|"
               r"i will write|i'll write)\b", _I),
]

_MATERIAL = (r"passages?|texts?|articles?|emails?|e-mails?|letters?|paragraphs?|sentences?|"
             r"reviews?|poems?|code|snippets?|stor(?:y|ies)|essays?|documents?|reports?|"
             r"messages?|statements?|speech|conversations?|dialogues?|excerpts?|quotes?|"
             r"data|tables?|lists?|information|input|paper|abstract|transcript|tweets?|posts?|"
             r"lyrics|program|function|summary|words|questions?|passage")
_REFERS = [
    re.compile(rf"\b(?:this|these|that|those)\s+(?:[\w-]+\s+){{0,2}}?(?:{_MATERIAL})\b", _I),
    re.compile(rf"\bthe\s+(?:following|above|below|given|attached|provided|preceding)\s+"
               rf"(?:[\w-]+\s+){{0,2}}?(?:{_MATERIAL})\b", _I),
    re.compile(rf"\bthe\s+(?:{_MATERIAL})\s+(?:above|below)\b", _I),
    re.compile(r"\bthe\s+(?:passage|article|text|paragraph|excerpt|document|email|essay|"
               r"transcript)\b", _I),
    re.compile(r"\bsummari[sz]e\s+the\s+following\b", _I),
]
# An opening quote or bracket (not an apostrophe inside a word), 3+ characters, its closing one.
_QUOTED = re.compile(r"(?<![A-Za-z])[\"“'‘«\[(`][^\"“”'‘’«»\[\]()`\n]{3,}[\"”'’»\])`]")

_STOP = _wordset("""
a an the and or but if then than so of to in on at by for with from into onto about as is are
was were be been being am do does did done have has had having it its it's this that these
those there here what which who whom whose when where why how can could would should will shall
may might must i me my mine we us our you your yours he him his she her they them their not no
yes ok okay please just very also too more most some any all each every one other same such
own only new different kind thing things something anything get got let let's between after
before over under through during without within out up down off
""")

_INTERROGATIVE = _wordset("""
what what's whats how how's why who who's whom whose when where where's which can could would
should will shall is are am was were do does did have has may might must isn't aren't don't
doesn't didn't can't won't wouldn't shouldn't couldn't
""")

_IMPERATIVE = _wordset("""
write explain describe give list name tell suggest create make generate compare summarize
summarise translate convert calculate compute find rewrite paraphrase classify sort outline plan
recommend define draft help brainstorm identify fix edit answer compose design solve provide show
teach analyze analyse evaluate propose choose pick imagine predict estimate count construct
implement build develop prepare correct improve simplify expand shorten proofread format arrange
order rank rate review critique discuss argue justify illustrate demonstrate determine check
verify extract categorize categorise group match complete continue finish persuade convince
invent think consider advise guide walk add remove replace change turn play pretend act say state
mention cite spell read debug optimize optimise refactor derive prove measure recite sketch
summarise share offer plot list tally decide assess contrast interpret reword restate shorten
simulate test select convert code program schedule organize organise put take keep use try
bring let solve
""")

_REQUEST_PHRASES = re.compile(
    r"\b(?:i need|i want|i'd like|i would like|help me|can you|could you|would you|tips (?:for|on|"
    r"to)|ideas (?:for|on)|how to|how do i|i'm looking for|i am looking for|advice (?:on|for)|"
    r"recommendations? for|suggestions? for|what should i|steps to)\b", _I)
_SENTENCES = re.compile(r"(?<=[.!?])\s+|\n+")


def words(text: str) -> list[str]:
    """Lower-case words (letters and inner apostrophes) of `text`."""
    return _WORD.findall(text.lower().replace("’", "'"))


def content_words(text: str) -> list[str]:
    """The words of `text` outside the stop-word list."""
    return [w for w in words(text) if w not in _STOP]


def is_template_leak(text: str) -> bool:
    if any(p.search(text) for p in _LEAK):
        return True
    return not re.search(r"[A-Za-z]", _MARKERS.sub(" ", text))


def is_self_talk(text: str) -> bool:
    return any(p.search(text) for p in _SELF)


def has_material(text: str) -> bool:
    """Quoted text, three words or more after a colon, or a second line of text."""
    _, colon, tail = text.partition(":")
    if colon and len(words(tail)) >= 3:
        return True
    if _QUOTED.search(text):
        return True
    lines = [ln for ln in text.splitlines() if ln.strip()]
    return len(lines) > 1


def is_missing_material(text: str) -> bool:
    return any(p.search(text) for p in _REFERS) and not has_material(text)


def is_request(text: str) -> bool:
    """A question or an instruction (module docstring, rule not_request)."""
    if text.rstrip().endswith("?") or _REQUEST_PHRASES.search(text):
        return True
    for sentence in _SENTENCES.split(text.strip()):
        ws = words(sentence)
        while ws and ws[0] in ("please", "now", "so", "also", "then", "and"):
            ws = ws[1:]
        if ws and (ws[0] in _INTERROGATIVE or ws[0] in _IMPERATIVE):
            return True
    return False


def quality_reason(text: str, rules: tuple[str, ...] | list[str] = QUALITY_RULES,
                   min_content_words: int = 2) -> str | None:
    """The first of `rules` (in QUALITY_RULES order) that rejects `text`, or None."""
    checks = {"template_leak": is_template_leak,
              "self_talk": is_self_talk,
              "missing_material": is_missing_material,
              "few_content_words": lambda t: len(content_words(t)) < min_content_words,
              "not_request": lambda t: not is_request(t)}
    for rule in QUALITY_RULES:
        if rule in rules and checks[rule](text):
            return rule
    return None
