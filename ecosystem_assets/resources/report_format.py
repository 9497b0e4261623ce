"""How the sales report presents its numbers: the currency of its amounts (REPORT_CURRENCY)."""

from __future__ import annotations

import dagster as dg
from pydantic import Field


class ReportFormat(dg.ConfigurableResource):
    """Presentation settings of the sales email (validated in `Settings`: an ISO 4217 code Babel knows)."""

    currency: str = Field(default="USD", description="ISO 4217 code of the amounts (REPORT_CURRENCY).")
