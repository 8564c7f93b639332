"""Reading a configuration folder (config/, dialplans/, prompts/) into a Hotline.

Every problem is reported with file, line and reason; a folder with any error yields
no Hotline at all, so a running controller keeps the configuration it has.
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from ivr.core.dialplan import Flow
from ivr.core.directory import Directory
from ivr.core.prompts import Catalog
from ivr.core.routing import Hotline
from ivr.core.transfer import Strategies

CONFIG_FILES = ("hotline.yaml", "regions.yaml", "trunks.yaml", "lines.yaml")
# Far above any real file (the bundled ones are a few KiB); parsing is pure Python.
MAX_FILE_BYTES = 1 << 20


@dataclass(frozen=True, order=True)
class Problem:
    file: str
    line: int
    reason: str
    severity: str = "error"  # error | warning

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.severity}: {self.reason}"


class ConfigError(Exception):
    """A configuration folder that cannot be used; ``problems`` says why, each with a line."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = sorted(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


class _Loader(yaml.SafeLoader):
    """Safe YAML that refuses a key written twice (the second would silently win) and
    reads only true/false as booleans, as YAML 1.2 does: `on:` and `no:` are words here.
    """

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                raise yaml.constructor.ConstructorError(
                    None, None, "a key must be a plain value, not a list or mapping",
                    key_node.start_mark,
                )  # fmt: skip
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"key {key!r} appears twice (first on line {seen[key]})",
                    key_node.start_mark,
                )
            seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)

    def construct_yaml_timestamp(self, node: yaml.ScalarNode) -> Any:
        # 2022-02-30 looks like a date to YAML and fails inside the constructor, with
        # no line; say where it is.
        try:
            return super().construct_yaml_timestamp(node)
        except ValueError as exc:
            raise yaml.constructor.ConstructorError(
                None, None, f"{node.value} is not a date: {exc}", node.start_mark
            ) from None

    def construct_yaml_int(self, node: yaml.ScalarNode) -> Any:
        try:
            return super().construct_yaml_int(node)
        except ValueError as exc:  # more digits than Python converts
            raise yaml.constructor.ConstructorError(
                None, None, f"not a usable number: {exc}", node.start_mark
            ) from None


_Loader.add_constructor("tag:yaml.org,2002:timestamp", _Loader.construct_yaml_timestamp)
_Loader.add_constructor("tag:yaml.org,2002:int", _Loader.construct_yaml_int)
_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


@dataclass
class Document:
    """A parsed YAML file and its node tree, to turn a data path into a line number."""

    path: Path
    display: str
    data: Any
    node: yaml.Node | None

    def has(self, loc: tuple[Any, ...]) -> bool:
        """Does the file itself hold the last part of this path (not a model's choice tag)?"""
        node = self.node
        if node is None or not loc:
            return True
        for part in loc[:-1]:
            node = _child(node, part) or node
        return _child(node, loc[-1]) is not None

    def line_of(self, loc: tuple[Any, ...]) -> int:
        """The line of the deepest part of ``loc`` the file holds: a key's own line."""
        node = self.node
        if node is None:
            return 1
        line = node.start_mark.line + 1
        for part in loc:
            found = _child_with_key(node, part)
            if found is not None:
                key, node = found
                line = (key or node).start_mark.line + 1
        return line


def _child_with_key(node: yaml.Node, part: Any) -> tuple[yaml.Node | None, yaml.Node] | None:
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            if str(key_node.value) == str(part):
                return key_node, value_node
    if isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
        return None, node.value[part]
    return None


def _child(node: yaml.Node, part: Any) -> yaml.Node | None:
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            if str(key_node.value) == str(part):
                return value_node
    if isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
        return node.value[part]
    return None


