"""``exitflow docs``: the documentation pages generated from the project itself.

- ``docs/results/*.md`` (and their plots in ``docs/results/img/``): from the JSON outputs of the
  runs and the committed benchmark files, by ``tasks.reports.site``;
- ``docs/reference/cli.md``: every ``exitflow`` command with its help and options, read from the
  typer app (``flows.cli.app``) through click;
- ``docs/reference/params.md``: every ``params.yaml`` section and key with its type, default and
  description, read from the pydantic models of ``config.params`` (a key's description is its
  ``Field(description=...)`` or the comment at the end of its line in ``config/params.py``).

Rendering is deterministic: the same artifacts and code give byte-identical pages
(``tests/flows/test_docs.py`` checks the committed reference pages against the code).
"""

from __future__ import annotations

import inspect
import io
import tokenize
import typing
from pathlib import Path

RENDER_COMMAND = "exitflow docs"
RESULTS_DIR = Path("docs") / "results"
REFERENCE_DIR = Path("docs") / "reference"


# ---- docs/reference/cli.md -------------------------------------------------------------------------

def _default_text(param) -> str:
    default = param.default
    if default is None or (callable(default) and not isinstance(default, type)):
        return ""
    if isinstance(default, (list, tuple)):
        return ", ".join(map(str, default)) if default else ""
    return str(default.value if hasattr(default, "value") else default)


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def cli_reference() -> str:
    """``docs/reference/cli.md``: the global options, then every command (alphabetical) with its
    help and a table of its options (names, type, default, help)."""
    import typer

    from flows.cli import app

    group = typer.main.get_command(app)  # typer's own (vendored) click command objects

    def options_table(command) -> str:
        rows = []
        for p in command.params:
            if getattr(p, "hidden", False):
                continue
            names = ", ".join(f"`{n}`" for n in [*p.opts, *p.secondary_opts])
            descriptor = getattr(p, "type_descriptor", None)
            kind = "flag" if getattr(p, "is_flag", False) else (
                _type_text(descriptor.annotation) if descriptor is not None else p.type.name.lower())
            rows.append(f"| {names} | {kind}{' (repeatable)' if getattr(p, 'multiple', False) else ''} | "
                        f"{_cell(_default_text(p)) and f'`{_cell(_default_text(p))}`'} | {_cell(getattr(p, 'help', '') or '')} |")
        if not rows:
            return "No options.\n"
        return "| option | type | default | help |\n|---|---|---|---|\n" + "\n".join(rows) + "\n"

    text = ["# Command line reference\n",
            f"Generated from the typer app in `flows/cli.py` by `{RENDER_COMMAND}`; do not edit by hand.\n",
            "Usage: `exitflow [GLOBAL OPTIONS] COMMAND [OPTIONS]`.\n",
            inspect.cleandoc(group.help or "") + "\n",
            "## Global options\n", options_table(group)]
    for name, command in sorted(group.commands.items()):
        text += [f"## `exitflow {name}`\n", inspect.cleandoc(command.help or "") + "\n", options_table(command)]
    return "\n".join(text)


# ---- docs/reference/params.md ----------------------------------------------------------------------

def line_comments(cls) -> dict[str, str]:
    """``{field name: the comment ending its line}`` in the class body of ``cls``."""
    source = inspect.getsource(cls)
    comments, line_field = {}, {}
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.NAME and tok.start[1] == 4 and tok.start[0] not in line_field:
            line_field[tok.start[0]] = tok.string
        elif tok.type == tokenize.COMMENT and tok.start[0] in line_field:
            comments[line_field[tok.start[0]]] = tok.string.lstrip("#").strip()
    return comments


def _type_text(annotation) -> str:
    text = getattr(annotation, "__name__", None) if not typing.get_args(annotation) else None
    text = text or str(annotation).replace("typing.", "").replace("pathlib.", "").replace("NoneType", "None")
    return text.replace("config.params.", "")


CONSTRAINTS = {"ge": ">=", "gt": ">", "le": "<=", "lt": "<", "min_length": "min length", "max_length": "max length"}


def _constraint_text(meta) -> str:
    """A pydantic field constraint (``annotated_types.Ge(ge=8)``) as ``>= 8``."""
    for attr, sign in CONSTRAINTS.items():
        if getattr(meta, attr, None) is not None:
            return f"{sign} {getattr(meta, attr)}"
    return str(meta)


def _value_text(value) -> str:
    from pydantic import BaseModel

    if isinstance(value, BaseModel):
        return "(section)"
    if isinstance(value, Path):
        return value.as_posix()
    return repr(value) if isinstance(value, str) else str(value)


def params_reference() -> str:
    """``docs/reference/params.md``: every section of ``config.params.Params`` (nested sections
    by their dotted path) with one row per key: type, default, description."""
    from pydantic import BaseModel

    from config.params import Params

    def is_section(annotation) -> bool:
        return inspect.isclass(annotation) and issubclass(annotation, BaseModel)

    def section(path: str, model) -> list[str]:
        comments = line_comments(model)
        rows, nested = [], []
        for name, info in model.model_fields.items():
            default = info.get_default(call_default_factory=True)
            description = info.description or comments.get(name, "")
            constraints = ", ".join(_constraint_text(m) for m in info.metadata)
            text = " ".join(t for t in (_cell(description), f"({_cell(constraints)})" if constraints else "") if t)
            rows.append(f"| `{name}` | `{_cell(_type_text(info.annotation))}` | `{_cell(_value_text(default))}` | {text} |")
            key = f"{path}.{name}" if path else name
            if is_section(info.annotation):
                nested.append((key, info.annotation))
            else:  # a mapping of sections (data.custom: name -> TaskSpec)
                nested += [(f"{key}.<name>", arg) for arg in typing.get_args(info.annotation)[1:] if is_section(arg)]
        title = f"## `{path}`" if path else "## Top level"
        doc = inspect.cleandoc(model.__doc__ or "") if model.__doc__ != BaseModel.__doc__ else ""
        out = [title + "\n", (doc + "\n") if doc else "",
               "| key | type | default | description |\n|---|---|---|---|\n" + "\n".join(rows) + "\n"]
        for sub_path, sub in nested:
            out += section(sub_path, sub)
        return out

    text = ["# params.yaml reference\n",
            (f"Generated from the pydantic models in `config/params.py` by `{RENDER_COMMAND}`; do not edit by hand. "
             "Defaults are the code's; `params.yaml` overrides some of them, and `--set section.key=value` overrides "
             "either on the command line.\n")]
    return "\n".join(line for line in text + section("", Params) if line != "")


REFERENCE_PAGES = {"cli.md": cli_reference, "params.md": params_reference}


# ---- the command ------------------------------------------------------------------------------------

def render_docs(params_path: str | Path = "params.yaml", overrides: list[str] = (), out: Path | None = None) -> list[Path]:
    """Writes every results page and both reference pages under ``out`` (default: ``docs/`` beside
    the params file); returns their paths."""
    from config.params import load_params
    from flows.layout import Layout
    from tasks.io import atomic_write_text
    from tasks.reports.site import results_pages, write_site

    params = load_params(params_path, list(overrides))
    root = params.path(".")
    out = Path(out) if out is not None else root / "docs"
    pages = results_pages(Layout.from_params(params), root, params.past_future.tasks, params.leco.tasks,
                          params.train.strategies)
    written = write_site(pages, root, out / RESULTS_DIR.name, RENDER_COMMAND)
    written += [atomic_write_text(out / REFERENCE_DIR.name / name, build()) for name, build in REFERENCE_PAGES.items()]
    return written
