"""``TARGET`` of ``daggerflow worker``: the user's module and the Dagger engine in it."""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import DaggerError
from .group import UsageFailure, err_console

if TYPE_CHECKING:

    from ..engine import Dagger


def load_engine(target: str) -> Dagger:
    """``module``, ``module:attr`` or ``path/to/file.py[:attr]`` -> the Dagger engine there.

    ``attr`` may be dotted. Without it the module must hold exactly one ``Dagger`` instance
    at top level. Every way this can fail raises ``UsageFailure`` with one line that says
    what is wrong and what to do; an exception raised by the module's own code also prints
    that code's frames (see ``_import_target``).
    """
    from ..engine import Dagger

    module_name, _, attr = target.partition(":")
    if not module_name:
        raise UsageFailure(f"TARGET {target!r}: expected MODULE[:ATTR] or path/to/file.py[:ATTR]")
    module = _import_target(module_name)
    if attr:
        found: Any = module
        for part in attr.split("."):
            if not hasattr(found, part):
                raise UsageFailure(
                    f"{module_name!r} has no attribute {attr!r}; name the variable that holds the Dagger engine"
                )
            found = getattr(found, part)
        if not isinstance(found, Dagger):
            raise UsageFailure(
                f"{target!r} is not a Dagger engine (it is a {type(found).__name__}); "
                "name the variable that holds the Dagger(...) object"
            )
        return found
    engines = {name: v for name, v in vars(module).items() if isinstance(v, Dagger)}
    if len(engines) != 1:
        if not engines:
            raise UsageFailure(
                f"{module_name!r} holds no Dagger engine at top level; create one there with "
                "Dagger(...), or name where it is as MODULE:ATTR"
            )
        raise UsageFailure(
            f"{module_name!r} holds {len(engines)} Dagger engines ({', '.join(sorted(engines))}); "
            "name one as MODULE:ATTR"
        )
    return next(iter(engines.values()))


def _import_target(module_name: str) -> Any:
    # As `python -m` does: modules in the current directory are importable.
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    as_file = module_name.endswith(".py") or os.sep in module_name
    try:
        return _import_file(Path(module_name)) if as_file else importlib.import_module(module_name)
    except DaggerError as exc:
        # The module built an engine with a wrong option: a mistake in the TARGET.
        raise UsageFailure(f"{module_name!r}: {type(exc).__name__}: {exc}") from exc
    except SyntaxError as exc:
        where = f"{exc.filename}:{exc.lineno}" if exc.filename else module_name
        code = (exc.text or "").strip()
        shown = f" (in: {code})" if code else ""
        raise UsageFailure(f"cannot import {module_name!r}: {where}: {exc.msg}{shown}") from exc
    except ModuleNotFoundError as exc:
        if exc.name is not None and module_name.split(".")[0] in (exc.name, exc.name.split(".")[0]):
            raise UsageFailure(
                f"cannot import {module_name!r}: no module named {exc.name!r} "
                f"(run from the directory that holds it, or give a path: path/to/file.py)"
            ) from exc
        raise UsageFailure(
            f"cannot import {module_name!r}: {_user_frame(exc)}: {exc} (install it, or fix the import)"
        ) from exc
    except FileNotFoundError as exc:
        raise UsageFailure(f"cannot import {module_name!r}: no such file ({exc.filename or module_name})") from exc
    except Exception as exc:
        # The module's own code raised: its frames are what the user needs to fix it, so
        # they are shown (without importlib's and daggerflow's), then the one-line summary.
        _print_user_traceback(exc)
        raise UsageFailure(
            f"importing {module_name!r} raised {type(exc).__name__}: {exc} (at {_user_frame(exc)})"
        ) from exc


def _import_file(path: Path) -> Any:
    if not path.is_file():
        raise FileNotFoundError(2, "no such file", str(path))
    name = path.stem
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise FileNotFoundError(2, "not a Python module", str(path))
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    sys.path.insert(0, str(path.resolve().parent))
    spec.loader.exec_module(module)
    return module


def _user_frames(exc: BaseException) -> list[traceback.FrameSummary]:
    """The frames of a traceback that are the user's: not importlib's, not this module's."""
    here = os.path.dirname(os.path.abspath(__file__))
    return [
        f
        for f in traceback.extract_tb(exc.__traceback__)
        if not f.filename.startswith("<frozen") and not os.path.abspath(f.filename).startswith(here + os.sep)
    ]


def _user_frame(exc: BaseException) -> str:
    frames = _user_frames(exc)
    return f"{frames[-1].filename}:{frames[-1].lineno}" if frames else "?"


def _print_user_traceback(exc: BaseException) -> None:
    lines = traceback.format_list(_user_frames(exc))
    if lines:
        err_console.print("".join(lines).rstrip(), highlight=False, markup=False)

