"""``snapshot``'s restic-style options for file sources: what to leave out and where paths come from."""

from __future__ import annotations

import argparse

from dtstore import Excludes
from dtstore.errors import UsageError
from dtstore.sources.excludes import files_from, parse_size

FILES_FROM = (("files_from", "glob"), ("files_from_verbatim", "verbatim"), ("files_from_raw", "raw"))


def add_exclude_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("file sources (restic's semantics; see spec/cli.md)")
    g.add_argument("--exclude", "-e", action="append", default=[], metavar="PATTERN",
                   help="leave out what matches PATTERN (glob, ** for any depth, /… from the root, !… re-includes)")
    g.add_argument("--iexclude", action="append", default=[], metavar="PATTERN",
                   help="like --exclude, ignoring case")
    g.add_argument("--exclude-file", action="append", default=[], metavar="FILE",
                   help="read --exclude patterns from FILE, one a line (# comments, $VAR expanded)")
    g.add_argument("--iexclude-file", action="append", default=[], metavar="FILE",
                   help="read --iexclude patterns from FILE")
    g.add_argument("--exclude-caches", action="store_true",
                   help="leave out the contents of directories holding a CACHEDIR.TAG with the standard signature "
                        "(the directory and the tag are kept)")
    g.add_argument("--exclude-if-present", action="append", default=[], metavar="NAME[:HEADER]",
                   help="leave out the contents of directories holding file NAME (that starts with HEADER), "
                        "but for NAME")
    g.add_argument("--exclude-larger-than", metavar="SIZE", type=_size,
                   help="leave out files larger than SIZE (bytes, or with K, M, G, T: powers of 1024)")
    g.add_argument("--one-file-system", "-x", action="store_true",
                   help="do not cross into other file systems (mount points are stored empty)")
    g.add_argument("--files-from", action="append", default=[], metavar="FILE",
                   help="back up the paths listed in FILE ('-': stdin), one glob pattern a line, # comments")
    g.add_argument("--files-from-verbatim", action="append", default=[], metavar="FILE",
                   help="back up the paths listed in FILE, one a line, taken literally")
    g.add_argument("--files-from-raw", action="append", default=[], metavar="FILE",
                   help="back up the NUL-separated paths in FILE (find -print0), taken literally")


def _size(text: str) -> int:
    try:
        return parse_size(text)
    except UsageError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def excludes_from_args(args: argparse.Namespace) -> Excludes:
    return Excludes(exclude=tuple(args.exclude), iexclude=tuple(args.iexclude), exclude_file=tuple(args.exclude_file),
                    iexclude_file=tuple(args.iexclude_file), exclude_caches=args.exclude_caches,
                    exclude_if_present=tuple(args.exclude_if_present), exclude_larger_than=args.exclude_larger_than,
                    one_file_system=args.one_file_system)


def listed_paths(args: argparse.Namespace) -> list[str]:
    """The paths of every --files-from* file, in the order given."""
    lists = [(path, mode) for key, mode in FILES_FROM for path in getattr(args, key)]
    if sum(path == "-" for path, _ in lists) > 1:
        raise UsageError("only one --files-from* list can be read from standard input")
    paths = [p for path, mode in lists for p in files_from(path, mode=mode)]
    if lists and not paths:
        raise UsageError("the --files-from lists name no path")
    return paths


def file_options_given(args: argparse.Namespace) -> list[str]:
    """The file-source options given, as flags (for the message when the source is not files)."""
    given = [name for name in ("exclude", "iexclude", "exclude_file", "iexclude_file", "exclude_if_present")
             if getattr(args, name)]
    given += [name for name in ("exclude_caches", "one_file_system") if getattr(args, name)]
    given += ["exclude_larger_than"] if args.exclude_larger_than is not None else []
    given += [key for key, _ in FILES_FROM if getattr(args, key)]
    return ["--" + name.replace("_", "-") for name in given]
