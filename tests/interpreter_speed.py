"""Making Triton's interpreter faster for whole-model runs, without changing what it computes.

Under ``TRITON_INTERPRET=1`` every kernel runs as Python over numpy. Three costs dominate a
network's forward and backward pass, and each has a switch here:

* the integer-overflow sanitizer (``sanitize_overflow``), which redoes every 32-bit add, sub
  and mul in int64 and asserts the range: :func:`overflow_checks`;
* re-patching ``triton.language`` on every call of a ``@triton.jit`` helper from inside a kernel
  (Triton 3.8 patches the language for the launch, then again, never restored, for each device
  function call, which is most of a small program's time): :func:`cached_device_calls` patches
  once per launch and module set instead, which is what the repeated patching amounts to;
* program steps: an interpreter target with a larger ``block_scale``
  (:func:`fastconv.ops.target.larger_interpreter_blocks`, which ``fastconv verify`` and the
  dry-run benchmark use too: it patches nothing) lets blocks grow.

:func:`whole_model` combines them; the model tests run under it. The kernel tests keep the
sanitizer on and the default blocks, since that is where an int32 offset bug or a
tile-boundary bug would show. The first two patch Triton's interpreter, so they live here,
with the tests, not in the library. Every switch is a no-op on a GPU and where Triton's
interpreter lacks what it changes.
"""
import contextlib
import dataclasses
import inspect
import threading

from fastconv.ops.target import larger_interpreter_blocks

_state = threading.local()


@contextlib.contextmanager
def overflow_checks(enabled: bool):
    """Switch the interpreter's integer-overflow sanitizer on or off while the block runs."""
    try:
        from triton.runtime import interpreter
        builder = interpreter.interpreter_builder
        saved = builder.options
        builder.options = dataclasses.replace(saved, sanitize_overflow=enabled)
    except (ImportError, AttributeError, TypeError):
        yield
        return
    try:
        yield
    finally:
        builder.options = saved


def _language_modules(fn) -> frozenset:
    """The ``triton.language`` modules a jitted function's globals hold: what patching it
    touches (the same rule as the interpreter's own ``_patch_lang``)."""
    import triton.language as tl
    return frozenset(id(v) for v in fn.__globals__.values()
                     if inspect.ismodule(v) and v in (tl, tl.core))


# the Triton releases whose interpreter internals ``cached_device_calls`` was written against
PATCHED_TRITON = ((3, 8),)


def _triton_version() -> tuple:
    import re

    import triton
    return tuple(int(p) for p in re.findall(r"\d+", triton.__version__)[:2])


@contextlib.contextmanager
def cached_device_calls():
    """While the block runs, patch the language for a device function call only once per
    launch and set of language modules, instead of on every call.

    It replaces two methods of Triton's interpreter with copies of what they do, so it runs
    only on the Triton releases it was checked against (``PATCHED_TRITON``); on any other it
    warns once and leaves the interpreter as it is (slower, the same results)."""
    if _triton_version() not in PATCHED_TRITON:
        if not getattr(_state, "warned", False):
            _state.warned = True
            import warnings
            warnings.warn(f"fastconv: Triton {'.'.join(map(str, _triton_version()))}'s "
                          "interpreter is not one cached_device_calls knows; whole-model runs "
                          "use the plain interpreter (slower, same results)", RuntimeWarning,
                          stacklevel=3)
        yield
        return
    try:
        from triton.runtime import interpreter as I
        grid_call, device_call = I.GridExecutor.__call__, I.InterpretedFunction.__call__
        patch_lang, error = I._patch_lang, I.InterpreterError
    except (ImportError, AttributeError):
        yield
        return

    def launch(self, *args, **kwargs):
        outer = getattr(_state, "patched", None)
        _state.patched = set()  # a launch starts from a freshly patched language
        try:
            return grid_call(self, *args, **kwargs)
        finally:
            _state.patched = outer

    def call(self, *args, **kwargs):
        patched = getattr(_state, "patched", None)
        key = _language_modules(self.fn)
        if patched is None:  # not inside a launch: behave exactly as Triton does
            return device_call(self, *args, **kwargs)
        if key not in patched:
            patch_lang(self.fn)
            patched.add(key)
        fn = self.rewrite()
        try:
            return fn(*args, **kwargs)
        except Exception as e:  # the interpreter's own wrapping of device-call errors
            raise error(repr(e)) from e

    I.GridExecutor.__call__, I.InterpretedFunction.__call__ = launch, call
    try:
        yield
    finally:
        I.GridExecutor.__call__, I.InterpretedFunction.__call__ = grid_call, device_call


@contextlib.contextmanager
def whole_model(check_overflow: bool = False, block_scale: int = 4):
    """All three switches: the sanitizer as ``check_overflow`` says, device calls cached, blocks
    up to ``block_scale`` times larger. About 4x faster on ResNet-50's forward and backward."""
    with overflow_checks(check_overflow), cached_device_calls(), \
            larger_interpreter_blocks(block_scale):
        yield
