"""Check (and fix) the ``# Copied from`` marks of hf_vl's model code, the transformers way.

Each model folder under ``src/hf_vl/models/`` stands alone (it ships to the Hub as remote code), so blocks that
several models need are copied rather than imported, and the copy is marked on the line right above its
``class`` / ``def`` (decorators may sit above or below the mark)::

    # Copied from hf_vl.models.meter.modeling_meter.MeterSelfAttention with Meter->Vlmo
    class VlmoSelfAttention(nn.Module):
        ...

    class VlmoLayer(nn.Module):
        # Copied from hf_vl.models.meter.modeling_meter.MeterLayer.feed_forward_chunk
        def feed_forward_chunk(self, attention_output):
            ...

The dotted path names a module under ``src/`` and an object in it (a top-level class or function, or a
method ``Class.method``); the source file is parsed, never imported. A path starting with ``transformers.``
is looked up in the installed transformers package (upgrading it can make such copies drift: ``--fix``).
``with A->B, C->D`` replaces text in the source before comparing (plain ``str.replace``, in order);
``A->B all-casing`` also replaces ``a->b`` and ``A->B`` upper-cased. The copy is the whole object (by
indentation): its decorators below the mark, its signature and its body. Lines are compared after stripping
trailing whitespace; the source is re-indented to the copy's indentation (multi-line strings excepted).

Usage::

    python utils/check_copies.py          # report every drifted copy with file:line and a diff; exit 1 if any
    python utils/check_copies.py --fix    # rewrite drifted copies from their source
"""

from __future__ import annotations

import argparse
import ast
import difflib
import importlib.util
import io
import re
import sys
import tokenize
from dataclasses import dataclass
from pathlib import Path


REPO_ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "hf_vl"

_COPIED_FROM = re.compile(
    r"^(?P<indent>\s*)#\s*Copied from\s+(?P<target>(?:hf_vl|transformers)(?:\.\w+)+)(?P<rest>.*)$"
)
_REPLACEMENT = re.compile(r"^\s*(?P<old>\S+)->(?P<new>\S+)(?P<option>\s+\S.*)?\s*$")


class CopyMarkError(ValueError):
    """A ``# Copied from`` mark that cannot be checked (bad syntax, unknown source, nothing below it)."""


@dataclass
class CopyMismatch:
    """A marked copy that differs from what its source, after replacements, gives."""

    path: Path
    line: int  # 1-based line of the mark
    target: str
    start: int  # 0-based first line of the copy (inclusive)
    end: int  # 0-based last line of the copy (exclusive)
    observed: list[str]
    expected: list[str]

    def diff(self) -> str:
        return "".join(
            difflib.unified_diff(
                [line + "\n" for line in self.expected],
                [line + "\n" for line in self.observed],
                fromfile=f"{self.target} (source after replacements)",
                tofile=f"{self.path}:{self.start + 1}",
            )
        )

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: copy of {self.target} does not match its source\n{self.diff()}"


def parse_replacements(rest: str) -> list[tuple[str, str, str]]:
    """``" with A->B, C->D all-casing"`` -> ``[("A", "B", ""), ("C", "D", "all-casing")]``."""
    rest = rest.strip()
    if not rest:
        return []
    if not rest.startswith("with "):
        raise CopyMarkError(f"expected `with A->B[, C->D]` after the copied object, got {rest!r}")
    replacements = []
    for pattern in rest[len("with ") :].split(","):
        match = _REPLACEMENT.match(pattern)
        if match is None:
            raise CopyMarkError(f"bad replacement {pattern.strip()!r}: expected `Old->New` or `Old->New all-casing`")
        option = (match.group("option") or "").strip()
        if option not in ("", "all-casing"):
            raise CopyMarkError(f"unknown replacement option {option!r} (only `all-casing` exists)")
        replacements.append((match.group("old"), match.group("new"), option))
    return replacements


def apply_replacements(code: str, replacements: list[tuple[str, str, str]]) -> str:
    for old, new, option in replacements:
        code = code.replace(old, new)
        if option == "all-casing":
            code = code.replace(old.lower(), new.lower())
            code = code.replace(old.upper(), new.upper())
    return code


