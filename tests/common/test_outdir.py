"""An output folder one run owns (common.outdir): checked before use, locked atomically,
a second owner refused with the first one's name, a dead owner's lock taken over."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from common.outdir import LOCK_NAME, OutDirBusy, OutDirError, OutDirLock
from tests.waits import wait_for


def test_lock_creates_the_folder_and_names_its_owner(tmp_path):
    # given a folder that does not exist yet
    out = tmp_path / "a" / "b"
    # when a run takes it
    with OutDirLock(out, command="agegender run --out a/b") as lock:
        # then it exists and its lock file names this process
        owner = json.loads((out / LOCK_NAME).read_text())
        assert lock.held and owner["pid"] == os.getpid()
        assert owner["command"] == "agegender run --out a/b" and owner["host"]
    # and the lock file is gone afterwards
    assert not (out / LOCK_NAME).exists()


def test_second_owner_is_refused_with_a_message_naming_the_first(tmp_path):
    # given a folder owned by one lock
    with OutDirLock(tmp_path, command="agegender run --out X"):
        # when another one tries (flock: separate opens conflict, even in one process)
        with pytest.raises(OutDirBusy) as info:
            OutDirLock(tmp_path).acquire()
    # then the message names the first owner's pid and command
    assert f"pid {os.getpid()}" in str(info.value) and "agegender run --out X" in str(info.value)
    assert "in use by another run" in str(info.value)


def test_lock_of_a_killed_run_is_taken_over(tmp_path, caplog):
    # given a process that took the lock and was killed with SIGKILL (no clean-up)
    code = textwrap.dedent(f"""
        import sys, time
        from common.outdir import OutDirLock
        OutDirLock({str(tmp_path)!r}, command="dead run").acquire()
        print("locked", flush=True)
        time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        with pytest.raises(OutDirBusy):
            OutDirLock(tmp_path).acquire()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    # when a new run takes the folder
    wait_for(lambda: (tmp_path / LOCK_NAME).exists(), 5, "the dead run's lock file")
    with caplog.at_level("WARNING"):
        lock = OutDirLock(tmp_path).acquire()
    # then it gets it, and says whose lock it took over
    assert lock.held and f"pid {proc.pid}" in caplog.text and "dead run" in caplog.text
    lock.release()


def test_folder_below_a_file_is_refused_naming_the_file(tmp_path):
    # given a path through a regular file (as --out /etc/hostname/x)
    (tmp_path / "hostname").write_text("x")
    # then taking it fails with one message naming the file that is in the way
    with pytest.raises(OutDirError) as info:
        OutDirLock(tmp_path / "hostname" / "x").acquire()
    assert f"{tmp_path / 'hostname'} is a file" in str(info.value)
    assert "cannot create the output folder" in str(info.value)
