"""User-facing errors: the CLI prints these as one line and exits non-zero, without a traceback."""


class EdgesegError(Exception):
    """A problem with the user's input (unknown name, missing file, bad weights...), with the fix in the text."""

    exit_code = 2


class Terminated(BaseException):
    """SIGTERM, raised by the CLI's signal handler so that ``finally`` blocks and staging clean-up run. A
    BaseException, like KeyboardInterrupt, so that no ``except Exception`` fallback swallows it."""


INTERRUPTS = (KeyboardInterrupt, SystemExit, Terminated)


def interrupt_in_chain(exc: BaseException) -> BaseException | None:
    """The KeyboardInterrupt / SystemExit / Terminated behind ``exc``, if any: torch wraps an interrupt that lands
    during its lazy imports in its own exception types (TorchExportError <- AttributeError <- KeyboardInterrupt),
    so a broad ``except Exception`` fallback must re-raise it instead of carrying on."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, INTERRUPTS):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def reraise_interrupt(exc: BaseException) -> None:
    """Inside a broad ``except Exception``: re-raise the interrupt ``exc`` carries, if it carries one."""
    interrupt = interrupt_in_chain(exc)
    if interrupt is not None:
        raise interrupt


def at_least(value: float | None, minimum: float, option: str) -> None:
    """A count or limit given on the command line (or in a config) must be at least ``minimum``; None is unset."""
    if value is not None and not value >= minimum:  # `not >=` also refuses NaN
        raise EdgesegError(f"{option} {value}: must be at least {minimum}")
