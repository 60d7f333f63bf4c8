"""The apps the OHIF end-to-end test runs: one row per dermpacs app.

Adding an app to the e2e test = adding (or completing) its row:

* ``module``: run as ``python -m <module> -i IN -o OUT`` (the MONAI Deploy app);
* ``make_input(folder)``: writes one generated DICOM photograph into ``folder`` and
  returns its path (keep it small: a few hundred pixels a side keeps the run short);
* ``measurement_label``: text OHIF must show for the SR's measurement, e.g.
  ``"F-Vitiligo"``; the value next to it is taken from the SR the app wrote;
* ``hidden_segments``: SEG segment labels that are *not* the lesion (context such as the
  face-skin denominator); they are hidden before the "lesion only" screenshot, and the
  overlay left must lie on the remaining segments. Empty when every segment is a lesion.

A row whose app package is not in this checkout yet, or whose generator or label is
still ``None``, is reported as skipped with the reason, so the table can list the
planned apps before they land.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

__all__ = ["AppCase", "APPS", "facial_photo"]


@dataclass(frozen=True)
class AppCase:
    name: str
    module: str
    make_input: Callable[[Path], Path] | None
    measurement_label: str | None
    hidden_segments: tuple[str, ...] = ()

    def missing(self) -> str | None:
        """Why this row cannot run yet, or None."""
        if importlib.util.find_spec(self.module.split(".")[0]) is None or importlib.util.find_spec(self.module) is None:
            return f"app {self.module} is not in this checkout yet"
        if self.make_input is None:
            return f"no input generator listed for {self.module} in tests/e2e/apps.py"
        if self.measurement_label is None:
            return f"no expected on-screen measurement label listed for {self.module} in tests/e2e/apps.py"
        return None


def facial_photo(folder: Path, seed: int = 7) -> Path:
    """The demo study's frontal face (scikit-image astronaut, painted vitiligo), 708x1060."""
    from apps.demo_study import make_demo_study

    return make_demo_study(folder, seed=seed, views=("frontal",), size=(708, 1060))[0].path


APPS: tuple[AppCase, ...] = (
    AppCase(
        name="facial_vitiligo",
        module="apps.facial_vitiligo",
        make_input=facial_photo,
        measurement_label="F-Vitiligo",
        hidden_segments=("Skin of face",),
    ),
    # Planned apps (DESIGN.md): fill in the generator and the label when each app lands.
    AppCase(name="vitiligo_lesion", module="apps.vitiligo_lesion", make_input=None, measurement_label=None),
    AppCase(name="skin_prick", module="apps.skin_prick", make_input=None, measurement_label=None),
    AppCase(name="scalp", module="apps.scalp", make_input=None, measurement_label=None),
)
