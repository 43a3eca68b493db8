"""A module of kinds that fails at import, the way a missing setting makes one fail."""

from __future__ import annotations

import os

BILLING_URL = os.environ["ACME_BILLING_URL"]
