"""`refinery sql RUN` without a query: statements piped in run in turn; in a terminal, a prompt with line editing,
history, statements over several lines and helpers. Read-only, as `refinery sql` is."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

from refinery.pipelines.commands.cli import main


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, data_dir) -> Path:
    folder = tmp_path_factory.mktemp("sql_prompt")
    recipe = folder / "recipe.yaml"
    recipe.write_text(f"name: prompt\ninputs:\n  - path: {data_dir}/text/c4_demo.jsonl\nstages:\n"
                      "  - length_filter: {min_words: 100}\noutput: out\n", encoding="utf-8")
    assert main(["run", str(recipe), "--quiet", "--no-report", "--workers", "1"]) == 0
    return folder / "out"


def _sql(run_dir: Path, stdin: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "refinery.pipelines", "sql", str(run_dir), *args], input=stdin,
                          capture_output=True, text=True)


def test_piped_statements_run_in_turn_and_errors_do_not_stop_them(run_dir, tmp_path):
    script = ("SELECT count(*) AS kept_docs\n  FROM docs;\n"  # a statement over two lines
              f"COPY docs TO '{tmp_path}/copy.csv';\n"  # refused: read-only
              "SELECT 1 AS one; SELECT 2 AS two;\n"  # two statements on a line: two results
              ".schema removed\n"
              "SELECT * FROM dcos;\n"
              "SELECT kept FROM stats WHERE stage = 'length_filter'\n")  # the last one may leave out its ;
    done = _sql(run_dir, script, "--format", "csv")
    assert done.returncode == 2  # some statements failed; the others ran
    kept = done.stdout.split('"kept_docs"\n')[1].split("\n")[0]
    assert f'"kept"\n{kept}\n' in done.stdout
    assert '"one"\n1\n' in done.stdout and '"two"\n2\n' in done.stdout
    assert "reason" in done.stdout and "stage" in done.stdout  # .schema removed
    assert "error (line 3): refinery sql is read-only: COPY is not allowed" in done.stderr
    assert "error (line 6): Catalog Error" in done.stderr and 'Did you mean "docs"' in done.stderr
    assert not (tmp_path / "copy.csv").exists()
    good = _sql(run_dir, ".tables\nSELECT 42 AS answer;\n")
    assert good.returncode == 0 and "docs        kept documents" in good.stdout and "42" in good.stdout
    assert _sql(run_dir, "", "--output", str(tmp_path / "x.csv")).returncode == 2  # --output needs a query


class Terminal:
    """`refinery sql RUN` in a pseudo-terminal, as a person at a keyboard runs it."""

    def __init__(self, run_dir: Path, home: Path):
        env = {**{k: v for k, v in os.environ.items() if k != "XDG_STATE_HOME"}, "HOME": str(home), "TERM": "dumb"}
        # pty.fork makes the terminal the child's own, so that Ctrl-C reaches it as a terminal's Ctrl-C does.
        self.pid, self.master = pty.fork()
        if self.pid == 0:
            os.execve(sys.executable, [sys.executable, "-m", "refinery.pipelines", "sql", str(run_dir)], env)
        self.seen = ""

    def until(self, text: str, timeout: float = 180) -> str:  # long: a busy 2-core box starts DuckDB slowly
        """What the terminal shows from now until `text` appears."""
        start, deadline = len(self.seen), time.monotonic() + timeout
        while text not in self.seen[start:]:
            assert time.monotonic() < deadline, f"no {text!r} after {self.seen[-2000:]!r}"
            self._read()
        return self.seen[start:]

    def _read(self) -> None:
        if select.select([self.master], [], [], 0.2)[0]:
            try:
                self.seen += os.read(self.master, 65536).decode("utf-8", "replace").replace("\r", "")
            except OSError:  # the program ended and closed the terminal
                pass

    def type(self, keys: str) -> None:
        os.write(self.master, keys.encode())

    def interrupt_until(self, text: str, timeout: float = 180) -> str:
        """Ctrl-C, again every 5 s until `text` appears, as a person would: a SIGINT that lands between the prompt
        and readline's wait for a key is only acted on at the next signal or key (CPython's readline loop)."""
        start, deadline = len(self.seen), time.monotonic() + timeout
        while text not in self.seen[start:]:
            assert time.monotonic() < deadline, f"no {text!r} after Ctrl-C: {self.seen[-2000:]!r}"
            self.type("\x03")
            pause = time.monotonic() + 5
            while text not in self.seen[start:] and time.monotonic() < pause:
                self._read()
        return self.seen[start:]

    def close(self) -> int:
        """The exit status, once the program has ended."""
        deadline = time.monotonic() + 180
        while not (ended := os.waitpid(self.pid, os.WNOHANG))[0]:
            assert time.monotonic() < deadline, f"still running after {self.seen[-300:]!r}"
            self._read()
        os.close(self.master)
        return os.waitstatus_to_exitcode(ended[1])


@pytest.mark.skipif(os.name != "posix", reason="a pseudo-terminal is POSIX")
def test_the_prompt_in_a_terminal(run_dir, tmp_path):
    terminal = Terminal(run_dir, tmp_path)
    assert ".schema [VIEW]" in terminal.until("refinery> ")  # the views, then the helpers
    terminal.type("SELECT count(*) AS kept_docs\r")
    terminal.until("...> ")  # the statement goes on
    terminal.type("FROM docs;\r")
    assert "kept_docs" in terminal.until("refinery> ")
    terminal.type("COPY docs TO 'copy.csv';\r")
    assert "read-only" in terminal.until("refinery> ")  # an error, and the prompt goes on
    terminal.type(".schema stats\r")
    assert "docs_in" in terminal.until("refinery> ")
    terminal.type("SELECT 40 + 2 AS answer;\r")
    terminal.until("refinery> ")
    terminal.type("\x04")  # Ctrl-D
    assert terminal.close() == 0
    history = (tmp_path / ".refinery_sql_history").read_text()
    assert "FROM docs;" in history and "SELECT 40 + 2 AS answer;" in history

    again = Terminal(run_dir, tmp_path)
    again.until("refinery> ")
    again.type("\x10\r")  # Ctrl-P: the last line of the history, the last session's, run again
    assert "42" in again.until("refinery> ")
    again.type("SELECT 'dropped' AS x\r")
    again.until("...> ")
    again.interrupt_until("refinery> ")  # Ctrl-C drops the statement being typed
    again.type("SELECT 'kept' AS y;\r")
    shown = again.until("refinery> ")
    assert "kept" in shown and "dropped" not in shown
    again.type(".quit\r")
    assert again.close() == 0
    assert not (run_dir / "copy.csv").exists() and not (Path.cwd() / "copy.csv").exists()
