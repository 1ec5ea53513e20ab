"""Every registry refuses a second, different entry under a name (re-importing the same definition is allowed)."""

import pytest


def test_generators_refuse_duplicates():
    from evaluation.generation import GENERATOR_FACTORIES, register_generator

    def make(**kw):
        return None

    register_generator("dup-test")(make)
    register_generator("dup-test")(make)  # the same definition again (a re-import) is fine
    try:
        with pytest.raises(ValueError, match="already registered"):
            register_generator("dup-test")(lambda **kw: None)
    finally:
        GENERATOR_FACTORIES.pop("dup-test", None)


def test_suites_refuse_duplicates():
    from evaluation.registry import SUITES, discover, register_suite

    discover()
    name = sorted(SUITES)[0]
    other = type("OtherSuite", (type(SUITES[name]),), {})
    with pytest.raises(ValueError, match="already registered"):
        register_suite(other)
    assert type(SUITES[name]) is not other


def test_sections_refuse_duplicates():
    from reports.registry import load_sections, section

    key = load_sections()[0].key
    with pytest.raises(ValueError, match="registered twice"):
        section(key, "x", 0)(lambda ctx: [])
