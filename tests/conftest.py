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
