"""Fixtures of the boot tests: one BootSession per run, one TestBed per test.

Boot tests need root, systemd-nspawn and the packages of install_deps.sh; without
them they skip with the reason. Every test's mounts, loop devices, servers and
containers are released when the test ends, whether it passed or not, and a failed
test's report carries the machine's status file, bootstrap log and console.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import machine  # noqa: E402 - the harness modules live beside this file
import testbed  # noqa: E402

log = logging.getLogger(__name__)


@pytest.fixture(scope="session")
def boot_session():
    reason = machine.host_prerequisites_missing()
    if reason is not None:
        pytest.skip(reason)
    session = testbed.BootSession()
    try:
        session.open()
        yield session
    finally:
        session.close()


@pytest.fixture
def bed(boot_session, request):
    bed = boot_session.new_testbed(request.node.name.replace("[", "-").rstrip("]"))
    request.node.boot_testbed = bed
    try:
        yield bed
    finally:
        bed.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    bed = getattr(item, "boot_testbed", None)
    if bed is None or not report.failed or report.when == "teardown":
        return
    try:
        report.sections.append(("boot machine logs", bed.diagnostics()))
    except OSError as error:
        log.warning("could not collect boot logs: %s", error)
