"""Shared test fixtures.

``tests/`` is put on ``sys.path`` here, so that the test modules import their
helpers one way (``from toyrun import ...``, ``from reference.simulate import
...``) whether pytest is started as ``pytest`` or ``python -m pytest``, from
the repository root or elsewhere.

The real detector frames live in the project's shared data folder
(``../shared/data`` beside the repository).  The small ones the reader tests
need are also in ``tests/data/`` (see its README for origins and licences), so
a fresh clone runs those tests.  Setting ``DIFFSCREEN_SHARED_DATA`` to a
folder overrides the shared folder's location (an empty or missing folder
hides it: the tests that need the full set then skip).
"""

import os
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

#: Real frames bundled with the tests (a subset of the shared folder's ``real-frames`` and ``real-frames-2``).
TEST_DATA = TESTS / "data"


def shared_data_path() -> Path:
    """Where the shared data folder is: ``$DIFFSCREEN_SHARED_DATA``, else ``../shared/data`` beside the repository."""
    env = os.environ.get("DIFFSCREEN_SHARED_DATA")
    return Path(env) if env else TESTS.parent.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The project's shared data folder (real frames, CXIDB-76 annotations); skip if absent."""
    path = shared_data_path()
    if not path.is_dir():
        pytest.skip(f"shared data not found at {path}")
    return path


def find_real_frame(subfolder: str, name: str) -> Path | None:
    """A real frame by name: ``tests/data/``'s copy, else the shared folder's ``subfolder``'s, else None."""
    for path in (TEST_DATA / name, shared_data_path() / subfolder / name):
        if path.is_file():
            return path
    return None


@pytest.fixture(scope="session")
def real_frame():
    """A function giving the path of a real frame by name: ``tests/data/``'s copy, else the shared folder's.

    ``real_frame("real-frames", "idx-20130301060858401.cbf")`` looks in
    ``tests/data/``, then in the shared folder's ``real-frames``; it skips the
    test if neither holds the file.
    """

    def find(subfolder: str, name: str) -> Path:
        path = find_real_frame(subfolder, name)
        if path is None:
            pytest.skip(f"{name} is neither in {TEST_DATA} nor in the shared data")
        return path

    return find
