"""The suite's own guards: the mutation table is current, and CI cannot skip an oracle."""

import pytest

from . import helpers
from .mutation.run import BREAKAGES, Breakage, check_table


def test_every_breakage_in_the_mutation_table_is_current():
    # A refactor that moves a snippet makes its breakage stale: update tests/mutation/run.py
    # (the snippet as the code now reads) rather than letting the measurement shrink.
    assert len(BREAKAGES) >= 20
    assert check_table() == []


def test_a_stale_breakage_is_reported(tmp_path):
    (tmp_path / "m.py").write_text("x = 1\nx = 1\n", encoding="utf-8")
    (tmp_path / "n.py").write_text("a = 1\nb = 2\n", encoding="utf-8")
    stale = [Breakage("gone", "g", "m.py", "y = 2", "y = 3", ("m.py",)),
             Breakage("twice", "t", "m.py", "x = 1", "x = 2", ("t.py::test_f",)),
             Breakage("indent", "i", "n.py", "b = 2", "    b = 3", ("n.py",))]
    problems = check_table(tmp_path, stale)
    assert any(p.startswith("indent: the broken n.py does not compile") for p in problems)
    assert any(p.startswith("gone: the snippet occurs 0 times") for p in problems)
    assert any(p.startswith("twice: the snippet occurs 2 times") for p in problems)
    assert any(p.startswith("twice: target t.py does not exist") for p in problems)


def test_a_missing_oracle_fails_under_require_oracles_and_skips_otherwise(monkeypatch):
    monkeypatch.setattr(helpers, "ORACLES", helpers.ORACLES | {"no_such_oracle_package"})
    monkeypatch.setenv("MINILM_REQUIRE_ORACLES", "1")
    with pytest.raises(ImportError, match="MINILM_REQUIRE_ORACLES=1 and the oracle 'no_such_oracle_package'"):
        helpers.oracle("no_such_oracle_package", reason="a test needs it")
    monkeypatch.delenv("MINILM_REQUIRE_ORACLES")
    with pytest.raises(pytest.skip.Exception):
        helpers.oracle("no_such_oracle_package", reason="a test needs it")
    monkeypatch.setenv("MINILM_REQUIRE_ORACLES", "1")
    with pytest.raises(pytest.skip.Exception):  # not an oracle (say, CuPy for GPU-only tests): still a skip
        helpers.oracle("no_such_optional_package", reason="GPU only")
