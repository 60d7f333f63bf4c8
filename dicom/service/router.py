"""Routing: which app analyses an instance, decided by ordered rules on header values."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from pydicom import Dataset

from .config import RoutingRule


def routing_header(ds: Dataset) -> dict[str, Any]:
    """The header values rules may look at (no patient data), kept with the instance."""
    regions = []
    for item in getattr(ds, "AnatomicRegionSequence", None) or []:
        scheme, value = getattr(item, "CodingSchemeDesignator", ""), getattr(item, "CodeValue", "")
        if scheme and value:
            regions.append(f"{scheme}:{value}")
    return {
        "SOPClassUID": str(getattr(ds, "SOPClassUID", "") or ""),
        "Modality": str(getattr(ds, "Modality", "") or ""),
        "BodyPartExamined": str(getattr(ds, "BodyPartExamined", "") or ""),
        "AnatomicRegion": regions,
        "SeriesDescription": str(getattr(ds, "SeriesDescription", "") or ""),
    }


def rule_matches(rule: RoutingRule, header: dict[str, Any], called_ae: str) -> bool:
    if rule.called_ae_title and rule.called_ae_title.strip() != called_ae.strip():
        return False
    if rule.sop_class_uid and header.get("SOPClassUID") not in rule.sop_class_uid:
        return False
    if rule.modality and header.get("Modality", "").upper() not in {m.upper() for m in rule.modality}:
        return False
    if rule.body_part_examined and header.get("BodyPartExamined", "").upper() not in {
        b.upper() for b in rule.body_part_examined
    }:
        return False
    if rule.anatomic_region_code and not set(header.get("AnatomicRegion", [])) & set(rule.anatomic_region_code):
        return False
    if rule.series_description_regex and not re.search(
        rule.series_description_regex, header.get("SeriesDescription", ""), re.IGNORECASE
    ):
        return False
    return True


@dataclass(frozen=True)
class Router:
    rules: list[RoutingRule]

    def route(self, header: dict[str, Any], called_ae: str) -> RoutingRule | None:
        """The first rule that matches, or None (the instance is kept and reported as unrouted)."""
        return next((rule for rule in self.rules if rule_matches(rule, header, called_ae)), None)