def read_yaml(path: Path, display: str) -> tuple[Document | None, list[Problem]]:
    try:
        text = _read_text(path)
    except (OSError, UnicodeDecodeError) as exc:
        return None, [Problem(display, 1, f"cannot read: {exc}")]
    loader = None
    try:
        loader = _Loader(text)  # checks every character first
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        return None, [Problem(display, line, f"YAML: {exc.problem or exc.context}")]
    except yaml.reader.ReaderError as exc:  # a character YAML does not allow (NUL …)
        line = text.count("\n", 0, exc.position) + 1
        return None, [Problem(display, line, f"YAML: character {exc.character!r} is not allowed")]
    except RecursionError:
        return None, [Problem(display, 1, "YAML: nested too deeply")]
    except (yaml.YAMLError, ValueError, TypeError) as exc:  # none seen; still no traceback
        return None, [Problem(display, 1, f"YAML: {exc}")]
    finally:
        if loader is not None:
            loader.dispose()
    return Document(path, display, data, node), []


def _read_text(path: Path) -> str:
    """A regular file's text: a FIFO or a device would block or never end."""
    with open(path, "rb", opener=_open_nonblocking) as f:
        info = os.fstat(f.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise OSError(f"{path.name} is not a regular file")
        if info.st_size > MAX_FILE_BYTES:
            raise OSError(f"{info.st_size} bytes, more than {MAX_FILE_BYTES} a file may hold")
        return f.read(MAX_FILE_BYTES + 1).decode("utf-8")


def _open_nonblocking(path: str, flags: int) -> int:
    # Opening a FIFO for reading waits for a writer; without O_NONBLOCK a check would too.
    return os.open(path, flags | os.O_NONBLOCK)


def exists(path: Path) -> bool:
    """Whether something is at `path`; True when it cannot be told (a folder we may not
    read), so reading it reports why rather than calling it missing."""
    try:
        path.stat()
    except FileNotFoundError:
        return False
    except OSError:
        return True
    return True


def validation_problems(doc: Document, exc: ValidationError, prefix: tuple = ()) -> list[Problem]:
    """One problem per place: a value that fits none of a union's choices is one error."""
    merged: dict[tuple, list[str]] = {}
    for error in exc.errors():
        loc = tuple(error["loc"])
        if loc and error["type"] != "missing" and not doc.has(prefix + loc):
            loc = loc[:-1]  # the last part names a union's choice, not a key of the file
        reason = error["msg"]
        if error["type"] == "string_type" and isinstance(error.get("input"), int | float):
            reason += ' (write numbers and codes in quotes, e.g. "12345")'
        reasons = merged.setdefault(loc, [])
        if reason not in reasons:
            reasons.append(reason)
    return [
        Problem(
            doc.display,
            doc.line_of(prefix + loc),
            f"{'.'.join(str(p) for p in loc) or '(top)'}: {' — or: '.join(reasons)}",
        )
        for loc, reasons in merged.items()
    ]


def validate(doc: Document, model: type[BaseModel]) -> tuple[Any, list[Problem]]:
    if not isinstance(doc.data, dict):
        return None, [Problem(doc.display, 1, "expected a mapping at the top of the file")]
    try:
        return model.model_validate(doc.data), []
    except ValidationError as exc:
        return None, validation_problems(doc, exc)


@dataclass
class Loaded:
    """What a folder held: the Hotline (None on any error), the parsed documents, problems."""

    root: Path
    hotline: Hotline | None
    documents: dict[str, Document] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    flow_files: dict[str, str] = field(default_factory=dict)


def _display(root: Path, path: Path) -> str:
    """A path as the admin typed it: relative below the working folder, else absolute."""
    try:
        relative = os.path.relpath(path, Path.cwd())
    except ValueError:
        return str(path)
    return str(path) if relative.startswith("..") else relative


def load_folder(root: Path) -> Loaded:
    """Read and validate a whole configuration folder; semantic checks are in ivr.check.

    Use ivr.check.load_hotline() to get a Hotline that is safe to run.
    """
    result = Loaded(root=root, hotline=None)
    problems = result.problems

    # config/: the four files form one Directory; each top-level key remembers its file.
    merged: dict[str, Any] = {}
    owner: dict[str, Document] = {}
    for name in CONFIG_FILES:
        path = root / "config" / name
        display = _display(root, path)
        if not exists(path):
            problems.append(Problem(display, 1, "missing configuration file"))
            continue
        doc, errs = read_yaml(path, display)
        problems += errs
        if doc is None:
            continue
        result.documents[f"config/{name}"] = doc
        if not isinstance(doc.data, dict):
            problems.append(Problem(display, 1, "expected a mapping at the top of the file"))
            continue
        for key, value in doc.data.items():
            if key in merged:
                problems.append(
                    Problem(
                        display,
                        doc.line_of((key,)),
                        f"{key!r} is already given in {owner[key].display}",
                    )
                )
                continue
            merged[key] = value
            owner[key] = doc
    directory = None
    if not problems:
        try:
            directory = Directory.model_validate(merged)
        except ValidationError as exc:
            for error in exc.errors():
                loc = tuple(error["loc"])
                doc = owner.get(str(loc[0])) if loc else None
                doc = doc or next(iter(owner.values()))
                sub = ValidationError.from_exception_data(exc.title, [error])  # type: ignore[list-item]
                problems += validation_problems(doc, sub)

    # prompts/catalog.yaml
    catalog = None
    path = root / "prompts" / "catalog.yaml"
    doc, errs = read_yaml(path, _display(root, path))
    problems += errs
    if doc is not None:
        result.documents["prompts/catalog.yaml"] = doc
        catalog, errs = validate(doc, Catalog)
        problems += errs

    # transfer/strategies.yaml
    transfers = None
    path = root / "transfer" / "strategies.yaml"
    doc, errs = read_yaml(path, _display(root, path))
    problems += errs
    if doc is not None:
        result.documents["transfer/strategies.yaml"] = doc
        transfers, errs = validate(doc, Strategies)
        problems += errs

    # dialplans/*.yaml: one flow a file, named as the file.
    flows: dict[str, Flow] = {}
    flow_paths, errs = _flow_files(root)
    problems += errs
    for path in flow_paths:
        display = _display(root, path)
        doc, errs = read_yaml(path, display)
        problems += errs
        if doc is None:
            continue
        result.documents[f"dialplans/{path.name}"] = doc
        flow, errs = validate(doc, Flow)
        problems += errs
        if flow is None:
            continue
        if flow.flow != path.stem:
            problems.append(
                Problem(
                    display,
                    doc.line_of(("flow",)),
                    f"flow {flow.flow!r} must be in a file named {flow.flow}.yaml",
                )
            )
            continue
        flows[flow.flow] = flow
        result.flow_files[flow.flow] = f"dialplans/{path.name}"

    # A flow that failed to load is left out, so the checks can still look at the rest;
    # check_folder() drops the Hotline again when anything at all was wrong.
    if directory is not None and catalog is not None and transfers is not None:
        result.hotline = Hotline(
            directory, flows, catalog, transfers, directory.defaults.step_budget
        )
    return result


def _flow_files(root: Path) -> tuple[list[Path], list[Problem]]:
    """dialplans/*.yaml, and a problem for what cannot be listed or looks like a flow
    saved under another name (a .yml file would be silently left out)."""
    folder = root / "dialplans"
    display = _display(root, folder)
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except FileNotFoundError:
        return [], []
    except OSError as exc:
        return [], [Problem(display, 1, f"cannot read: {exc}")]
    paths, problems = [], []
    for entry in entries:
        if entry.name.endswith(".yaml"):
            paths.append(Path(entry.path))
        elif entry.name.endswith(".yml"):
            problems.append(
                Problem(_display(root, Path(entry.path)), 1,
                        "not read: flows are dialplans/*.yaml files", "warning")
            )  # fmt: skip
    return paths, problems
