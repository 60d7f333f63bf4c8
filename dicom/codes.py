"""Coded concepts used in dermpacs SEG and SR objects.

Standard codes are the ones verified in DESIGN.md (SNOMED CT "SCT", DICOM "DCM",
UCUM units). Concepts with no standard code (for example "percent of face skin
depigmented") live in the private coding scheme ``99DERMPACS``; every object that uses
one of them must declare the scheme in its CodingSchemeIdentificationSequence, which
:func:`coding_scheme_identification` provides.
"""

from __future__ import annotations

from pydicom.sr.coding import Code
from highdicom.coding_schemes import CodingSchemeIdentificationItem

# --- Private coding scheme -------------------------------------------------------------
DERMPACS_SCHEME = "99DERMPACS"
"""Designator of the private coding scheme (PS3.3 8.2: private designators start with 99)."""

_SH_MAX = 16  # CodeValue is SH
_LO_MAX = 64  # CodeMeaning is LO


def private_code(value: str, meaning: str) -> Code:
    """Return a concept of the ``99DERMPACS`` scheme, checking DICOM length limits.

    Later analyses add their own concepts through this function so that every private
    code is checked the same way.
    """
    if not value or len(value) > _SH_MAX:
        raise ValueError(
            f"private code value {value!r} must be 1-{_SH_MAX} characters (CodeValue is SH)"
        )
    if "\\" in value or "\\" in meaning:
        raise ValueError("private code value and meaning must not contain a backslash")
    if not meaning or len(meaning) > _LO_MAX:
        raise ValueError(
            f"private code meaning {meaning!r} must be 1-{_LO_MAX} characters "
            "(CodeMeaning is LO)"
        )
    return Code(value, DERMPACS_SCHEME, meaning)


def coding_scheme_identification() -> CodingSchemeIdentificationItem:
    """Declare the ``99DERMPACS`` scheme (goes into CodingSchemeIdentificationSequence)."""
    return CodingSchemeIdentificationItem(
        designator=DERMPACS_SCHEME,
        name="dermpacs private concepts",
        version="1",
        responsible_organization="dermpacs project",
    )


F_VITILIGO = private_code("F-VITILIGO", "F-Vitiligo (percent of face skin depigmented)")
# The visit's views pooled: all vitiligo pixels / all face-skin pixels of the series.
F_VITILIGO_VISIT = private_code("F-VITILIGO-VISIT", "F-Vitiligo of the visit (all views pooled)")
FACE_SKIN_MASK_METHOD = private_code("FACE-MASK-METHOD", "Face-skin mask method")
MASK_FACEMESH = private_code("MASK-FACEMESH", "FaceMesh oval minus eyes/brows/lips")
MASK_RETINAFACE_ELLIPSE = private_code("MASK-RFACE-ELL", "RetinaFace box ellipse fallback")
# Two areas are reported in one group, so each needs its own concept name (SCT "Area"
# alone would make them indistinguishable in viewers and when read back).
VITILIGO_AREA = private_code("VITILIGO-AREA", "Vitiligo area")
FACE_SKIN_AREA = private_code("FACE-SKIN-AREA", "Face skin area")

# Result quality flags (models.quality): one coded answer per reason not to trust a result.
RESULT_QUALITY_FLAG = private_code("QUALITY-FLAG", "Result quality flag")
QUALITY_FLAG_CODES = {
    "several-faces": private_code("QF-SEVERAL-FACES", "Several faces found; check the analysed one"),
    "face-small": private_code("QF-FACE-SMALL", "Face small in the frame"),
    "image-small": private_code("QF-IMAGE-SMALL", "Image too small to resolve lesion borders"),
    "low-contrast": private_code("QF-LOW-CONTRAST", "Low lesion/skin contrast"),
    "model-vs-colour-rule": private_code("QF-DISAGREE", "Model and colour rule disagree strongly"),
    "little-skin": private_code("QF-LITTLE-SKIN", "Little visible skin in the photograph"),
    "light-background": private_code("QF-LIGHT-BACKGR", "Light background as light as the lesions"),
}

# --- Findings and morphology (SNOMED CT) ------------------------------------------------
VITILIGO = Code("56727007", "SCT", "Vitiligo")
ERYTHEMA = Code("70819003", "SCT", "Erythema")
"""Erythema as a morphologic abnormality: the right segmented property type."""
ERYTHEMA_FINDING = Code("247441003", "SCT", "Erythema")
"""Erythema as a clinical finding: the right SR finding type."""
WHEAL = Code("247472004", "SCT", "Wheal")
ALOPECIA = Code("56317004", "SCT", "Alopecia")
FOLLICULITIS = Code("13600006", "SCT", "Folliculitis")
SEBORRHEIC_DERMATITIS_OF_SCALP = Code("156329007", "SCT", "Seborrheic dermatitis of scalp")

# --- Anatomy ---------------------------------------------------------------------------
FACE = Code("89545001", "SCT", "Face")
SKIN_OF_FACE = Code("73897004", "SCT", "Skin of face")
SCALP = Code("41695006", "SCT", "Scalp")
SKIN_OF_SCALP = Code("43067004", "SCT", "Skin of scalp")
SKIN = Code("39937001", "SCT", "Skin")

