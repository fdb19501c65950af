"""`erudite-edge check`'s work: load each role of a bundle on a backend and run the bundle's check set through it
(core/check_set.py holds the check set and its verdicts; this module is the part that needs backends)."""

from __future__ import annotations

from typing import Callable

from erudite_edge.backends.registry import RunnerOptions, choose_backend, load_runner
from erudite_edge.core.bundle import Bundle
from erudite_edge.core.check_set import CheckResult, load_check_set, run_check
from erudite_edge.errors import BundleError


def check_bundle(
    bundle: Bundle,
    options: RunnerOptions | None = None,
    role: str | None = None,
    announce: Callable[[str], None] | None = None,
) -> list[CheckResult]:
    """Load each role of the (loaded) bundle as `options` say (backend and precision chosen once, for the
    first role, and kept for the others), run the check set, return the results."""
    check = load_check_set(bundle)
    roles = bundle.roles()
    if role is not None:
        if role not in roles:
            raise BundleError(f"--role {role!r}: this {bundle.kind} bundle has roles {', '.join(roles)}")
        roles = [role]
    opts = options or RunnerOptions(backend="onnxruntime", precision="fp32")
    first = choose_backend(bundle, roles[0], opts)
    results = []
    for r in roles:
        choice = first if r == roles[0] else choose_backend(bundle, r, opts, like=first)
        runner = load_runner(bundle, r, opts, choice=choice, announce=announce)
        try:
            results.append(run_check(runner, check, r, choice.precision, backend=runner.backend))
        finally:
            runner.close()
    return results
