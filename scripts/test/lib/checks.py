"""What the Python test scripts share: one line per check, counted, and the
closing `N passed, M failed`, written as scripts/test/lib/lib.sh writes them.

A script in scripts/test/suites/<suite>/ imports it with:

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "lib"))
    import checks
"""

PASSED = 0
FAILED = 0


def ok(what: str, detail: str = "") -> None:
    global PASSED
    PASSED += 1
    print(f"  ok    {what}" + (f" ({detail})" if detail else ""), flush=True)


def fail(what: str) -> None:
    global FAILED
    FAILED += 1
    print(f"  FAIL  {what}", flush=True)


def check(condition, what: str, detail: str = "", *, detail_when_ok: bool = False):
    """Counts CONDITION as a pass or a failure (with DETAIL after a colon); returns it.
    With detail_when_ok, a pass shows DETAIL too, in parentheses."""
    if condition:
        ok(what, detail if detail_when_ok else "")
    else:
        fail(f"{what}{': ' + detail if detail else ''}")
    return condition


def summary() -> int:
    """Prints `N passed, M failed`; returns the exit status: 1 if any check failed."""
    print(f"{PASSED} passed, {FAILED} failed")
    return status()


def status() -> int:
    return 1 if FAILED else 0
