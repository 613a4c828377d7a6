"""SNOMED CT codes for structure names medseg knows, for models that give names only (nnU-Net, bundles).

A DICOM SEG wants a category and a type code per segment. medseg's own pipelines carry them;
an nnU-Net ``dataset.json`` or a bundle's metadata has only names ("liver", "kidney_left").
:func:`known_codes` matches such a name, case, spaces and underscores aside, to the codes of
the structure; unknown names get None and the writers fall back to a generic Tissue code.
"""

from __future__ import annotations

import re

from medseg.volume import Code

ANATOMICAL_STRUCTURE: Code = ("91723000", "SCT", "Anatomical Structure")
ALTERED_STRUCTURE: Code = ("49755003", "SCT", "Morphologically Altered Structure")

_STRUCTURES: dict[str, tuple[str, str]] = {
    "liver": ("10200004", "Liver"),
    "spleen": ("78961009", "Spleen"),
    "kidney": ("64033007", "Kidney"),
    "kidneyleft": ("18639004", "Left kidney"),
    "leftkidney": ("18639004", "Left kidney"),
    "kidneyright": ("9846003", "Right kidney"),
    "rightkidney": ("9846003", "Right kidney"),
    "pancreas": ("15776009", "Pancreas"),
    "stomach": ("69695003", "Stomach"),
    "gallbladder": ("28231008", "Gallbladder"),
    "aorta": ("15825003", "Aorta"),
    "heart": ("80891009", "Heart"),
    "lung": ("39607008", "Lung"),
    "lungleft": ("44029006", "Left lung"),
    "leftlung": ("44029006", "Left lung"),
    "lungright": ("3341006", "Right lung"),
    "rightlung": ("3341006", "Right lung"),
    "urinarybladder": ("89837001", "Urinary bladder"),
    "bladder": ("89837001", "Urinary bladder"),
    "esophagus": ("32849002", "Esophagus"),
    "inferiorvenacava": ("64131007", "Inferior vena cava"),
    "brain": ("12738006", "Brain"),
    "prostate": ("41216001", "Prostate"),
    "adrenalgland": ("23451007", "Adrenal gland"),
    "duodenum": ("38848004", "Duodenum"),
    "colon": ("71854001", "Colon"),
    "smallbowel": ("30315005", "Small intestine"),
    "smallintestine": ("30315005", "Small intestine"),
}
_LESIONS: dict[str, tuple[str, str]] = {
    "tumor": ("108369006", "Neoplasm"),
    "tumour": ("108369006", "Neoplasm"),
    "lesion": ("52988006", "Lesion"),
}


def name_key(name: str) -> str:
    """A structure name with case, spaces, underscores and hyphens set aside ("Kidney_Left" -> "kidneyleft")."""
    return re.sub(r"[\s_\-]+", "", name).lower()


def known_codes(name: str) -> tuple[Code, Code] | None:
    """``(category, type)`` SNOMED CT codes for a structure name, or None for a name not in the table."""
    key = name_key(name)
    if key in _STRUCTURES:
        value, meaning = _STRUCTURES[key]
        return ANATOMICAL_STRUCTURE, (value, "SCT", meaning)
    if key in _LESIONS:
        value, meaning = _LESIONS[key]
        return ALTERED_STRUCTURE, (value, "SCT", meaning)
    return None
