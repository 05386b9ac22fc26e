"""User-facing errors: one message naming file, line and field; exit code 2."""

from __future__ import annotations

import click


class UserError(click.ClickException):
    """An error the user can fix (bad input, bad params). Exits with code 2."""

    exit_code = 2

    def __init__(self, message: str, *, file: str | None = None, line: int | None = None,
                 field: str | None = None) -> None:
        where = ""
        if file is not None:
            where = str(file)
            if line is not None:
                where += f":{line}"
            where += ": "
        if field is not None:
            where += f"field '{field}': "
        super().__init__(where + message)
        self.file, self.line, self.field = file, line, field
