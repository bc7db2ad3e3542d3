"""Campaign templates (Jinja2) rendered in a bounded sandbox.

A campaign's commands, collected file names and network constraints are Jinja2 templates.
They run in Jinja2's :class:`~jinja2.sandbox.SandboxedEnvironment` (no ``__class__``,
``__globals__``, ``mro``..., no ``include``/``import``/``extends``), with bounds on what a
template may build, so that a template can neither escape into Python nor exhaust the
machine, and ``enos campaign validate`` refuses it before anything is booked:

* text and lists built by an operator (``'A' * n``, ``~``, ``+``, ``%``), a filter or a
  function call: at most :data:`MAX_VALUE` characters/items, checked on the arguments
  before the call when they are already too big, and on the result;
* numbers given to a filter or a function (``center(n)``, ``'a'.ljust(n)``, a format width,
  ``range(n)``): at most :data:`MAX_NUMBER`; ``a ** b`` at most :data:`MAX_POWER_BITS` bits;
* a rendered template: at most :data:`MAX_TEXT` characters (a command line longer than that
  cannot be run), streamed and stopped as soon as it is longer;
* time: :data:`DEADLINE` seconds per rendering (a loop of loops is stopped);
* Python's own limits (recursion, memory) end as a template error too.

Every failure is a :class:`TemplateFailed` (a ConfigError: exit 2) saying which bound.
"""
from __future__ import annotations

import ctypes
import functools
import re
import string
import threading
from typing import Any, Dict, Optional

from enos.errors import ConfigError

#: longest rendered template (characters): ~ the longest argument a Linux exec takes
MAX_TEXT = 100_000
#: largest text, list or mapping a template may build on the way (characters + items)
MAX_VALUE = 4_000_000
#: largest number a filter or function may be given (a width, a count, a range end)
MAX_NUMBER = 100_000
#: largest integer ``**`` may build, in bits
MAX_POWER_BITS = 4096
#: seconds one rendering may take
DEADLINE = 2.0


class TemplateFailed(ConfigError):
    """A template could not be rendered (an error in it, or a bound it passed)."""


class _Bound(Exception):
    """A template passed a bound (raised inside the sandbox, reported as TemplateFailed)."""


class _Deadline(BaseException):
    """Raised asynchronously in a rendering thread past its deadline (a BaseException, so
    that no ``except Exception`` inside Jinja2 swallows it)."""


def _size(value, budget: int = MAX_VALUE) -> int:
    """Characters + items of ``value`` (nested lists, tuples, dicts), counted up to a
    little more than ``budget`` (then the exact figure does not matter)."""
    if isinstance(value, (str, bytes)):
        return len(value)
    if isinstance(value, dict):
        items = list(value.items())
        total = len(items)
        for k, v in items:
            if total > budget:
                break
            total += _size(k, budget - total) + _size(v, budget - total)
        return total
    if isinstance(value, (list, tuple, set, frozenset)):
        total = len(value)
        for v in value:
            if total > budget:
                break
            total += _size(v, budget - total)
        return total
    return 1


def _check_value(value, what: str):
    if _size(value) > MAX_VALUE:
        raise _Bound(f"{what} would be larger than {MAX_VALUE} characters")
    return value


def _check_numbers(args, kwargs, what: str) -> None:
    for a in list(args) + list(kwargs.values()):
        if isinstance(a, int) and not isinstance(a, bool) and abs(a) > MAX_NUMBER:
            raise _Bound(f"{what}: the number {_short(a)} is larger than {MAX_NUMBER}")
        if isinstance(a, float) and abs(a) > MAX_NUMBER and a == a:
            raise _Bound(f"{what}: the number {_short(a)} is larger than {MAX_NUMBER}")
        _check_value(a, f"{what}: an argument")


def _short(n) -> str:
    text = str(n) if not isinstance(n, int) or n.bit_length() < 200 else f"of {len(str(abs(n)))} digits"
    return text[:40]


_PERCENT = re.compile(r"%[#0\- +]*(\d+|\*)?(?:\.(\d+|\*))?")


def _check_widths(fmt: str, what: str) -> None:
    """Refuse a format string asking for a width or precision above MAX_NUMBER."""
    for m in _PERCENT.finditer(fmt):
        for g in m.groups():
            if g and g.isdigit() and int(g) > MAX_NUMBER:
                raise _Bound(f"{what}: a width of {g} is larger than {MAX_NUMBER}")
    try:
        fields = list(string.Formatter().parse(fmt))
    except ValueError:
        return
    for _, _, spec, _ in fields:
        for n in re.findall(r"\d+", spec or ""):
            if int(n) > MAX_NUMBER:
                raise _Bound(f"{what}: a width of {n} is larger than {MAX_NUMBER}")
        if spec and "{" in spec:
            _check_widths(spec, what)