def _object_start(node: ast.AST, include_decorators: bool) -> int:
    """0-based first line of a class/def, with or without its decorators."""
    if include_decorators and node.decorator_list:
        return min(decorator.lineno for decorator in node.decorator_list) - 1
    return node.lineno - 1


def _find_object(tree: ast.Module, qualified_name: str) -> ast.AST | None:
    body = tree.body
    node = None
    for name in qualified_name.split("."):
        node = next(
            (
                child
                for child in body
                if isinstance(child, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and child.name == name
            ),
            None,
        )
        if node is None:
            return None
        body = node.body
    return node


class SourceTree:
    """Parsed modules of ``<root>/src``, looked up by dotted path."""

    def __init__(self, root: Path):
        self.src = root / "src"
        self._transformers_parent: Path | None = None
        self._cache: dict[Path, tuple[list[str], ast.Module]] = {}

    def parse(self, path: Path) -> tuple[list[str], ast.Module]:
        if path not in self._cache:
            text = path.read_text(encoding="utf-8")
            try:
                tree = ast.parse(text, filename=str(path))
            except SyntaxError as error:
                raise CopyMarkError(f"{path}:{error.lineno}: cannot parse: {error.msg}") from None
            self._cache[path] = (text.splitlines(), tree)
        return self._cache[path]

    def resolve(self, target: str) -> tuple[Path, str]:
        """``hf_vl.models.a.modeling_a.Cls.meth`` -> (``src/hf_vl/models/a/modeling_a.py``, ``Cls.meth``)."""
        parts = target.split(".")
        base = self._installed_parent("transformers") if parts[0] == "transformers" else self.src
        for split in range(len(parts) - 1, max(len(parts) - 3, 0), -1):  # object: `name` or `Class.method`
            module = base.joinpath(*parts[:split])
            for candidate in (module.with_suffix(".py"), module / "__init__.py"):
                if candidate.is_file():
                    return candidate, ".".join(parts[split:])
        raise CopyMarkError(f"no module under {base} for {target!r}")

    def _installed_parent(self, package: str) -> Path:
        """Folder holding an installed package, found without importing it."""
        if self._transformers_parent is None:
            spec = importlib.util.find_spec(package)
            if spec is None or spec.origin is None:
                raise CopyMarkError(f"{package} is not installed")
            self._transformers_parent = Path(spec.origin).parent.parent
        return self._transformers_parent

    def source_lines(self, target: str, include_decorators: bool) -> list[str]:
        path, qualified_name = self.resolve(target)
        lines, tree = self.parse(path)
        node = _find_object(tree, qualified_name)
        if node is None:
            raise CopyMarkError(f"{qualified_name!r} is not a class, function or method of {path}")
        return lines[_object_start(node, include_decorators) : node.end_lineno]


def _string_continuation_lines(lines: list[str]) -> set[int]:
    """0-based indices of lines that continue a multi-line string literal (their indentation is content)."""
    continuation = set()
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO("\n".join(lines) + "\n").readline))
    except (tokenize.TokenError, SyntaxError):
        return continuation
    for token in tokens:
        if token.type == tokenize.STRING and token.end[0] > token.start[0]:
            continuation.update(range(token.start[0], token.end[0]))  # 1-based start -> 0-based next lines
    return continuation


def _reindent(lines: list[str], indent: str) -> list[str]:
    """Move an object's code to ``indent``, leaving the inside of multi-line strings as it is."""
    current = len(lines[0]) - len(lines[0].lstrip())
    if lines[0][:current] == indent:
        return list(lines)
    keep = _string_continuation_lines(lines)
    reindented = []
    for index, line in enumerate(lines):
        if index in keep:
            reindented.append(line)
        elif not line.strip():
            reindented.append("")
        else:
            reindented.append(indent + line[current:])
    return reindented


