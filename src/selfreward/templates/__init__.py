"""Prompt templates: the text files in this package, or a user's file named by a param.

Every template is filled by `fill`, in one pass, so text put into a template is never read again
as a placeholder.
"""

from __future__ import annotations

import re
from functools import cache
from importlib import resources
from pathlib import Path

from ..config.errors import UserError
from ..core.io import read_text


@cache
def template(name: str) -> str:
    """The text of the packaged templates/<name>.txt."""
    return resources.files(__name__).joinpath(f"{name}.txt").read_text("utf-8")


def fill(text: str, **values: str) -> str:
    """Put each value at its `{name}` in one pass: inserted text is never scanned again, so a
    question containing the text `{response}` stays verbatim."""
    pattern = re.compile("{(" + "|".join(map(re.escape, values)) + ")}")
    return pattern.sub(lambda m: values[m.group(1)], text)


@cache
def user_template(path: str | None, packaged: str, fields: tuple[str, ...], param: str) -> str:
    """The template a param names: the file at `path`, or the packaged `<packaged>.txt` when
    `path` is null. A user's file must contain every `{field}`."""
    if path is None:
        return template(packaged)
    if not Path(path).is_file():
        raise UserError("template file not found", file=path, field=param)
    text = read_text(path, field=param)
    missing = [f"{{{name}}}" for name in fields if f"{{{name}}}" not in text]
    if missing:
        raise UserError(f"the template lacks {' and '.join(missing)}", file=path, field=param)
    return text
