"""Wording shared by several commands' messages."""
from __future__ import annotations

from collections.abc import Iterable


def failed_ids_text(failures: Iterable[tuple[int, int | None]]) -> str:
    """Failed tasks as sorted, condensed ids per exit code: `3-5,9 (exit 1), 7 (exit 137 (SIGKILL))`."""
    from onager.state import describe_exit
    from onager.tasklist import Tasklist
    by_code: dict[int | None, list[int]] = {}
    for task_id, code in failures:
        by_code.setdefault(code, []).append(task_id)
    groups = sorted(by_code.items(), key=lambda item: min(item[1]))
    return ", ".join(f"{Tasklist.from_ids(ids)}" + (f" (exit {describe_exit(code)})" if code is not None else "")
                     for code, ids in groups)
