"""The key directory and its files must be the server user's own, and never symbolic links.

Mode bits alone prove nothing: another local user's 0700 directory is private to *them*, and a
key they planted there is one they hold. Ownership cases chown to `nobody`, so they need root.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from taskpass.server.clock import FixedClock
from taskpass.server.errors import ConfigError
from taskpass.server.issuer.keys import METADATA_FILE, KeyRing
from tests.unit.issuer.factories import RingFactory

NOBODY = 65534
EUID = os.geteuid()

needs_root = pytest.mark.skipif(EUID != 0, reason="chown to another user needs root")


def give_away(*paths: Path) -> None:
    for path in paths:
        os.chown(path, NOBODY, NOBODY, follow_symlinks=False)


def refusal(make_ring: RingFactory) -> str:
    with pytest.raises(ConfigError) as info:
        make_ring()
    return info.value.message


def another_users_ring(directory: Path, clock: FixedClock) -> KeyRing:
    """What another local user prepares: a 0700 directory of theirs holding a key of theirs."""
    ring = KeyRing.load_or_create(directory, algorithm="ES256", clock=clock)
    give_away(directory, *directory.iterdir())
    return ring


# -- the directory -------------------------------------------------------------------------------


@needs_root
def test_a_key_directory_owned_by_another_user_is_refused_though_it_is_0700(
    make_ring: RingFactory, key_dir: Path, clock: FixedClock
) -> None:
    another_users_ring(key_dir, clock)
    assert stat.S_IMODE(key_dir.stat().st_mode) == 0o700

    assert refusal(make_ring) == (
        f"signing key directory {key_dir} is owned by uid {NOBODY}, not uid {EUID} that taskpass "
        "runs as, so that user may have written or kept a copy of the keys; if its keys are this "
        f"server's own (restored by another user), run `chown -R {EUID} {key_dir}`; otherwise "
        "set [issuer] key_dir to a path this user owns or that does not exist yet"
    )


@needs_root
def test_a_key_directory_linked_to_another_users_directory_is_refused(
    make_ring: RingFactory, key_dir: Path, clock: FixedClock, tmp_path: Path
) -> None:
    another_users_ring(tmp_path / "theirs", clock)
    key_dir.symlink_to(tmp_path / "theirs")

    assert "is a symbolic link" in refusal(make_ring)


def test_a_key_directory_that_is_a_symbolic_link_is_refused_even_to_our_own_directory(
    make_ring: RingFactory, key_dir: Path, clock: FixedClock, tmp_path: Path
) -> None:
    KeyRing.load_or_create(tmp_path / "real", algorithm="ES256", clock=clock)
    key_dir.symlink_to(tmp_path / "real")

    assert refusal(make_ring) == (
        f"signing key directory {key_dir} is a symbolic link, which taskpass does not follow "
        "(whoever can change the link chooses the keys); set [issuer] key_dir to the real "
        "directory"
    )


def test_a_dangling_link_as_key_directory_is_refused_not_followed_to_create_it(
    make_ring: RingFactory, key_dir: Path, tmp_path: Path
) -> None:
    key_dir.symlink_to(tmp_path / "elsewhere")

    assert "is a symbolic link" in refusal(make_ring)
    assert not (tmp_path / "elsewhere").exists()


def test_a_key_directory_that_is_a_file_is_refused(make_ring: RingFactory, key_dir: Path) -> None:
    key_dir.write_bytes(b"")

    assert "cannot be created or read" in refusal(make_ring)


# -- the files in it -----------------------------------------------------------------------------


@needs_root
def test_a_key_file_owned_by_another_user_is_refused(make_ring: RingFactory, key_dir: Path) -> None:
    key_file = key_dir / f"{make_ring().active.kid}.pem"
    give_away(key_file)

    assert refusal(make_ring) == (
        f"signing key file {key_file} is owned by uid {NOBODY}, not uid {EUID} that taskpass runs "
        "as, so that user may have written or kept a copy of the keys; if it is this server's "
        f"own, run `chown {EUID} {key_file}`; otherwise restore it from backup"
    )


@needs_root
def test_key_metadata_owned_by_another_user_is_refused(
    make_ring: RingFactory, key_dir: Path
) -> None:
    make_ring()
    metadata = key_dir / METADATA_FILE
    give_away(metadata)

    assert refusal(make_ring) == (
        f"signing key metadata {metadata} is owned by uid {NOBODY}, not uid {EUID} that taskpass "
        "runs as, so that user may have written or kept a copy of the keys; if it is this "
        f"server's own, run `chown {EUID} {metadata}`; otherwise restore it from backup"
    )


@pytest.mark.parametrize("name", ["key", METADATA_FILE], ids=["key-file", "metadata"])
def test_a_file_in_the_key_directory_that_is_a_symbolic_link_is_refused(
    make_ring: RingFactory, key_dir: Path, tmp_path: Path, name: str
) -> None:
    kid = make_ring().active.kid
    linked = key_dir / (f"{kid}.pem" if name == "key" else name)
    target = tmp_path / "copy"
    target.write_bytes(linked.read_bytes())
    target.chmod(0o600)
    linked.unlink()
    linked.symlink_to(target)

    what = "signing key file" if name == "key" else "signing key metadata"
    assert refusal(make_ring) == (
        f"{what} {linked} is a symbolic link, which taskpass does not follow; "
        "replace the link with the file itself"
    )


def test_a_dangling_metadata_link_is_refused_not_taken_for_a_first_start(
    make_ring: RingFactory, key_dir: Path, tmp_path: Path
) -> None:
    key_dir.mkdir(mode=0o700)
    (key_dir / METADATA_FILE).symlink_to(tmp_path / "nowhere.json")

    assert "is a symbolic link" in refusal(make_ring)


# -- writing -------------------------------------------------------------------------------------


def test_a_link_planted_as_the_temporary_file_is_replaced_not_written_through(
    ring: KeyRing, key_dir: Path, tmp_path: Path
) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(b"untouched")
    (key_dir / f".{METADATA_FILE}.tmp").symlink_to(victim)

    ring.rotate()  # rewrites the metadata through its temporary file

    assert victim.read_bytes() == b"untouched"
    metadata = (key_dir / METADATA_FILE).lstat()
    assert stat.S_ISREG(metadata.st_mode)
    assert stat.S_IMODE(metadata.st_mode) == 0o600
    assert not (key_dir / f".{METADATA_FILE}.tmp").is_symlink()


def test_a_stale_temporary_file_open_to_others_is_replaced_by_a_private_one(
    ring: KeyRing, key_dir: Path
) -> None:
    stale = key_dir / f".{METADATA_FILE}.tmp"
    stale.write_bytes(b"left by a crash")
    stale.chmod(0o644)

    ring.rotate()

    assert stat.S_IMODE((key_dir / METADATA_FILE).stat().st_mode) == 0o600
    assert not stale.exists()