# --- Segment categories ----------------------------------------------------------------
MORPHOLOGICALLY_ABNORMAL_STRUCTURE = Code("49755003", "SCT", "Morphologically abnormal structure")
TISSUE = Code("85756007", "SCT", "Tissue")
"""Usual segment category for normal anatomy such as the face-skin mask."""

# --- Measurements and grades -------------------------------------------------------------
AREA = Code("42798000", "SCT", "Area")
DIAMETER = Code("81827009", "SCT", "Diameter")
LONG_AXIS = Code("103339001", "SCT", "Long axis")
SEVERITY = Code("246112005", "SCT", "Severity")
MILD = Code("255604002", "SCT", "Mild")
MODERATE = Code("6736007", "SCT", "Moderate")
SEVERE = Code("24484000", "SCT", "Severe")

# --- Procedure and algorithm family -----------------------------------------------------
PHOTOGRAPHY_OF_PATIENT = Code("197157006", "SCT", "Photography of patient")
ARTIFICIAL_INTELLIGENCE = Code("123110", "DCM", "Artificial Intelligence")
"""Algorithm family (CID 7162) of the dermpacs models."""
DEVICE = Code("121007", "DCM", "Device")
"""SR observer type: the results come from software, not a person."""

# --- Photograph view --------------------------------------------------------------------
# DCM 111031 "Image View" is the concept name used for views in DICOM SR; the values are
# the SNOMED CT view concepts of CID 4010 (frontal / left lateral / right lateral).
PHOTOGRAPH_VIEW = Code("111031", "DCM", "Image View")
VIEW_FRONTAL = Code("399033003", "SCT", "frontal")
VIEW_LEFT = Code("399173006", "SCT", "left lateral")
VIEW_RIGHT = Code("399198007", "SCT", "right lateral")
VIEW_UNKNOWN = Code("261665006", "SCT", "Unknown")
VIEW_CODES: dict[str, Code] = {
    "left": VIEW_LEFT,
    "frontal": VIEW_FRONTAL,
    "right": VIEW_RIGHT,
    "unknown": VIEW_UNKNOWN,
}

# --- UCUM units ------------------------------------------------------------------------
PERCENT = Code("%", "UCUM", "Percent")
PIXELS = Code("{pixels}", "UCUM", "pixels")
SQUARE_MILLIMETER = Code("mm2", "UCUM", "square millimeter")
MILLIMETER = Code("mm", "UCUM", "millimeter")
GRADE = Code("{grade}", "UCUM", "grade")
"""Unit for grades sent as NUM (OHIF does not display coded answers)."""

# --- Scalp grading (apps.scalp; SEEDS.md D): six indicators, grade 0-3 ------------------
NONE = Code("260413007", "SCT", "None")
"""Grade 0 ("none/good") as the severity answer (SNOMED CT qualifier value)."""
SCALP_MICRO_KERATIN = private_code("SCALP-MK", "Micro-keratin grade")
SCALP_EXCESS_SEBUM = private_code("SCALP-SEB", "Excess sebum grade")
SCALP_INTERFOLLICULAR_ERYTHEMA = private_code("SCALP-IFE", "Erythema between follicles grade")
SCALP_FOLLICULAR_ERYTHEMA_PUSTULES = private_code("SCALP-FEP", "Follicular erythema/pustules grade")
SCALP_DANDRUFF = private_code("SCALP-DAN", "Dandruff grade")
SCALP_HAIR_LOSS = private_code("SCALP-HL", "Hair loss grade")
SCALP_FINDING = private_code("SCALP-ASSESS", "Scalp condition assessment")


def scalp_probability_code(indicator_code: str, grade: int, indicator_meaning: str) -> Code:
    """'<indicator> P(grade k)' concept, e.g. SCALP-SEB-P2 "Excess sebum P(grade 2)"."""
    return private_code(f"{indicator_code}-P{grade}", f"{indicator_meaning} P(grade {grade})")

