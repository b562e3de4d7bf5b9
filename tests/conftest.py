import os

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile("ci", max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("dev", max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("TAXOSMOOTH_HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))


def pytest_report_header(config):
    return f"taxosmooth: TAXOSMOOTH_REQUIRE_WORDNET={os.environ.get('TAXOSMOOTH_REQUIRE_WORDNET', '0')}"


@pytest.fixture
def seed_tax():
    from _trees import seed_taxonomy

    return seed_taxonomy()


@pytest.fixture(scope="session")
def wordnet():
    """nltk's WordNet reader from :func:`taxosmooth.wordnet.load_wordnet`.

    Without WordNet data the test is skipped, with the reason; with
    ``TAXOSMOOTH_REQUIRE_WORDNET=1`` (set in CI) missing data fails the test.
    """
    from taxosmooth.errors import WordNetDataError
    from taxosmooth.wordnet import load_wordnet

    try:
        return load_wordnet()
    except WordNetDataError as exc:
        if os.environ.get("TAXOSMOOTH_REQUIRE_WORDNET") == "1":
            pytest.fail(f"TAXOSMOOTH_REQUIRE_WORDNET=1 but WordNet data is missing: {exc}", pytrace=False)
        pytest.skip(f"WordNet data not found (set TAXOSMOOTH_REQUIRE_WORDNET=1 to make this a failure): {exc}")
