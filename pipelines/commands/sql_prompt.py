"""`refinery sql RUN` without a query: a prompt over the run's views in a terminal, or the statements piped in.

A statement ends at a `;` outside strings and comments, so it may span lines; a line that starts with `.` at the
start of a statement is a helper (`.tables`, `.schema VIEW`, `.help`, `.quit`). Every statement runs through
`sql.execute` on one connection from `sql.connect`: the prompt is read-only exactly as `refinery sql` is, and has no
helper that reads or writes a file (no `.read`, `.output`, `.import`). In a terminal, lines are edited with readline
and kept in a history file; Ctrl-C drops the statement being typed (or stops a query), Ctrl-D leaves.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TextIO

import duckdb

from refinery.pipelines.commands import sql

PROMPT, MORE = "refinery> ", "     ...> "
HELPERS = """helpers (a line of its own):
  .tables          the views and what each holds
  .schema [VIEW]   the columns of a view (of every view without one)
  .help            this list
  .quit            leave (also Ctrl-D, exit, quit)
SQL statements end with ; and may span lines."""
_QUIT = {".quit", ".exit", "exit", "quit"}
_HISTORY_LINES = 1000


def history_file() -> Path:
    """Where the prompt keeps its history: $XDG_STATE_HOME/refinery/sql_history, else ~/.refinery_sql_history."""
    state = os.environ.get("XDG_STATE_HOME")
    return Path(state) / "refinery" / "sql_history" if state else Path.home() / ".refinery_sql_history"


def _ends_statement(text: str) -> bool:
    """Whether SQL text ends with a `;` that is no part of a string, a quoted name or a comment."""
    tokens = [(offset, kind) for offset, kind in duckdb.tokenize(text) if kind.name != "comment"]
    return bool(tokens) and tokens[-1][1].name == "operator" and text[tokens[-1][0]] == ";"


class Statements:
    """Lines in, whole statements (or helper lines) out."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.first_line = 0  # the line number, counted by `add`, where the statement being collected began
        self.line_number = 0

    @property
    def pending(self) -> bool:
        return bool(self.lines)

    def clear(self) -> None:
        self.lines = []

    def add(self, line: str) -> str | None:
        """The statement or helper this line completes, else None."""
        self.line_number += 1
        if not self.lines:
            word = line.strip()
            if not word:
                return None
            self.first_line = self.line_number
            if word.startswith(".") or word.lower().rstrip(";") in _QUIT:
                return word
        self.lines.append(line)
        text = "\n".join(self.lines)
        if not _ends_statement(text):
            return None
        self.lines = []
        return text

    def rest(self) -> str | None:
        """What is left at the end of the input: a last statement without its `;`."""
        text = "\n".join(self.lines).strip()
        self.lines = []
        return text or None


class Session:
    """The run's views on one locked connection; runs statements and helpers, printing results and errors."""

    def __init__(self, run_dir: str | Path, fmt: str, out: TextIO, err: TextIO):
        self.run_dir, self.fmt, self.out, self.err = run_dir, fmt, out, err
        self.con = sql.connect(run_dir)
        self.failed = 0

    def run(self, text: str, where: str = "") -> bool:
        """Run one input: a helper or SQL (one or more statements). False when it asks to leave."""
        if text.lower().rstrip(";") in _QUIT:
            return False
        try:
            if text.startswith("."):
                self._helper(text)
            else:
                for statement in _split(text):
                    sql.render(sql.execute(self.con, statement), self.fmt, self.out)
        except sql.SqlError as error:
            self.failed += 1
            print(f"error{where}: {error}", file=self.err)
        return True

    def _helper(self, text: str) -> None:
        command, *arguments = text.split()
        command = command.rstrip(";")
        views = sql.views(self.con)
        if command == ".help":
            print(HELPERS, file=self.out)
        elif command == ".tables":
            width = max(len(name) for name in views)
            print("\n".join(f"{name:{width}}  {about}" for name, (about, _) in views.items()), file=self.out)
        elif command == ".schema" and not arguments:
            print(sql.describe_views(self.run_dir, self.con), file=self.out)
        elif command == ".schema" and len(arguments) == 1 and arguments[0].rstrip(";") in views:
            about, columns = views[arguments[0].rstrip(";")]
            width = max(len(column) for column, _ in columns)
            print(f"-- {about}", *(f"{column:{width}}  {kind}" for column, kind in columns), sep="\n", file=self.out)
        elif command == ".schema":
            raise sql.SqlError(f"usage: .schema [VIEW], VIEW one of {', '.join(views)}")
        else:
            raise sql.SqlError(f"unknown helper {command}; .help lists them")

    def close(self) -> None:
        self.con.close()


def _split(text: str) -> list[str]:
    """The statements of a piece of SQL (`SELECT 1; SELECT 2;` is two results)."""
    try:
        return [statement.query for statement in duckdb.extract_statements(text)]
    except duckdb.Error as error:
        raise sql.SqlError(f"cannot parse the query: {error}") from None


def run_prompt(run_dir: str | Path, fmt: str, stdin: TextIO = sys.stdin) -> int:
    """`refinery sql RUN`: the prompt in a terminal; piped statements run in order (an error is printed and the next
    statement runs; the exit status is 2 if any failed); nothing piped lists the views. 0 when all went well."""
    if stdin.isatty():
        return _interactive(run_dir, fmt)
    text = stdin.read()
    if not text.strip():
        print(sql.describe_views(run_dir))
        return 0
    session, statements = Session(run_dir, fmt, sys.stdout, sys.stderr), Statements()
    try:
        for line in text.splitlines():
            chunk = statements.add(line)
            if chunk is not None and not session.run(chunk, f" (line {statements.first_line})"):
                break
        else:
            rest = statements.rest()
            if rest is not None:
                session.run(rest, f" (line {statements.first_line})")
    finally:
        session.close()
    return 2 if session.failed else 0


def _interactive(run_dir: str | Path, fmt: str) -> int:
    session, statements = Session(run_dir, fmt, sys.stdout, sys.stderr), Statements()
    history = _open_history()
    print(sql.describe_views(run_dir, session.con, prompt=True))
    print(f"\n{HELPERS}" + (f"\nhistory: {history}" if history else ""))
    try:
        while True:
            try:
                line = input(MORE if statements.pending else PROMPT)
            except EOFError:  # Ctrl-D
                print()
                return 0
            except KeyboardInterrupt:  # Ctrl-C: drop what was typed, as a shell does
                print()
                statements.clear()
                continue
            chunk = statements.add(line)
            try:
                if chunk is not None and not session.run(chunk):
                    return 0
            except KeyboardInterrupt:
                print("\n(query stopped)", file=sys.stderr)
    finally:
        session.close()
        _save_history(history)


def _open_history() -> Path | None:
    """Line editing and the history file, where readline exists (not on Windows' own Python); None without it."""
    try:
        import readline
    except ImportError:
        return None
    path = history_file()
    readline.set_history_length(_HISTORY_LINES)
    try:
        readline.read_history_file(path)
    except (FileNotFoundError, OSError):  # no history yet, or one this readline cannot read: start a new one
        pass
    return path


def _save_history(path: Path | None) -> None:
    if path is None:
        return
    import readline

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        readline.write_history_file(path)
    except OSError as error:  # a read-only home must not turn a good session into an error
        print(f"(history not saved to {path}: {error})", file=sys.stderr)