# --- Skin prick test (apps.skin_prick; SEEDS.md C): one group per prick-site reaction ---
# Erythema area/diameters are measured on the whole erythematous reaction (outer border,
# wheal included), as clinicians and the paper's experts outline it.
WHEAL_AREA = private_code("WHEAL-AREA", "Wheal area")
ERYTHEMA_AREA = private_code("ERYTHEMA-AREA", "Erythema area (wheal included)")
WHEAL_MEAN_DIAMETER = private_code("WHEAL-MEAN-DIAM", "Wheal mean diameter")
ERYTHEMA_MEAN_DIAMETER = private_code("ERY-MEAN-DIAM", "Erythema mean diameter")
WHEAL_ERYTHEMA_RATIO = private_code("WHEAL-ERY-RATIO", "Wheal/erythema area ratio")
PIXEL_LENGTH = Code("{pixel}", "UCUM", "pixel")
"""Length unit of an uncalibrated photograph (areas use PIXELS)."""
NO_UNITS = Code("1", "UCUM", "no units")
"""Unit of a dimensionless ratio."""
# Skin prick panel reading (models.prick.panel): one group per site, one for the test.
PRICK_SITE_RESULT = private_code("PRICK-RESULT", "Skin prick site result (1 positive, 0 negative)")
PRICK_TEST_VALID = private_code("PRICK-VALID", "Skin prick test valid (1 yes, 0 no)")
PRICK_SITES_READ = private_code("PRICK-SITES-READ", "Skin prick sites read")
SITES_UNIT = Code("{sites}", "UCUM", "sites")
ALLERGEN = private_code("PRICK-ALLERGEN", "Allergen")
SCALE_FROM_PIXEL_SPACING = private_code("SCALE-PIXSPACING", "Scale from Pixel Spacing")
SCALE_FROM_PANEL_GRID = private_code("SCALE-PANEL-GRID", "Scale from panel site spacing")
SCALE_UNCERTAINTY = private_code("SCALE-UNCERTAIN", "Scale uncertainty (1 SD)")
NOT_READABLE = private_code("NOT-READABLE", "Not readable")
POSITIVE = Code("10828004", "SCT", "Positive")
NEGATIVE = Code("260385009", "SCT", "Negative")
MM_PER_PIXEL = Code("mm/{pixel}", "UCUM", "millimeter per pixel")
RESULT_UNIT = Code("{result}", "UCUM", "result")

# --- Vitiligo close-up (apps.vitiligo_lesion; SEEDS.md B): one group per photograph ---
VITILIGO_SKIN_PERCENT = private_code("VIT-SKIN-PCT", "Vitiligo area (percent of visible skin)")
VISIBLE_SKIN_AREA = private_code("VISIBLE-SKIN", "Visible skin area")
VITILIGO_RGB_DIFFERENCE = private_code("VIT-RGB-DIFF", "Mean RGB distance, lesion vs surrounding skin")
VITILIGO_DELTA_E2000 = private_code("VIT-DE2000", "CIEDE2000, lesion vs surrounding skin")
VITILIGO_LESION_COUNT = private_code("VIT-LESIONS", "Number of vitiligo lesions")
LESION_COUNT_UNIT = Code("{lesions}", "UCUM", "lesions")

# --- Visits over time (TID 1502 time point, comparisons with earlier visits) -------------
BASELINE = Code("121079", "DCM", "Baseline")
"""Time point type of the first visit, and the event the temporal offset counts from."""
POSTTREATMENT = Code("126074", "DCM", "Posttreatment")
"""Time point type of every later visit."""
DAYS = Code("d", "UCUM", "day")
COMMENT = Code("121106", "DCM", "Comment")
PERCENTAGE_POINTS = Code("%", "UCUM", "Percent")
"""Differences of two percentages are reported in % too (the concept name says 'points')."""
YES_NO_UNIT = Code("{yes=1 no=0}", "UCUM", "yes=1 no=0")
"""Unit of a reached/not-reached answer sent as NUM (OHIF shows NUMs, not coded answers)."""
F_VITILIGO_BASELINE = private_code("F-VIT-BASELINE", "F-Vitiligo at baseline visit")
F_VITILIGO_PREVIOUS = private_code("F-VIT-PREVIOUS", "F-Vitiligo at previous visit")
F_VITILIGO_CHANGE_BASELINE = private_code("F-VIT-CHG-BL", "F-Vitiligo change since baseline (points)")
F_VITILIGO_CHANGE_PREVIOUS = private_code("F-VIT-CHG-PREV", "F-Vitiligo change since previous visit (points)")
F_VITILIGO_RELATIVE_CHANGE = private_code("F-VIT-CHG-BL-PCT", "F-Vitiligo change since baseline (% of baseline)")
F_VITILIGO_50 = private_code("F-VIT50", "F-Vitiligo50 reached (50 % reduction from baseline)")
F_VITILIGO_75 = private_code("F-VIT75", "F-Vitiligo75 reached (75 % reduction from baseline)")
F_VITILIGO_90 = private_code("F-VIT90", "F-Vitiligo90 reached (90 % reduction from baseline)")
DAYS_SINCE_BASELINE = private_code("DAYS-SINCE-BL", "Days since baseline visit")
DAYS_SINCE_PREVIOUS = private_code("DAYS-SINCE-PREV", "Days since previous visit")
BASELINE_VISIT_DATE = private_code("BASELINE-DATE", "Baseline visit date")
PREVIOUS_VISIT_DATE = private_code("PREVIOUS-DATE", "Previous visit date")
BASELINE_REPORT = private_code("BASELINE-SR", "Baseline visit report")
PREVIOUS_REPORT = private_code("PREVIOUS-SR", "Previous visit report")
REPIGMENTED_AREA = private_code("REPIGMENTED-AREA", "Repigmented since baseline, area")
NEW_DEPIGMENTATION_AREA = private_code("NEW-DEPIG-AREA", "New depigmentation since baseline, area")
UNCHANGED_VITILIGO_AREA = private_code("UNCHANGED-AREA", "Unchanged vitiligo since baseline, area")
REPIGMENTATION = private_code("REPIGMENTATION", "Repigmentation")
NEW_DEPIGMENTATION = private_code("NEW-DEPIG", "New depigmentation")
