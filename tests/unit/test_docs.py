"""The README's configuration table names every setting, and nothing that is not one."""

import re
from pathlib import Path

from shoal.settings import Settings

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_config_table_matches_settings() -> None:
    documented = set(re.findall(r"^\| `SHOAL_([A-Z0-9_]+)` \|", README.read_text(), re.M))
    assert documented == {name.upper() for name in Settings.model_fields}