def _check_replace(text, args, what: str) -> None:
    """Refuse ``text.replace(old, new)`` whose result would pass MAX_VALUE (computed from
    the number of matches before building it)."""
    if isinstance(text, str) and len(args) >= 2 and isinstance(args[0], str) and isinstance(args[1], str):
        old, new = args[0], args[1]
        grow = len(new) - len(old)
        if grow > 0:
            matches = (len(text) + 1) if old == "" else text.count(old)
            if len(text) + matches * grow > MAX_VALUE:
                raise _Bound(f"{what} would build more than {MAX_VALUE} characters")


def _bounded(func, name: str):
    """Wrap a filter or global function: numbers and sizes of its arguments and result."""
    from jinja2.utils import _PassArg
    skip = 1 + (_PassArg.from_obj(func) is not None)   # the filtered value (and context) is not a bound

    @functools.wraps(func)
    def call(*args, **kwargs):
        _check_numbers(args[skip:], kwargs, name)
        for a in args[:skip]:
            _check_value(a, name)
        if name == "filter 'replace'":
            _check_replace(str(args[skip - 1]), args[skip:], name)
        return _check_value(func(*args, **kwargs), f"the result of {name}")
    return call


def _environment():
    import jinja2
    from jinja2.compiler import CodeGenerator
    from jinja2.sandbox import SandboxedEnvironment

    class _Generator(CodeGenerator):
        def visit_Concat(self, node, frame):     # a ~ b: bounded like the operators
            self.write("environment.bounded_concat(")
            super().visit_Concat(node, frame)
            self.write(")")

    class BoundedSandbox(SandboxedEnvironment):
        """Jinja2's sandbox with the bounds of this module."""

        intercepted_binops = frozenset(["*", "**", "+", "%", "//", "/"])
        code_generator_class = _Generator

        def __init__(self):
            super().__init__(undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=True)
            self.globals.pop("lipsum", None)
            self.filters = {k: _bounded(f, f"filter '{k}'") for k, f in self.filters.items()}
            self.globals = {k: _bounded(f, f"'{k}'") if callable(f) and k != "range" else f
                            for k, f in self.globals.items()}

        def call_binop(self, context, operator, left, right):
            if operator == "*":
                for seq, n in ((left, right), (right, left)):
                    if isinstance(seq, (str, list, tuple)) and isinstance(n, int) and not isinstance(n, bool) \
                            and len(seq) * max(n, 0) > MAX_VALUE:
                        raise _Bound(f"'{operator}' would build more than {MAX_VALUE} characters or items")
            elif operator == "**":
                if isinstance(left, int) and isinstance(right, int) and not isinstance(left, bool) \
                        and abs(left) > 1 and right > 0 and right * abs(left).bit_length() > MAX_POWER_BITS:
                    raise _Bound(f"'**' would build a number of more than {MAX_POWER_BITS} bits")
            elif operator == "%" and isinstance(left, str):
                _check_widths(left, "'%' formatting")
                _check_numbers(right if isinstance(right, tuple) else (right,), {}, "'%' formatting")
            return _check_value(super().call_binop(context, operator, left, right), f"'{operator}'")

        def call(__self, __context, __obj, *args, **kwargs):   # noqa: N805 (Jinja2's signature)
            if isinstance(__obj, jinja2.Undefined):
                return super().call(__context, __obj, *args, **kwargs)     # raises: undefined
            name = getattr(__obj, "__name__", "a function").replace("safe_range", "range")
            if name == "replace":
                _check_replace(getattr(__obj, "__self__", None), args, "'replace'")
            _check_numbers(args, kwargs, f"'{name}'")
            return _check_value(super().call(__context, __obj, *args, **kwargs), f"the result of '{name}'")

        def wrap_str_format(self, value):
            if getattr(value, "__name__", "") in ("format", "format_map") and \
                    isinstance(getattr(value, "__self__", None), str):
                _check_widths(value.__self__, f"'{value.__name__}'")
            return super().wrap_str_format(value)

        def bounded_concat(self, text):
            return _check_value(text, "'~'")

    return BoundedSandbox()


