"""Same config and seed: byte-identical data files, whatever the run's timing or OUT path.

(That the number of tasks changes files but not records is checked by the Ray test, which runs
with another task count than the local reference.)"""

from __future__ import annotations

import re

import pyarrow.parquet as pq
import pytest
from helpers import demo_runs

pytestmark = pytest.mark.slow  # runs stages, subprocesses or training: not in `make test-fast`


def test_same_config_gives_byte_identical_outputs(tmp_path_factory):
    """The demo again, stage by stage in fresh processes as `make` runs it: the same bytes. The run
    also shows that no stage writes outside OUT: the project and HOME are unchanged."""
    config, reference = demo_runs.reference_run(tmp_path_factory)
    stages = demo_runs.cpu_stages()
    base = config.parent.parent.parent
    # The same config in another file, run into another OUT at another time.
    again = demo_runs.make_project(base, executor=dict(demo_runs.REFERENCE_EXECUTOR), name="again")
    out, home, tmp = base / "out-again", base / "home", base / "tmp"
    home.mkdir()
    tmp.mkdir()
    # matplotlib (the dataset card's plots) keeps its font list in ~/.cache/matplotlib: a library
    # cache, not output, and the only thing allowed to appear outside OUT.
    skip = {home / ".cache" / "matplotlib"}
    watched = (demo_runs.ROOT, home)
    before = [demo_runs.snapshot(w, skip) for w in watched]
    demo_runs.run_all(again, out, stages, env={"HOME": str(home), "TMPDIR": str(tmp)})
    assert [demo_runs.snapshot(w, skip) for w in watched] == before
    first, second = demo_runs.file_digests(reference, stages), demo_runs.file_digests(out, stages)
    assert first and first == second
    # Nothing variable is embedded in the files: no OUT path, no timestamp in Parquet metadata.
    for path in [p for s in stages for p in demo_runs.data_files(out, s)]:
        assert str(out).encode() not in path.read_bytes() and str(reference).encode() not in path.read_bytes()
        if path.suffix == ".parquet":
            metadata = pq.read_metadata(path)
            assert metadata.created_by.startswith("parquet-cpp-arrow")
            for key, value in (metadata.metadata or {}).items():
                assert not re.search(rb"20\d\d-\d\d-\d\d", value), f"{path}: {key!r} holds a date"
