"""The datasets avbias knows: their class lists and how their media are laid out."""

from __future__ import annotations

from dataclasses import dataclass

# CREMA-D emotion codes in the label order of OGM-GE's data loader, so indices match published code.
CREMAD_EMOTIONS: tuple[str, ...] = ("NEU", "HAP", "SAD", "FEA", "DIS", "ANG")
# CREMA-D's 12 sentence codes (SentenceFilenames.csv); only IEO was recorded at LO/MD/HI intensity.
CREMAD_SENTENCES: tuple[str, ...] = (
    "IEO", "TIE", "IOM", "IWW", "TAI", "MTI", "IWL", "ITH", "DFA", "ITS", "TSI", "WSI",
)
CREMAD_FIRST_ACTOR = 1001


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    classes: tuple[str, ...]
    layout: str          # media layout: 'cremad' = AudioWAV/<id>.wav + VideoFlash/<id>.flv
    synthetic: bool


DATASETS: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in (
        DatasetSpec("cremad", CREMAD_EMOTIONS, "cremad", synthetic=False),
        DatasetSpec("synth_cremad", CREMAD_EMOTIONS, "cremad", synthetic=True),
    )
}


def cremad_label(clip_id: str) -> str:
    """The emotion code of a CREMA-D clip id `ActorID_Sentence_Emotion_Level`."""
    parts = clip_id.split("_")
    if len(parts) != 4 or parts[2] not in CREMAD_EMOTIONS:
        raise ValueError(f"not a CREMA-D clip id: {clip_id!r}")
    return parts[2]
