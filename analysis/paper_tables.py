"""The paper's Tables 1 (patch sampling, mix-back) and 2 (augmentation policies) from a
``paper_ablations`` experiment: val kNN of the COMPLETE trials of each ``variant``, mean ± sd over seeds."""

from __future__ import annotations

import pandas as pd

MISSING = "—"
SEPARATIONS = (25, 75, 125, 200, 300, 400)
TABLE1 = [("patch sampling", "random (default)", "default"), ("patch sampling", "same", "same"),
          *[("patch sampling", f"separation d={d}", f"sep_{d}") for d in SEPARATIONS],
          ("mix-back", "energy-adjusted, α=0.05 (default)", "default"),
          ("mix-back", "unadjusted, α=0.02", "mixback_unadjusted"), ("mix-back", "none", "mixback_none")]
TABLE2 = [("DA policy", "rrc > compression > noise (default)", "default"),
          ("DA policy", "rrc > compression", "da_rrc_compression"),
          ("DA policy", "rrc > specaugment", "da_rrc_specaugment"), ("DA policy", "rrc", "da_rrc"),
          ("DA policy", "specaugment", "da_specaugment"), ("DA policy", "none", "da_none")]


def has_variants(table: pd.DataFrame) -> bool:
    known = {v for *_, v in TABLE1 + TABLE2}
    return "param_variant" in table and bool(known & set(table["param_variant"].dropna()))


def _rows(layout: list[tuple[str, str, str]], table: pd.DataFrame) -> pd.DataFrame:
    done = table[table["status"] == "COMPLETE"]
    stats = done.groupby("param_variant")["last_knn"].agg(mean="mean", sd="std", n="count")
    frame = pd.DataFrame(layout, columns=["group", "setting", "variant"])
    frame = frame.join(stats, on="variant").fillna({"n": 0}).astype({"n": int})
    frame["knn"] = [MISSING if n == 0 else f"{m:.3f} ± {s:.3f}" if n > 1 else f"{m:.3f}"
                    for m, s, n in zip(frame["mean"], frame["sd"], frame["n"])]
    return frame


def paper_tables(table: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """{"table1": ..., "table2": ...} with group, setting, variant, mean, sd, n, knn (text, "—" if none).
    Separation distances beyond the paper's are appended to Table 1 in order."""
    extra = sorted({int(v.removeprefix("sep_")) for v in table["param_variant"].dropna()
                    if v.startswith("sep_") and v.removeprefix("sep_").isdigit()} - set(SEPARATIONS))
    layout1 = TABLE1[:2 + len(SEPARATIONS)] + [("patch sampling", f"separation d={d}", f"sep_{d}")
                                               for d in extra] + TABLE1[2 + len(SEPARATIONS):]
    return {"table1": _rows(layout1, table), "table2": _rows(TABLE2, table)}


def to_markdown(frame: pd.DataFrame) -> str:
    shown = frame[["group", "setting", "knn", "n"]].rename(columns={"knn": "val kNN (mean ± sd over seeds)"})
    return shown.to_markdown(index=False)
