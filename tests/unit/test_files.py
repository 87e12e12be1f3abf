"""synch.files: atomic replacement keeps the old file or the new one, and the right owner."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from synch.files import atomic_write, owned_like_parent, read_text, remove


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


def test_new_file_gets_the_mode_and_no_temp_file_remains(tmp_path: Path) -> None:
    target = tmp_path / "pjsip_synch.conf"
    atomic_write(target, "[1001]\ntype=endpoint\n")
    assert target.read_text() == "[1001]\ntype=endpoint\n"
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    assert leftovers(tmp_path) == []


def test_existing_file_keeps_its_mode_and_owner(tmp_path: Path) -> None:
    target = tmp_path / "sip_synch.conf"
    target.write_text("old\n")
    os.chmod(target, 0o604)
    if os.geteuid() == 0:
        os.chown(target, 4321, 4322)
    atomic_write(target, "new\n")
    st = target.stat()
    assert target.read_text() == "new\n"
    assert stat.S_IMODE(st.st_mode) == 0o604
    if os.geteuid() == 0:
        assert (st.st_uid, st.st_gid) == (4321, 4322)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to hand files to another user")
def test_new_file_written_as_root_belongs_to_the_directory_owner(tmp_path: Path) -> None:
    # /etc/asterisk belongs to asterisk: a root-owned 0640 file there is unreadable to it.
    os.chown(tmp_path, 4321, 4322)
    target = tmp_path / "pjsip_synch.conf"
    atomic_write(target, "x\n")
    st = target.stat()
    assert (st.st_uid, st.st_gid) == (4321, 4322)
    lock = tmp_path / ".synch.lock"
    lock.write_text("")
    owned_like_parent(lock)
    assert (lock.stat().st_uid, lock.stat().st_gid) == (4321, 4322)


def test_failed_write_leaves_the_old_file_and_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "f.conf"
    target.write_text("old complete file\n")
    with pytest.raises(UnicodeEncodeError):
        atomic_write(target, "half\ud800written")  # fails while writing the temp file
    assert target.read_text() == "old complete file\n"
    assert leftovers(tmp_path) == []


def test_missing_directory_is_an_oserror_naming_nothing_written(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        atomic_write(tmp_path / "nope" / "f.conf", "x")
    assert not (tmp_path / "nope").exists()


def test_read_text_and_remove(tmp_path: Path) -> None:
    target = tmp_path / "f"
    assert read_text(target) is None
    assert remove(target) is False
    target.write_text("é\n", encoding="utf-8")
    assert read_text(target) == "é\n"
    assert remove(target) is True
    assert not target.exists()


def test_symlink_in_place_of_the_file_is_replaced_never_followed(tmp_path: Path) -> None:
    """The directory's owner (asterisk) may plant a symlink where synch writes, to have root
    change another file's mode or owner, or write through it."""
    outside = tmp_path / "outside"
    outside.write_text("someone else's\n")
    os.chmod(outside, 0o600)
    directory = tmp_path / "etc"
    directory.mkdir()
    target = directory / "pjsip_synch.conf"
    target.symlink_to(outside)
    before = outside.stat()
    atomic_write(target, "[1001]\n")
    assert not target.is_symlink() and target.read_text() == "[1001]\n"
    assert stat.S_IMODE(target.stat().st_mode) == 0o640  # a new file's mode, not the target's
    after = outside.stat()
    assert outside.read_text() == "someone else's\n"
    assert (after.st_mode, after.st_uid, after.st_gid) == (before.st_mode, before.st_uid,
                                                          before.st_gid)
