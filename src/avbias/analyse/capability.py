"""Per-class capability of each modality that does not come from our models: CREMA-D's human raters
(crowd votes on the voice alone, the face alone, both), or the synthetic generator's known signal strengths."""

from __future__ import annotations

import gzip
from importlib import resources

import numpy as np
import pandas as pd

from avbias.datasets import CREMAD_EMOTIONS

VOTE_COLUMNS = {"audio": "VoiceVote", "visual": "FaceVote", "audio+visual": "MultiModalVote"}


def human_accuracy(table: pd.DataFrame) -> pd.DataFrame:
    """Per class and modality, the share of clips whose majority vote names the true emotion (a tie of k
    emotions that includes it counts 1/k). table: FileName + the vote columns; the emotion is in the name."""
    truth = table["FileName"].str.split("_").str[2].str[0]          # ANG -> A, ...
    rows = []
    for modality, column in VOTE_COLUMNS.items():
        votes = table[column].fillna("").str.split(":")
        credit = np.array([(t in v) / max(len(v), 1) for t, v in zip(truth, votes, strict=True)])
        for code in CREMAD_EMOTIONS:
            mask = (truth == code[0]).to_numpy()
            rows.append({"class": code, "modality": modality, "accuracy": float(credit[mask].mean())})
    return pd.DataFrame(rows)


def cremad_human_accuracy() -> pd.DataFrame:
    path = resources.files("avbias.acquire") / "reference" / "cremad_summary_table.csv.gz"
    with gzip.open(path, "rt") as fh:
        return human_accuracy(pd.read_csv(fh))
