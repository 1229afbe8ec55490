"""Fixtures shared by the test modules."""

import pytest


def _rss_shmem() -> int:
    """This process's resident shared memory, in bytes (/proc/self/status's RssShmem)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("RssShmem:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no RssShmem in /proc/self/status")


@pytest.fixture
def rss_shmem():
    """A function giving this process's resident shared memory now, in bytes."""
    return _rss_shmem
