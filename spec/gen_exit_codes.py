"""Print the exit-code tables of spec/cli.md from the code: ``python spec/gen_exit_codes.py``.

Sources: the ``EXIT_*`` constants and the error classes in ``dtstore/errors.py`` (each class carries
its ``exit_code``), and the one-line meanings in the ``EPILOG`` of ``cli/main.py`` (what
``dtstore --help`` prints).  Paste the output into spec/cli.md when either changes.
"""

from __future__ import annotations

import re

from dtstore import errors
from dtstore.cli.main import EPILOG


def _epilog_meanings() -> dict[int, str]:
    text = " ".join(EPILOG.split()).removeprefix("exit status:").strip()
    return {int(code): meaning.strip() for code, meaning in re.findall(r"(\d+) ([^,]+)", text)}


def _tree_comments() -> dict[str, str]:
    """The comments written next to each class in the tree drawn in errors.py's docstring."""
    found: dict[str, str] = {}
    for line in (errors.__doc__ or "").splitlines():
        match = re.search(r"(\w+) \(\d+\)\s{2,}(.+)$", line)
        if match:
            found[match.group(1)] = match.group(2).strip()
    return found


def _describe(cls: type[errors.DtstoreError], comments: dict[str, str]) -> str:
    doc = cls.__dict__.get("__doc__") or ""
    if doc.strip():
        return doc.strip().splitlines()[0]
    return comments.get(cls.__name__, "*(no docstring)*")


def main() -> None:
    meanings = _epilog_meanings()
    comments = _tree_comments()
    constants = {value: name for name, value in vars(errors).items() if name.startswith("EXIT_")}
    by_code: dict[int, list[str]] = {}
    for cls in errors.ALL_ERRORS:
        by_code.setdefault(cls.exit_code, []).append(f"`{cls.__name__}`")
    codes = sorted(set(meanings) | set(by_code) | set(constants))

    print("| code | meaning (`cli/main.py` EPILOG) | constant | raised as (`dtstore/errors.py`) |")
    print("|---:|---|---|---|")
    for code in codes:
        print(f"| {code} | {meanings.get(code, '—')} | {'`' + constants[code] + '`' if code in constants else '—'} "
              f"| {', '.join(by_code.get(code, [])) or '—'} |")
    print()
    print("| class | base | exit code | description (class docstring, else the comment in the module's tree) |")
    print("|---|---|---:|---|")
    for cls in errors.ALL_ERRORS:
        base = cls.__bases__[0].__name__
        print(f"| `{cls.__name__}` | `{base}` | {cls.exit_code} | {_describe(cls, comments)} |")


if __name__ == "__main__":
    main()
