"""bench/README.md: each benchmark owns one `## ` section and rewrites only that one."""

from __future__ import annotations

from pathlib import Path

README = Path(__file__).with_name("README.md")


def markdown_table(header: list[str], rows: list[list[str]], text_columns: int) -> list[str]:
    """The lines of a Markdown table: the first `text_columns` columns left, the rest right."""
    alignment = ["---"] * text_columns + ["---:"] * (len(header) - text_columns)
    return ["| " + " | ".join(cells) + " |" for cells in [header, alignment, *rows]]


def write_section(section: str, intro: str, report: str) -> None:
    """Put `intro` and `report` under the heading `section`, leaving the other sections alone."""
    text = README.read_text() if README.exists() else "# Benchmarks\n"
    body = f"{section}\n\n{intro}\n\n{report}\n"
    start = text.find(section)
    if start == -1:
        text = text.rstrip("\n") + "\n\n" + body
    else:
        end = text.find("\n## ", start + len(section))
        text = text[:start] + body + ("" if end == -1 else text[end:])
    README.write_text(text)
