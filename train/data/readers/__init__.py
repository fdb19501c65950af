"""One module per on-disk data set format. Each has FORMAT, LOOKS_FOR (what detection looks for, shown
when nothing matches), detect(path, forced) -> root or None, and read(name, root) -> DatasetSplits."""

from __future__ import annotations

from types import ModuleType

from train.data.readers import aircraft, cars, cub200, flowers102, imagefolder

# Detection order: the specific layouts first, the generic class-folder tree last.
READERS: dict[str, ModuleType] = {m.FORMAT: m for m in (cub200, cars, aircraft, flowers102, imagefolder)}
FORMATS: tuple[str, ...] = tuple(READERS)