_ENV = None
_LOCK = threading.Lock()


def environment():
    """Return the shared bounded sandbox (created once)."""
    global _ENV
    with _LOCK:
        if _ENV is None:
            _ENV = _environment()
        return _ENV


_FORBIDDEN = {"Include": "include", "Import": "import", "FromImport": "from ... import", "Extends": "extends"}


def parse(text: str):
    """Parse ``text``; return its AST. Raises TemplateFailed for a syntax error or an
    ``include``/``import``/``extends`` (a campaign template stands alone)."""
    import jinja2
    from jinja2 import nodes
    if len(text) > MAX_TEXT:
        raise TemplateFailed(f"the template is {len(text)} characters long; at most {MAX_TEXT}")
    try:
        ast = environment().parse(text)
    except jinja2.TemplateSyntaxError as e:
        raise TemplateFailed(f"template syntax error: {e.message}") from None
    except RecursionError:
        raise TemplateFailed("the template is nested too deeply") from None
    for kind, word in _FORBIDDEN.items():
        if any(True for _ in ast.find_all(getattr(nodes, kind))):
            raise TemplateFailed(f"a campaign template cannot use '{{% {word} %}}' (no other file is read)")
    return ast


def variables(text: str) -> set:
    """Return the names ``text`` uses without defining them (its scope must give them).
    Raises TemplateFailed as :func:`parse`."""
    from jinja2 import meta
    return set(meta.find_undeclared_variables(parse(text)))


@functools.lru_cache(maxsize=512)
def _compiled(text: str):
    parse(text)
    return environment().from_string(text)


def render(text: str, scope: Dict[str, Any], deadline: float = DEADLINE) -> str:
    """Render the template ``text`` with ``scope`` in the bounded sandbox; return the text.
    Undefined names are errors. Raises TemplateFailed (a ConfigError) naming the bound or
    the error."""
    import jinja2
    timer = _Timer(deadline)
    try:
        with timer:
            template = _compiled(text)
            out, size = [], 0
            for chunk in template.generate(**scope):
                size += len(chunk)
                if size > MAX_TEXT:
                    raise _Bound(f"the rendered text is longer than {MAX_TEXT} characters")
                out.append(chunk)
            return "".join(out)
    except _Deadline:
        raise TemplateFailed(f"rendering took more than {deadline:g} s (a loop too long?)") from None
    except _Bound as e:
        raise TemplateFailed(str(e)) from None
    except jinja2.exceptions.SecurityError as e:
        raise TemplateFailed(f"not allowed in a template: {e}") from None
    except TemplateFailed:
        raise
    except jinja2.TemplateError as e:
        raise TemplateFailed(str(e.message if hasattr(e, "message") and e.message else e)) from None
    except RecursionError:
        raise TemplateFailed("the template recurses too deeply") from None
    except MemoryError:
        raise TemplateFailed("the template needs more memory than this machine gives") from None
    except Exception as e:       # user code: any Python error in it is the template's error
        raise TemplateFailed(f"{type(e).__name__}: {e}") from None


class _Timer:
    """Raise :class:`_Deadline` in the current thread if its block takes longer than
    ``seconds`` (CPython's PyThreadState_SetAsyncExc: delivered between byte codes, so a
    pure-Python loop is stopped; a single long C call is bounded by the size checks)."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.lock = threading.Lock()
        self.done = False
        self.fired = False
        self.timer: Optional[threading.Timer] = None

    def _fire(self, ident: int) -> None:
        with self.lock:
            if not self.done:
                self.fired = True
                ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(ident), ctypes.py_object(_Deadline))

    def __enter__(self):
        self.timer = threading.Timer(self.seconds, self._fire, args=(threading.get_ident(),))
        self.timer.daemon = True
        self.timer.start()
        return self

    def __exit__(self, *exc):
        try:
            with self.lock:
                self.done = True
            self.timer.cancel()
        except _Deadline:
            pass
        if self.fired and not (exc and exc[0] is _Deadline):
            # fired after the block ended but before 'done': the exception is pending or
            # was delivered above; make sure it does not escape later
            ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(threading.get_ident()), None)
        return False


def render_data(value, scope: Dict[str, Any]):
    """Return ``value`` (nested dicts/lists) with every string rendered as a template."""
    if isinstance(value, str):
        return render(value, scope)
    if isinstance(value, dict):
        return {k: render_data(v, scope) for k, v in value.items()}
    if isinstance(value, list):
        return [render_data(v, scope) for v in value]
    return value