def _copied_objects(tree: ast.Module) -> dict[int, ast.AST]:
    """Every class/def keyed by the 0-based lines a mark may sit on: above its decorators or above its keyword."""
    objects = {}
    for node in ast.walk(tree):
        if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            objects[node.lineno - 2] = node
            objects[_object_start(node, include_decorators=True) - 1] = node
    return objects


def check_file(path: Path, sources: SourceTree) -> list[CopyMismatch]:
    """Every drifted copy in one file; raises ``CopyMarkError`` naming ``path:line`` for a broken mark."""
    if not any(_COPIED_FROM.match(line) for line in path.read_text(encoding="utf-8").splitlines()):
        return []  # files without marks are not parsed: a half-written unrelated file is not this check's concern
    lines, tree = sources.parse(path)
    objects = _copied_objects(tree)
    mismatches = []
    for index, line in enumerate(lines):
        match = _COPIED_FROM.match(line)
        if match is None:
            continue
        try:
            replacements = parse_replacements(match.group("rest"))
            node = objects.get(index)
            if node is None:
                raise CopyMarkError("the mark must sit right above a class, a def or their decorators")
            has_decorators_below = _object_start(node, include_decorators=True) > index
            start = _object_start(node, include_decorators=has_decorators_below)
            observed = lines[start : node.end_lineno]
            expected = sources.source_lines(match.group("target"), include_decorators=has_decorators_below)
        except CopyMarkError as error:
            raise CopyMarkError(f"{path}:{index + 1}: {error}") from None
        indent = observed[0][: len(observed[0]) - len(observed[0].lstrip())]
        expected = apply_replacements("\n".join(_reindent(expected, indent)), replacements)
        expected_lines = [line.rstrip() for line in expected.split("\n")]
        observed_lines = [line.rstrip() for line in observed]
        if expected_lines != observed_lines:
            target = match.group("target")
            mismatches.append(
                CopyMismatch(path, index + 1, target, start, node.end_lineno, observed_lines, expected_lines)
            )
    return mismatches


def python_files(root: Path) -> list[Path]:
    return sorted((root / "src" / PACKAGE).rglob("*.py"))


def check_copies(root: Path = REPO_ROOT) -> list[CopyMismatch]:
    """Every drifted ``# Copied from`` copy under ``<root>/src/hf_vl``."""
    sources = SourceTree(root)
    mismatches = []
    for path in python_files(root):
        mismatches.extend(check_file(path, sources))
    return mismatches


def fix_copies(root: Path = REPO_ROOT, max_passes: int = 5) -> list[CopyMismatch]:
    """Rewrite drifted copies from their sources (repeated, so copies of copies settle); returns what was fixed."""
    fixed = []
    for _ in range(max_passes):
        mismatches = check_copies(root)
        if not mismatches:
            return fixed
        by_file: dict[Path, list[CopyMismatch]] = {}
        for mismatch in mismatches:
            by_file.setdefault(mismatch.path, []).append(mismatch)
        for path, file_mismatches in by_file.items():
            text = path.read_text(encoding="utf-8")
            lines = text.splitlines()
            for mismatch in sorted(file_mismatches, key=lambda m: m.start, reverse=True):
                lines[mismatch.start : mismatch.end] = mismatch.expected
            path.write_text("\n".join(lines) + ("\n" if text.endswith("\n") else ""), encoding="utf-8")
        fixed.extend(mismatches)
    remaining = check_copies(root)
    if remaining:
        raise CopyMarkError(f"copies still differ after {max_passes} passes (circular marks?): {remaining[0]}")
    return fixed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fix", action="store_true", help="rewrite drifted copies from their source")
    parser.add_argument("--root", type=Path, default=REPO_ROOT, help="repository root (holds src/hf_vl)")
    args = parser.parse_args(argv)
    try:
        if args.fix:
            for mismatch in fix_copies(args.root):
                print(f"fixed {mismatch.path}:{mismatch.line}: copy of {mismatch.target}")
            return 0
        mismatches = check_copies(args.root)
    except CopyMarkError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    for mismatch in mismatches:
        print(mismatch, file=sys.stderr)
    if mismatches:
        print(f"{len(mismatches)} copies differ from their source; run `python utils/check_copies.py --fix`.",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
