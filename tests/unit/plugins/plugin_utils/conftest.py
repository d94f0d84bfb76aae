# Copyright: edgeai.fleet contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Fixtures of the release builder's tests (release_build_fixtures.py)."""

from __future__ import annotations

from release_build_fixtures import ca, real_model, registry, store  # noqa: F401  # pylint: disable=unused-import
