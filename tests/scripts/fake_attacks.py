"""Synthetic attacks, one per outcome, for testing the harness in scripts/attack.py."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from scripts.attacks import Attack


def _blocked():
    return None


def _escaped():
    return "read /etc/shadow"


def _raises():
    raise ValueError("tool raised instead of returning an observation")


def _segfault():
    os.kill(os.getpid(), signal.SIGSEGV)


def _hangs_with_child():
    # A child in the attack's process group that would outlive a plain kill of the parent.
    subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    time.sleep(600)


ATTACKS = [
    Attack("blocked", "t", _blocked),
    Attack("escaped", "t", _escaped),
    Attack("raises", "t", _raises),
    Attack("segfault", "t", _segfault),
    Attack("hangs", "t", _hangs_with_child, timeout_s=3.0),
]
