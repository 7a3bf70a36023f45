"""The docs that must stay in step with the code."""

import os
import re

from tempest import config

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def read(*parts):
    with open(os.path.join(REPO, *parts), encoding="utf-8") as handle:
        return handle.read()


def test_configuration_reference_is_generated_from_settings():
    text = read("docs", "configuration.md")
    reference = text.split("<!-- reference:start -->\n", 1)[1].split("<!-- reference:end -->", 1)[0]
    assert reference.strip() == config.markdown().strip()


def test_ci_runs_the_readme_test_command():
    readme = read("README.md")
    commands = re.findall(r"^    (python3 -m venv .*)$", readme, re.MULTILINE)
    assert len(commands) == 2, "the README has exactly two set-up commands"
    test_command = next(c for c in commands if "pytest" in c)
    assert test_command in read(".ci", "run")


def test_protocol_doc_lists_every_counter():
    from tempest.stats import COUNTERS

    text = read("docs", "protocol.md")
    missing = [name for name in COUNTERS if f"`{name}`" not in text]
    assert not missing
